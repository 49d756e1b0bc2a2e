"""MODEL_CARD.md for a trained model folder, and shipping a run as the package's default model."""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

from . import DEFAULT_MODEL_DIR
from .checkpoint import load_config
from .evaluate import TABLE_END, TABLE_START


def write_card(folder: Path, corpus_record: dict | None, notes: str = "") -> Path:
    cfg = load_config(folder)
    st = json.loads((folder / "train_state.json").read_text()) if (folder / "train_state.json").exists() else {}
    tc = st.get("train_config", {})
    card = folder / "MODEL_CARD.md"
    old = card.read_text() if card.exists() else ""
    table = old[old.index(TABLE_START): old.index(TABLE_END) + len(TABLE_END)] if TABLE_START in old else f"{TABLE_START}\n(not evaluated yet: `hone eval --model {folder} --write-card`)\n{TABLE_END}"
    from .network import Denoiser

    n_params = Denoiser(cfg).num_parameters()
    corpus = ""
    if corpus_record:
        corpus = (f"Python sources from {', '.join(corpus_record['roots'])}: {corpus_record['train']['files']} training files "
                  f"({corpus_record['train']['bytes'] / 1e6:.0f} MB), {corpus_record['heldout']['files']} held-out files "
                  f"(split by file hash); rejected: {json.dumps(corpus_record['rejected'])}.")
    text = f"""# Hone default model

A {n_params / 1e6:.1f}M-parameter bidirectional transformer denoiser (masked diffusion) for Python
fill-in-the-middle. d_model {cfg.d_model}, {cfg.n_layers} layers, {cfg.n_heads} heads, SwiGLU {cfg.d_ff},
vocabulary {cfg.vocab_size} (byte-level BPE), tied head, logits {"shifted (the output at j-1 predicts slot j)" if cfg.shifted else "unshifted"}.

## Data
{corpus or "(corpus record not available)"}

## Training
- route: {tc.get("route", "?")} (AR share of wall time: {tc.get("ar_fraction", "-")}; switch to diffusion at step {st.get("phase_switch_step")})
- steps {st.get("step", "?")}, tokens seen {st.get("tokens_seen", 0) / 1e6:.1f}M, wall time {st.get("hours", 0):.2f} h of a {tc.get("hours", "?")} h schedule
- batch {tc.get("batch")} × {2 + tc.get("prefix_tokens", 0) + tc.get("middle_tokens", 0) + tc.get("suffix_tokens", 0)} tokens (prefix ≤ {tc.get("prefix_tokens")}, canvas ≤ {tc.get("middle_tokens")}, suffix ≤ {tc.get("suffix_tokens")}), AdamW lr {tc.get("lr")}, warmup + cosine, clip {tc.get("clip")}, bf16 autocast
- hardware: {platform.machine()} CPU, {tc.get("threads")} thread(s)
- examples: rest-of-line, whole lines/blocks, line+more, random spans and empty middles; unused canvas
  slots hold the null token; 8% of examples have a canvas shorter than the middle (teaches growth)

![loss curve](loss.png)

## Evaluation (held-out split)
{table}

{notes}
"""
    card.write_text(text)
    return card


def ship(run_model_dir: Path, corpus_dir: Path | None, dest: Path = DEFAULT_MODEL_DIR) -> Path:
    """Copy a run's model folder into the package and (re)write its card."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("model*.safetensors"):
        old.unlink()
    files = [run_model_dir / f for f in ("config.json", "tokenizer.json", "loss.png", "train_state.json", "MODEL_CARD.md")]
    for f in files + sorted(run_model_dir.glob("model*.safetensors")):
        if f.exists():
            shutil.copy2(f, dest / f.name)
    rec = None
    if corpus_dir and (corpus_dir / "corpus.json").exists():
        rec = json.loads((corpus_dir / "corpus.json").read_text())
    write_card(dest, rec)
    return dest
