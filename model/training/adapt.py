"""`hone adapt` and the server's idle adaptation: fine-tune a model on one repository's Python files.

What is trained is what the editor asks for: the spm stream that writes lines (next-token over the surroundings) and
the canvas, on editor-shaped examples where half of the middles are the rest of a line that uses a name another
file of the repository defines (training.repos.cross_file_spots), over as many passes as the minutes allow. Files
held out whole decide: their lines are completed with and without the adaptation, and the result is kept only when
that held-out loss falls.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import torch

from ..adapted import AdaptInfo, install, model_fingerprint
from ..checkpoint import load_model, save_model
from ..drafts import DRAFTS_FILE
from ..layout import Budgets
from .curves import plot_losses
from .data import InfillBatch, Spot, infill_batch
from .heldout import heldout_batches, evaluate_heldout
from .losses import LossModule
from .repos import cross_file_spots
from .trainer import TrainConfig, lr_at, make_optimizers, use_bf16

HELDOUT_EVERY = 10  # one file in this many is held out (chosen by a digest of its path: the same on every run)
HELDOUT_SHARE = 0.25  # ... unless that would hold out more of the text than this
MIN_HELDOUT_LINES = 20  # lines to complete a held-out file must have (tiny files judge nothing)
MIN_LINE_CODE = 8  # a held-out line is completed only if it holds this many non-blank characters
MIN_TRAIN_CHARS = 2_000  # less text than this is not worth adapting to
HELDOUT_BATCHES = 6  # batches of 16 held-out line completions (fewer when the slice is small)
MAX_CHARS = 8_000_000  # a bigger repository is adapted to on a sample of its files (a digest of the path picks them)


class AdaptError(ValueError):
    """The repository cannot be adapted to (too little Python, no held-out lines); the message says why."""


class AdaptConfig(msgspec.Struct, kw_only=True):
    minutes: float = 5.0  # training budget (adapt's clock); the schedule follows it, or max_passes when sooner
    steps: int = 0  # > 0: a step budget instead (comparisons on a busy machine: as many steps as `minutes` make idle)
    max_passes: float = 20.0  # a small repository is read at most this many times, in fewer minutes than the budget
    # (sqlparse, 33K tokens to train on, 115 steps = 18 passes: its cross-file lines' ES +0.048; 230 steps = 36 passes
    # overfit: held-out loss up, not kept); 0: no limit
    lr: float = 3e-4  # Muon's peak (AdamW for embeddings and norms at the same rate); 7e-4 overfit in 75 steps
    batch: int = 16
    micro_batch: int = 4  # rows per forward/backward (gradients accumulate): peak RSS 2.4 GB at 16, 1.1 GB at 4, 0.9 at 2
    warmup_steps: int = 8
    decay_share: float = 0.5  # the last half of the budget decays the rate linearly to 10 %
    cross_share: float = 0.5  # examples that finish a line using another file's name
    threads: int = 2
    seed: int = 0
    precision: str = "auto"  # auto: bf16 autocast where the CPU computes bf16 natively (more steps), else fp32


class Split(msgspec.Struct):
    train: dict[str, str]  # path -> the file without its held-out blocks
    heldout: dict[str, str]  # path -> the whole file, for files with held-out lines
    spots: dict[str, list[tuple[int, int]]]  # path -> held-out lines: (first cursor offset, last cursor offset)


def sample_files(files: dict[str, str], max_chars: int = MAX_CHARS) -> dict[str, str]:
    """All the files, or, past `max_chars`, a fixed sample of them that fits (minutes of training see a few MB)."""
    if sum(map(len, files.values())) <= max_chars:
        return files
    out, total = {}, 0
    for path in sorted(files, key=lambda p: hashlib.sha1(p.encode()).hexdigest()):
        if total + len(files[path]) <= max_chars:
            out[path] = files[path]
            total += len(files[path])
    return out


def _digest(path: str) -> int:
    return int(hashlib.sha1(path.encode()).hexdigest(), 16)


def _line_spots(text: str) -> list[tuple[int, int]]:
    """The lines worth completing: (first cursor offset, last cursor offset) of each."""
    spots, offset = [], 0
    for line in text.split("\n"):
        code = line.strip()
        if len(code) >= MIN_LINE_CODE and not code.startswith("#"):
            indent = len(line) - len(line.lstrip())
            spots.append((offset + indent + 2, offset + len(line.rstrip()) - 4))
        offset += len(line) + 1
    return spots


def split(files: dict[str, str]) -> Split:
    """Hold out one file in HELDOUT_EVERY whole (a digest of its path picks them, among files with at least
    MIN_HELDOUT_LINES lines to complete; at least one, at most HELDOUT_SHARE of the text, never every file): the
    adaptation never reads them, and completing their lines decides. (Held-out lines inside trained files would not
    do: the stream's next-token loss over their surroundings falls by memorising the file, not the repository.)"""
    spots = {p: _line_spots(t) for p, t in files.items()}
    paths = sorted((p for p in files if len(spots[p]) >= MIN_HELDOUT_LINES), key=_digest)
    budget = HELDOUT_SHARE * sum(map(len, files.values()))
    held: list[str] = []
    for path in paths:
        if _digest(path) % HELDOUT_EVERY == 0 and len(held) + 1 < len(files) and \
                sum(len(files[p]) for p in held) + len(files[path]) <= budget:
            held.append(path)
    if not held and len(files) > 1:  # none drawn: the smallest file with lines enough, else the one with most lines
        fits = sorted(paths, key=lambda p: len(files[p]))
        held = fits[:1] if fits else [max(files, key=lambda p: len(spots[p]))]
    held_spots = {p: spots[p] for p in held if spots[p]}
    return Split({p: t for p, t in files.items() if p not in held}, {p: files[p] for p in held_spots}, held_spots)


def cpu_clock(threads: int) -> Callable[[], float]:
    """Seconds of this process' CPU time per thread: a clock that stands still while the process is stopped."""
    return lambda: time.process_time() / max(1, threads)


def _rows(batch: InfillBatch, lo: int, hi: int) -> InfillBatch:
    """Rows lo..hi of a batch."""
    return InfillBatch(batch.ids[lo:hi], batch.canvas[lo:hi], batch.valid[lo:hi], batch.start[lo:hi], batch.width,
                       batch.cross[lo:hi])


def _quantize(model: torch.nn.Module) -> None:
    """Round the weights to bf16 as they will be saved, so the held-out figures are those of the saved model."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.bfloat16().float())


def _finite(held: dict[str, float]) -> dict[str, float | None]:
    """Held-out losses as JSON keeps them: a diverged one (nan, inf) becomes None."""
    return {k: v if math.isfinite(v) else None for k, v in held.items()}


def _score(held: dict[str, float | None]) -> float:
    values = list(held.values())
    return math.inf if None in values else sum(values) / max(1, len(values))


def adapt(files: dict[str, str], base: Path, cfg: AdaptConfig = AdaptConfig(), *, root: str = "",
          out: Path | None = None, progress: Callable[[dict], None] = lambda rec: None,
          clock: Callable[[], float] = time.perf_counter) -> AdaptInfo:
    """Fine-tune the model in `base` on `files` (path -> text) for cfg.minutes. The adapted model is written to `out`
    when given, else installed as `root`'s per-workspace model (model.adapted), only if its held-out loss fell;
    `progress` gets a record per step and the held-out figures. `clock` measures the minutes (a process that is
    stopped from outside, as the server's idle adaptation is, counts its CPU time: cpu_clock)."""
    torch.set_num_threads(cfg.threads)
    model, tok = load_model(base, "cpu")
    model.float()
    mc = model.cfg
    budgets = Budgets(mc.prefix_tokens, mc.middle_tokens, mc.suffix_tokens, 0)
    parts = split(sample_files(files))
    texts = [t for t in parts.train.values() if t.strip()]
    if len(files) < 2:
        raise AdaptError("one Python file: nothing to hold out to judge an adaptation by (at least two are needed)")
    if sum(map(len, texts)) < MIN_TRAIN_CHARS:
        raise AdaptError(f"too little Python to adapt to ({sum(map(len, texts))} characters, at least {MIN_TRAIN_CHARS})")
    if not parts.spots:
        raise AdaptError("no held-out lines to judge an adaptation by")
    held_spots = {parts.heldout[p]: s for p, s in parts.spots.items()}
    n_held = sum(map(len, held_spots.values()))
    held = heldout_batches(tok, list(held_spots), budgets, mc.layout, n=max(1, min(HELDOUT_BATCHES, n_held // 16)),
                           spots=held_spots)
    before = _finite(evaluate_heldout(model, held, tok.mask_id, "cpu"))
    progress({"event": "before", **before})
    train_spots: dict[str, list[Spot]] = {parts.train[p]: s for p, s in cross_file_spots(parts.train).items()}
    loss_fn = LossModule(model, tok.pad_id, tok.mask_id)
    tcfg = TrainConfig(route="spm", optimizer="muon", lr=cfg.lr, schedule="wsd", decay_share=cfg.decay_share,
                       warmup_steps=cfg.warmup_steps, hours=cfg.minutes / 60, batch=cfg.batch)
    bf16 = use_bf16(cfg.precision, torch.device("cpu"))
    opts = make_optimizers(model, tcfg, bf16)
    rng, gen = random.Random(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    budget = max(1e-9, cfg.minutes * 60)
    text_tokens = sum(map(len, tok.encode_batch(texts)))
    per_pass = max(1.0, text_tokens / (cfg.batch * (mc.prefix_tokens + mc.middle_tokens + mc.suffix_tokens)))  # steps
    most = math.ceil(cfg.max_passes * per_pass) if cfg.max_passes > 0 else math.inf
    elapsed, step, tokens, log = 0.0, 0, 0, []
    done = (lambda: step / cfg.steps) if cfg.steps > 0 else (lambda: max(elapsed / budget, step / most))
    model.train()
    while done() < 1.0:
        t0 = clock()
        lr = lr_at(tcfg, step, done())
        for opt in opts:
            for g in opt.param_groups:
                g["lr"] = lr
        batch = infill_batch(tok, texts, rng, budgets, cfg.batch, mc.layout, spots=train_spots, cross_share=cfg.cross_share)
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        parts = [0.0, 0.0, 0.0]  # loss, canvas CE, next-token CE, averaged over the micro-batches
        for lo in range(0, cfg.batch, cfg.micro_batch):
            part = _rows(batch, lo, lo + cfg.micro_batch)
            share = part.ids.shape[0] / cfg.batch
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                res = loss_fn(batch=part, gen=gen)
            (res.loss * share).backward()
            for i, v in enumerate(res[:3]):
                parts[i] += share * (v.item() if v is not None else math.nan)
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.clip)
        for opt in opts:
            opt.step()
        step += 1
        tokens += batch.ids.numel()
        elapsed += clock() - t0
        rec = {"step": step, "elapsed": elapsed, "tokens": tokens, "phase": "diffusion", "loss": parts[0], "lr": lr,
               "canvas_ce": parts[1]}
        if not math.isnan(parts[2]):
            rec["next_ce"] = parts[2]
        log.append(rec)
        progress(rec)
    model.eval()
    _quantize(model)
    after = _finite(evaluate_heldout(model, held, tok.mask_id, "cpu"))
    kept = step > 0 and _score(after) < _score(before)
    progress({"event": "after", "kept": kept, **after})
    info = AdaptInfo(root=root, base=str(base), base_fingerprint=model_fingerprint(base), kept=kept, before=before,
                     after=after, steps=step, tokens=tokens, minutes=elapsed / 60, train_files=len(texts),
                     train_chars=sum(map(len, texts)), passes=step / per_pass, heldout_lines=n_held,
                     finished=time.time(), precision="bf16 autocast" if bf16 else "fp32")
    log += [{"step": 0, "tokens": 0, **before}, {"step": step, "tokens": tokens, **after}]
    with tempfile.TemporaryDirectory(prefix="hone-adapt-") as tmp:
        staging = Path(tmp) / "model"
        if kept:
            _write_model(staging, model, tok, base, log)
        if out is not None:
            if kept:
                if out.exists():
                    shutil.rmtree(out)
                shutil.move(str(staging), out)
                (out / "adapt.json").write_bytes(msgspec.json.format(msgspec.json.encode(info), indent=2))
        else:
            install(staging, root, info)
    return info


def _write_model(folder: Path, model, tok, base: Path, log: list[dict]) -> None:
    """A plain model folder: weights in bf16 (as the default ships), the base's draft table (same tokenizer), the
    loss log and its picture."""
    save_model(folder, model, tok, dtype=torch.bfloat16)
    if (base / DRAFTS_FILE).is_file():
        shutil.copy2(base / DRAFTS_FILE, folder / DRAFTS_FILE)
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    plot_losses(folder / "log.jsonl", folder / "loss.png")
