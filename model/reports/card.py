"""MODEL_CARD.md for a trained model folder, and shipping a run as the package's default model."""

from __future__ import annotations

import json
import platform
import re
import shutil
from pathlib import Path

from .. import DEFAULT_MODEL_DIR
from ..checkpoint import load_config
from ..drafts import DRAFTS_FILE
from ..training.data import Budgets

TABLE_START, TABLE_END = "<!-- eval:start -->", "<!-- eval:end -->"  # the eval table `hone eval --write-card` keeps fresh
ROUTES_START, ROUTES_END = "<!-- routes:start -->", "<!-- routes:end -->"  # the recipe comparison of `hone routes`


def _block(text: str, start: str, end: str) -> str | None:
    return text[text.index(start): text.index(end) + len(end)] if start in text and end in text else None


def put_block(card: Path, start: str, end: str, body: str, heading: str) -> None:
    """Replace the marked block of a MODEL_CARD.md, or append it under `heading`."""
    block = f"{start}\n{body}\n{end}"
    text = card.read_text() if card.exists() else "# Model card\n"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text += f"\n## {heading}\n\n{block}\n"
    card.write_text(text)


def _unevaluated(folder: Path) -> str:
    return f"{TABLE_START}\n(not evaluated yet: `hone eval --model {folder} --write-card`)\n{TABLE_END}"


def _segments(st: dict, tc: dict) -> str:
    segs = st.get("segments") or [{"machine": platform.machine() + " CPU", "threads": tc.get("threads"),
                                   "precision": tc.get("precision", "?"),
                                   "processes": 1, "from_step": 0, "to_step": st.get("step"), "minutes": st.get("hours", 0) * 60}]
    return "\n".join(f"  - steps {g['from_step']}–{g['to_step']} ({g['minutes']:.0f} min): {g['machine']}, {g['precision']}, "
                     f"{g['threads']} thread(s) × {g['processes']} process(es)" + _speed(g) for g in segs)


def _speed(seg: dict) -> str:
    return f", {seg['tokens'] / (seg['minutes'] * 60):.0f} tokens/s" if seg.get("tokens") and seg.get("minutes") else ""


LAYOUT_TEXT = {
    "infill": "Context tokens (prefix, suffix) attend to each other; canvas slots attend to everything.",
    "spm": "The context is one causal stream, suffix then prefix ([BOS] suffix [EOS?] [BOS] prefix), trained with "
           "next-token loss at every position; the canvas is a bidirectional block after it (masked-diffusion loss), "
           "whose first slot is read off the last context token. The same network decodes autoregressively "
           "through its context stream (rule `ar`): it is its own AR twin.",
}


def _route(st: dict, tc: dict) -> str:
    route = tc.get("route", "?")
    if route == "ar-diffusion":
        return f"ar-diffusion (AR share of the schedule: {tc.get('ar_fraction')}; switch to diffusion at step {st.get('phase_switch_step')})"
    return route


def _optimizer(tc: dict) -> str:
    return "Muon (block matrices) + AdamW (embeddings, norms)" if tc.get("optimizer") == "muon" else "AdamW"


def _supervised(st: dict) -> str:
    sup, tok = st.get("supervised"), st.get("tokens_seen")
    return f" ({sup / 1e6:.1f}M positions carried a loss, {sup / max(1, tok):.0%})" if sup and tok else ""


def _schedule(tc: dict) -> str:
    if tc.get("tokens"):
        return f" (a {tc['tokens'] / 1e6:.1f}M-token schedule)"
    return f" of a {tc['hours']:.2f} h schedule" if isinstance(tc.get("hours"), (int, float)) else ""


def _decay(tc: dict) -> str:
    if tc.get("schedule") == "wsd":
        return f"constant, then a linear decay over the last {tc.get('decay_share', 0):.0%} of the schedule (wsd)"
    return "cosine"


def write_card(folder: Path, corpus_record: dict | None, eval_table: str | None = None) -> Path:
    """(Re)write MODEL_CARD.md from config, train_state.json and the corpus record, keeping the route
    comparison and any '## Notes' section already in the card, and its eval table unless one is given."""
    from ..network import Denoiser

    cfg = load_config(folder)
    st = json.loads((folder / "train_state.json").read_text()) if (folder / "train_state.json").exists() else {}
    tc = st.get("train_config", {})
    card = folder / "MODEL_CARD.md"
    old = card.read_text() if card.exists() else ""
    table = eval_table or _block(old, TABLE_START, TABLE_END) or _unevaluated(folder)
    routes = _block(old, ROUTES_START, ROUTES_END) or f"{ROUTES_START}\n(not compared yet: `scripts/compare_recipes.sh`)\n{ROUTES_END}"
    notes = old[old.index("## Notes"):].rstrip() if "## Notes" in old else ""
    n_params = Denoiser(cfg).num_parameters()
    corpus = "(corpus record not available)"
    if corpus_record:
        tr, he = corpus_record["train"], corpus_record["heldout"]
        tokens = f", {tr['tokens'] / 1e6:.1f}M tokens" if "tokens" in tr else ""
        held_tokens = f", {he['tokens'] / 1e6:.2f}M tokens" if "tokens" in he else ""
        corpus = (f"Python sources from {', '.join(corpus_record['roots'])}: {tr['files']} training files "
                  f"({tr['bytes'] / 1e6:.0f} MB{tokens}), {he['files']} held-out files ({he['bytes'] / 1e6:.1f} MB{held_tokens}; "
                  f"split by file hash); rejected: {json.dumps(corpus_record['rejected'])}.")
    ctx = tc.get("context_tokens", 0)
    seq = Budgets(tc.get("prefix_tokens", 0), tc.get("middle_tokens", 0), tc.get("suffix_tokens", 0), ctx).seq_len
    with_ctx = (f", cross-file context ≤ {ctx} in {tc.get('context_share', 0):.0%} of the batches (their package's other "
                f"files, retrieved as the server retrieves a workspace's)") if ctx else ""
    text = f"""# Hone default model

A {n_params / 1e6:.1f}M-parameter transformer denoiser (masked diffusion) for Python fill-in-the-middle.
d_model {cfg.d_model}, {cfg.n_layers} layers, {cfg.n_heads} heads, SwiGLU {cfg.d_ff}, vocabulary {cfg.vocab_size} (byte-level BPE),
tied head, logits {"shifted (the output at j-1 predicts slot j)" if cfg.shifted else "unshifted"}. {LAYOUT_TEXT.get(cfg.layout, "")}

## Data
{corpus}

## Training
- route: {_route(st, tc)}
- steps {st.get("step", "?")}, tokens seen {st.get("tokens_seen", 0) / 1e6:.1f}M{_supervised(st)}, training time {st.get("hours", 0):.2f} h{_schedule(tc)}
- batch {tc.get("batch")} × {seq} tokens (prefix ≤ {tc.get("prefix_tokens")}, canvas ≤ {tc.get("middle_tokens")}, suffix ≤ {tc.get("suffix_tokens")}{with_ctx}), {_optimizer(tc)} lr {tc.get("lr")}, warmup + {_decay(tc)}, clip {tc.get("clip")}; canvas masks {tc.get("mask_schedule", "uniform")}{" (complementary pairs)" if tc.get("complementary") else ""}
- hardware:
{_segments(st, tc)}
- examples: rest-of-line, whole lines/blocks, line+more, random spans and empty middles; unused canvas
  slots hold the null token; half the canvases are sized like the engine's (multiples of 8); 8% are
  shorter than their middle (teaches growth)

![loss curve](loss.png)

## Evaluation (held-out split)
{table}

## Recipe comparison (equal token budget)
{routes}

{notes}
"""
    card.write_text(text.rstrip() + "\n")
    return card


def ship(run_model_dir: Path, corpus_dir: Path | None, dest: Path = DEFAULT_MODEL_DIR) -> Path:
    """Copy a run's model folder into the package and rewrite its card: the eval table comes from the run's
    card (or is marked missing), the route comparison and the notes stay from the shipped card."""

    dest.mkdir(parents=True, exist_ok=True)
    run_card = run_model_dir / "MODEL_CARD.md"
    table = (_block(run_card.read_text(), TABLE_START, TABLE_END) if run_card.exists() else None) or _unevaluated(dest)
    for f in dest.glob("model*.safetensors"):
        f.unlink()
    old_tok, new_tok = dest / "tokenizer.json", run_model_dir / "tokenizer.json"
    if (dest / DRAFTS_FILE).exists() and not (old_tok.exists() and new_tok.exists() and old_tok.read_bytes() == new_tok.read_bytes()):
        (dest / DRAFTS_FILE).unlink()  # n-gram drafts are tied to the tokenizer: a new one needs `hone drafts`
    files = [run_model_dir / f for f in ("config.json", "tokenizer.json", "loss.png", "train_state.json", DRAFTS_FILE)]
    for f in files + sorted(run_model_dir.glob("model*.safetensors")):
        if f.exists():
            shutil.copy2(f, dest / f.name)
    rec = None
    if corpus_dir and (corpus_dir / "corpus.json").exists():
        rec = json.loads((corpus_dir / "corpus.json").read_text())
    write_card(dest, rec, eval_table=table)
    return dest
