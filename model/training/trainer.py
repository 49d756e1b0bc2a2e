"""`hone train`: masked-diffusion training on editor-shaped infill examples. Routes:
- spm: every position supervised in one forward: the context as a causal suffix-then-prefix stream
  with next-token loss, the canvas as a bidirectional block after it with the masked-diffusion loss;
- ar-diffusion: a causal next-token phase, then canvas-only masked diffusion with shifted logits
  (the Dream/DiffuCoder recipe);
- diffusion: canvas-only masked diffusion from scratch (or, with --init-from, in the model's own layout).
Time- or token-based schedule, resumable."""

from __future__ import annotations

import ctypes
import dataclasses
import json
import math
import os
import random
import signal
import time
from pathlib import Path

import msgspec
import torch
from tqdm import tqdm

from ..checkpoint import save_model
from ..config import preset
from ..layout import Budgets
from ..machine import cpuinfo as _cpuinfo
from ..network import Denoiser
from ..tokenizer import HoneTokenizer
from .curves import plot_losses
from .data import MASK_SCHEDULES, ar_batch, infill_batch
from .heldout import evaluate_heldout, heldout_batches
from .losses import LossModule

ROUTES = ("diffusion", "ar-diffusion", "spm")
SCHEDULES = ("cosine", "wsd")
PRECISIONS = ("auto", "bf16", "fp32")
OPTIMIZERS = ("adamw", "muon")


class TrainConfig(msgspec.Struct, kw_only=True):
    route: str = "spm"  # spm | ar-diffusion (AR phase, then canvas-only masked diffusion) | diffusion
    ar_fraction: float = 0.3  # share of the wall-clock budget spent in the AR phase
    model_preset: str = "small"
    hours: float = 2.5  # wall-clock budget; the LR schedule follows elapsed time
    tokens: int = 0  # > 0: a token budget instead (the schedule follows tokens seen): equal-compute comparisons
    batch: int = 16
    lr: float = 1.5e-3
    optimizer: str = "adamw"  # adamw | muon (Muon for the blocks' weight matrices, AdamW for embeddings and norms)
    mask_schedule: str = "uniform"  # masking rates: uniform (0.02, 1] | clipped [0.2, 0.8]
    complementary: bool = False  # rows in pairs: one example twice, the second masked where the first is not
    draft_share: float = 0.0  # spm: this share of the rows in the drafting regime (a fully masked canvas right after
    # the stream, distilled from the stream's next-token predictions: data.draft_example, losses.draft_distillation)
    draft_weight: float = 1.0  # the distillation term's weight in the loss
    min_lr_ratio: float = 0.1
    schedule: str = "cosine"  # cosine | wsd: warmup, constant, then a linear decay over the last decay_share of the
    # budget. A run spanning sessions stays at its peak; a copy of it cools down to ship (Trainer.cool_down)
    decay_share: float = 0.2
    warmup_steps: int = 200
    weight_decay: float = 0.1
    clip: float = 1.0
    prefix_tokens: int = Budgets.prefix
    middle_tokens: int = Budgets.middle
    suffix_tokens: int = Budgets.suffix
    context_tokens: int = Budgets.context  # cross-file context kept per example (model.layout); 0: none
    context_share: float = 0.5  # with context_tokens: the share of examples that get their package's context
    eval_every_s: float = 300.0  # also checkpoints then
    threads: int = 1
    seed: int = 0
    precision: str = "auto"  # auto: bf16 autocast where the hardware computes bf16 natively, else fp32


TRAIN_PRESETS = {
    "cpu": dict(model_preset="small", hours=2.5, batch=16, threads=2),
    "gpu": dict(model_preset="base", hours=8 / 60, batch=128, threads=8, eval_every_s=120.0),
    "smoke": dict(model_preset="tiny", hours=1 / 60, batch=4, eval_every_s=30.0, warmup_steps=5),
    # continue a model (--init-from) on your own code: its network and tokenizer, diffusion only
    "finetune": dict(route="diffusion", hours=0.5, batch=16, threads=2, lr=3e-4, warmup_steps=50),
}


def native_bf16(device: torch.device) -> bool:
    """CUDA with bf16 support, a CPU with AMX, or one with AVX512-BF16 where bf16 matmuls measure faster
    (emulated bf16 was 2.6x slower than fp32; without AMX, AVX512-BF16 helps on some CPUs and not on others:
    a Xeon whose AMX the hypervisor hides ran bf16 matmuls at 0.6x of fp32 and trained at 0.75x)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    flags = _cpuinfo()
    if "amx_bf16" in flags:
        return True
    return "avx512_bf16" in flags and bf16_speedup() >= 1.15


def bf16_speedup(rows: int = 2048, d: int = 320, ff: int = 864, reps: int = 5) -> float:
    """How much faster a training-shaped matmul runs in bf16 than in fp32 on this CPU (~0.1 s)."""
    a, b = torch.randn(rows, d), torch.randn(d, ff)

    def best(x, y):
        x @ y  # warm-up: oneDNN picks its kernel on the first call
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - t)
        return min(times)

    return best(a, b) / best(a.bfloat16(), b.bfloat16())


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks instead of handing the large ones back to the OS: otherwise each CPU step
    faults its activations and logits in afresh (~170k page faults, 0.4 s of system time per step on a 2-core
    Xeon; ~10% of the step). Returns whether the allocator took it (False off glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
    settings = ((m_mmap_max, 0), (m_trim_threshold, 2**31 - 1), (m_top_pad, 512 << 20))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or platform.machine()


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    return precision == "bf16" or (precision == "auto" and native_bf16(device))


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    warm = min(1.0, (step + 1) / cfg.warmup_steps)
    if cfg.schedule == "wsd":
        decay = max(1e-9, cfg.decay_share)
        frac = min(1.0, max(0.0, (1.0 - progress) / decay))  # 1 until the decay starts, then linearly to 0
    else:
        frac = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * warm * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * frac)


class Dist:
    """torchrun's process group (NCCL on GPUs, gloo on CPUs), or a single process."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1:
            import torch.distributed as dist

            if torch.cuda.is_available():
                torch.cuda.set_device(self.local)
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self) -> torch.device:
        return torch.device(f"cuda:{self.local}" if torch.cuda.is_available() else "cpu")

    def agree(self, dt: float, stop: bool) -> tuple[float, bool]:
        """Every rank takes the slowest step time and stops when any rank stops (no rank left waiting)."""
        if self.world == 1:
            return dt, stop
        import torch.distributed as dist

        dev = self.device()
        x = torch.tensor([dt, float(stop)], dtype=torch.float64, device=dev)
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
        return float(x[0]), bool(x[1])

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


class Trainer:
    def __init__(self, cfg: TrainConfig, corpus: Path, tokenizer: Path, run_dir: Path, init_from: Path | None = None):
        if cfg.route not in ROUTES:
            raise ValueError(f"unknown route {cfg.route!r}; choose one of {list(ROUTES)}")
        if cfg.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose one of {list(OPTIMIZERS)}")
        if cfg.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {cfg.schedule!r}; choose one of {list(SCHEDULES)}")
        if cfg.mask_schedule not in MASK_SCHEDULES:
            raise ValueError(f"unknown mask schedule {cfg.mask_schedule!r}; choose one of {list(MASK_SCHEDULES)}")
        if init_from is not None and cfg.route == "ar-diffusion":
            raise ValueError("fine-tuning (--init-from) has no AR phase: use route 'diffusion' (the model's own "
                             "layout) or 'spm' (convert a shifted model to the spm layout)")
        self.cfg, self.run_dir = cfg, run_dir
        self.dist = Dist()
        run_dir.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(cfg.threads)
        self.device = self.dist.device()
        if self.device.type == "cpu":
            keep_freed_memory()
        self.bf16 = use_bf16(cfg.precision, self.device)
        self.budgets = Budgets(cfg.prefix_tokens, cfg.middle_tokens, cfg.suffix_tokens, cfg.context_tokens)
        records, self.skipped = self._load(corpus / "train.jsonl")
        self.texts = [text for _, text in records]
        held, _ = self._load(corpus / "heldout.jsonl")
        self.held = [text for _, text in held]
        self.repos, self._held_contexts, self._held_spots = None, None, None
        if cfg.context_tokens > 0:  # packages' other files give context, as a workspace does in the editor
            from .repos import RepoContexts  # the workspace index: only for runs with context

            roots = json.loads((corpus / "corpus.json").read_text()).get("roots", []) if (corpus / "corpus.json").is_file() else []
            self.repos = RepoContexts(records, cfg.context_share, roots, cfg.seed)
            self._held_contexts, self._held_spots = self.repos.fixed(held)
        torch.manual_seed(cfg.seed)
        if init_from is not None:  # fine-tune: that model's network, weights and tokenizer
            from ..checkpoint import load_model

            self.model, self.tok = load_model(init_from, self.device)
            self.model.float()
            if cfg.route == "spm":
                self.model.cfg.layout = "spm"
                self.model.cfg.validate()  # an unshifted model cannot be read the spm way
        else:
            self.tok = t = HoneTokenizer.from_file(tokenizer)
            mcfg = preset(cfg.model_preset, vocab_size=t.vocab_size, pad_id=t.pad_id, bos_id=t.bos_id, eos_id=t.eos_id,
                          mask_id=t.mask_id, null_id=t.null_id, shifted=cfg.route != "diffusion",
                          layout="spm" if cfg.route == "spm" else "infill", max_seq_len=max(1024, self.budgets.seq_len))
            self.model = Denoiser(mcfg).to(self.device)
        mc = self.model.cfg  # what it is trained with travels with it
        mc.prefix_tokens, mc.middle_tokens, mc.suffix_tokens = cfg.prefix_tokens, cfg.middle_tokens, cfg.suffix_tokens
        mc.context_tokens = cfg.context_tokens
        self.loss_fn: torch.nn.Module = LossModule(self.model, self.tok.pad_id, self.tok.mask_id, cfg.mask_schedule,
                                                   cfg.complementary, cfg.draft_weight)
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.loss_fn = DistributedDataParallel(self.loss_fn, device_ids=[self.dist.local] if self.device.type == "cuda" else None)
        self.opts = make_optimizers(self.model, cfg, self.bf16)
        self.step, self.elapsed, self.tokens_seen, self.phase_switch_step = 0, 0.0, 0, None
        self.supervised = 0  # positions that carried a loss, all steps
        self.segments: list[dict] = []  # one per run() of this schedule: where it ran, how, which steps
        seed = cfg.seed + 1000 * self.dist.rank  # each rank draws its own examples
        self.rng, self.gen = random.Random(seed), torch.Generator().manual_seed(seed)
        self.log_path = run_dir / "log.jsonl"
        self._resume()
        self._held_batches = self._make_held() if self.dist.main else {}  # only the main process evaluates

    def _load(self, path: Path) -> tuple[list[tuple[str, str]], int]:
        """(path, text) records of a corpus split and how many were skipped."""
        records, skipped = [], 0
        with open(path, encoding="utf-8", errors="strict") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    text = rec["text"]
                    text.encode("utf-8")  # lone surrogates would break the tokenizer
                except (ValueError, KeyError, UnicodeError):
                    skipped += 1
                    continue
                records.append((str(rec.get("path", "")), text))
        return records, skipped

    def _make_held(self):
        """The held-out batches without context (the same as every earlier run's) and, when the run trains with
        context, the same examples with their packages' context."""
        plain = dataclasses.replace(self.budgets, context=0)
        out = {"": heldout_batches(self.tok, self.held, plain, self.model.cfg.layout)}
        if self._held_contexts:
            out["ctx_"] = heldout_batches(self.tok, self.held, self.budgets, self.model.cfg.layout, contexts=self._held_contexts)
        if self.model.cfg.layout == "spm":  # the drafting regime: the canvas against the stream (draft_kl, draft_agree)
            out["draft_"] = heldout_batches(self.tok, self.held, plain, "spm", draft_share=1.0)
        if self._held_spots:  # lines that use another file's name (the repository-level cases), without and with context
            cross = list(self._held_spots)
            out["xf_"] = heldout_batches(self.tok, cross, plain, self.model.cfg.layout, spots=self._held_spots)
            out["xfctx_"] = heldout_batches(self.tok, cross, self.budgets, self.model.cfg.layout,
                                            contexts=self._held_contexts, spots=self._held_spots)
        return out

    def cool_down(self, hours: float) -> None:
        """End the schedule `hours` from where the run stands, the learning rate decaying linearly over them
        (run this on a copy of a wsd run folder to get weights worth shipping; the original run goes on)."""
        self.cfg.schedule, self.cfg.tokens = "wsd", 0
        self.cfg.hours = self.elapsed / 3600 + hours
        self.cfg.decay_share = hours / self.cfg.hours

    @property
    def progress(self) -> float:
        if self.cfg.tokens > 0:
            return self.tokens_seen / self.cfg.tokens
        return self.elapsed / (self.cfg.hours * 3600)

    def in_ar_phase(self) -> bool:
        return self.cfg.route == "ar-diffusion" and self.progress < self.cfg.ar_fraction

    def evaluate(self) -> dict:
        out = {}
        with self._autocast():
            for name, batches in self._held_batches.items():
                res = evaluate_heldout(self.model, batches, self.tok.mask_id, self.device)
                if name == "draft_":  # heldout_draft_kl, heldout_draft_agree (its CEs measure another regime)
                    out |= {k: v for k, v in res.items() if k.startswith("heldout_draft")}
                    continue
                out |= {k.replace("heldout_", "heldout_" + name): v for k, v in res.items()}
        return out

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _resume(self):
        state_path = self.run_dir / "state.pt"
        if not state_path.exists():
            return
        st = torch.load(state_path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(st["model"])
        opt_states = st["opt"] if isinstance(st["opt"], list) else [st["opt"]]  # states before Muon: one AdamW
        for opt, sd in zip(self.opts, opt_states, strict=True):
            opt.load_state_dict(sd)
        self.step, self.elapsed, self.tokens_seen = st["step"], st["elapsed"], st["tokens_seen"]
        self.supervised = st.get("supervised", 0)
        self.phase_switch_step = st.get("phase_switch_step")
        self.segments = st.get("segments", [])
        if self.dist.main:  # other ranks keep their own streams
            self.rng.setstate(st["py_rng"])
            self.gen.set_state(st["torch_rng"])
        print(f"resumed {state_path} at step {self.step}, {self.elapsed / 60:.1f} min, {self.tokens_seen / 1e6:.2f}M tokens")

    def save(self, export: bool = True):
        if not self.dist.main:
            return
        opts = [o.state_dict() for o in self.opts]
        for opt in opts:  # bf16 moments halve the file (loading casts them back to fp32); copies, not the live state
            opt["state"] = {i: {k: v.to(torch.bfloat16) if k in MOMENTS else v for k, v in slot.items()}
                            for i, slot in opt["state"].items()}
        st = {"model": self.model.state_dict(), "opt": opts, "step": self.step, "elapsed": self.elapsed,
              "tokens_seen": self.tokens_seen, "supervised": self.supervised, "phase_switch_step": self.phase_switch_step,
              "segments": self.segments, "py_rng": self.rng.getstate(), "torch_rng": self.gen.get_state(), "train_config": msgspec.to_builtins(self.cfg)}
        tmp = self.run_dir / "state.pt.tmp"
        torch.save(st, tmp)
        tmp.replace(self.run_dir / "state.pt")  # atomic: a kill mid-save keeps the previous checkpoint
        if export:
            save_model(self.run_dir / "model", self.model, self.tok, dtype=torch.bfloat16)
            (self.run_dir / "model" / "train_state.json").write_text(json.dumps(
                {"step": self.step, "hours": self.elapsed / 3600, "tokens_seen": self.tokens_seen, "supervised": self.supervised,
                 "phase_switch_step": self.phase_switch_step, "train_config": msgspec.to_builtins(self.cfg),
                 "segments": self.segments,
                 "corpus_files": len(self.texts), "skipped_records": self.skipped}, indent=2))
            plot_losses(self.log_path, self.run_dir / "model" / "loss.png")

    def log(self, rec: dict):
        if not self.dist.main:
            return
        with open(self.log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def run(self, steps: int | None = None):
        """Train to the end of the schedule (or `steps` more steps), checkpointing on the way and at the end."""
        cfg = self.cfg
        stop_at = None if steps is None else self.step + steps
        stop = {"flag": False}

        def on_signal(signum, frame):
            stop["flag"] = True  # finish the step, checkpoint, exit

        old = [signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)]
        self._announce()
        seg = self._new_segment()
        seg_start, seg_tokens = self.elapsed, self.tokens_seen
        by_tokens = cfg.tokens > 0
        done = (lambda: self.tokens_seen) if by_tokens else (lambda: int(self.elapsed))
        bar = tqdm(total=cfg.tokens if by_tokens else int(cfg.hours * 3600), initial=done(),
                   unit="tok" if by_tokens else "s", unit_scale=by_tokens, desc="train", disable=not self.dist.main)
        last_eval = self.elapsed
        ema = typical = None  # typical: the moving mean of a step's seconds
        self.model.train()
        try:
            while self.progress < 1.0:
                t0 = time.perf_counter()
                lr, ar, losses = self._step()
                lv = losses.loss.item()
                dt, stopping = self.dist.agree(step_seconds(time.perf_counter() - t0, typical),
                                               stop["flag"] or self.step == stop_at)
                typical = dt if typical is None else 0.9 * typical + 0.1 * dt
                self.elapsed += dt
                seg["to_step"], seg["minutes"] = self.step, (self.elapsed - seg_start) / 60
                seg["tokens"] = self.tokens_seen - seg_tokens
                ema = lv if ema is None else 0.95 * ema + 0.05 * lv
                bar.update(done() - bar.n)
                bar.set_postfix(step=self.step, loss=f"{ema:.3f}", phase="ar" if ar else "diff", lr=f"{lr:.1e}")
                if self.step % 20 == 0:
                    rec = {"step": self.step, "elapsed": self.elapsed, "tokens": self.tokens_seen, "supervised": self.supervised,
                           "phase": "ar" if ar else "diffusion", "loss": lv, "lr": lr}
                    rec |= {k: float(getattr(losses, k).detach()) for k in ("canvas_ce", "next_ce", "draft_kl", "draft_agree")
                            if getattr(losses, k) is not None}
                    self.log(rec)
                if stopping:
                    break
                if self.elapsed - last_eval >= cfg.eval_every_s:
                    last_eval = self.elapsed
                    self._checkpoint()
        finally:
            bar.close()
            for s, h in zip((signal.SIGINT, signal.SIGTERM), old):
                signal.signal(s, h)
        held = self._checkpoint()
        if self.dist.main:
            print(f"done: step {self.step}, {self.tokens_seen / 1e6:.2f}M tokens, held-out {_fmt(held)}")
        self.dist.close()
        return held

    def _announce(self) -> None:
        cfg, b = self.cfg, self.budgets
        if self.dist.main:
            print(f"model {self.model.num_parameters() / 1e6:.2f}M params, route {cfg.route} (layout {self.model.cfg.layout}), "
                  f"{cfg.optimizer}, masks {cfg.mask_schedule}{' complementary' if cfg.complementary else ''}, "
                  f"{len(self.texts)} files ({self.skipped} skipped), seq {b.seq_len}, "
                  f"{'bf16 autocast' if self.bf16 else 'fp32'} on {self.device}, {cfg.threads} thread(s) x {self.dist.world} process(es)")

    def _new_segment(self) -> dict:
        """This run() of the schedule: where it runs, how, which steps (kept in the state and the card)."""
        seg = {"machine": machine_name(self.device), "precision": "bf16 autocast" if self.bf16 else "fp32",
               "threads": self.cfg.threads, "processes": self.dist.world, "from_step": self.step, "to_step": self.step,
               "minutes": 0.0}
        self.segments.append(seg)
        return seg

    def _step(self):
        """One optimizer step -> (lr, whether it was an AR-phase step, its Losses)."""
        cfg, b = self.cfg, self.budgets
        lr = lr_at(cfg, self.step, self.progress)
        for opt in self.opts:
            for g in opt.param_groups:
                g["lr"] = lr
        ar = self.in_ar_phase()
        if not ar and cfg.route == "ar-diffusion" and self.phase_switch_step is None:
            self.phase_switch_step = self.step
            self.log({"step": self.step, "event": "switch to masked diffusion"})
            # the AR network as it is now: the same-size autoregressive baseline for `hone bench`
            save_model(self.run_dir / "ar_model", self.model, self.tok, dtype=torch.bfloat16)
        with self._autocast():
            if ar:
                ids = ar_batch(self.tok, self.texts, self.rng, b.seq_len, cfg.batch).to(self.device)
                losses = self.loss_fn(ids)
            else:
                batch = infill_batch(self.tok, self.texts, self.rng, b, cfg.batch, self.model.cfg.layout,
                                     pairs=cfg.complementary, repos=self.repos, draft_share=cfg.draft_share)
                losses = self.loss_fn(batch=batch.to(self.device), gen=self.gen)
        for opt in self.opts:
            opt.zero_grad(set_to_none=True)
        losses.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
        for opt in self.opts:
            opt.step()
        self.step += 1
        self.tokens_seen += cfg.batch * (b.seq_len if ar else batch.ids.shape[1]) * self.dist.world
        self.supervised += losses.supervised * self.dist.world
        return lr, ar, losses

    def _checkpoint(self) -> dict | None:
        """Held-out losses into the log, then state + model folder (the main process only)."""
        if not self.dist.main:
            return None
        held = self.evaluate()
        self.log({"step": self.step, "elapsed": self.elapsed, "tokens": self.tokens_seen, "supervised": self.supervised, **held})
        tqdm.write(f"step {self.step} {self.elapsed / 60:.1f} min {self.tokens_seen / 1e6:.2f}M tokens "
                   f"({self.tokens_seen / max(1e-9, self.elapsed):.0f} tok/s) held-out {_fmt(held)}")
        self.save()
        return held


PAUSED_STEP = 5.0  # a step that took more than this many times the typical step was paused (SIGSTOP while the
# machine measured something else, a suspended laptop): it counts as a typical step, so the schedule, which follows
# training time, neither jumps ahead nor ends early


def step_seconds(raw: float, typical: float | None) -> float:
    """The training time one step counts: its wall time, unless it was paused (PAUSED_STEP)."""
    return raw if typical is None or raw <= PAUSED_STEP * typical else typical


def _fmt(held: dict | None) -> str:
    return ", ".join(f"{k.removeprefix('heldout_')} {v:.3f}" for k, v in (held or {}).items())


MOMENTS = ("exp_avg", "exp_avg_sq", "momentum_buffer")  # optimizer state kept in bf16 on disk


def _orthogonalize(grad: torch.Tensor, ns_coefficients: tuple[float, float, float], ns_steps: int, eps: float,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Muon's quintic Newton-Schulz iteration (the same coefficients and steps as torch.optim.Muon) in `dtype`:
    grad (m, n) -> an approximately orthogonal matrix of the same shape."""
    a, b, c = ns_coefficients
    x = grad.to(dtype)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T  # iterate on the wide side: the Gram matrix is the smaller one
    x = x / x.norm().clamp(min=eps)  # spectral norm ≤ Frobenius norm ≤ 1
    for _ in range(ns_steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class Muon(torch.optim.Muon):
    """torch.optim.Muon with its Newton-Schulz iterations in float32 unless training runs in bf16: torch runs
    them in bf16, which a CPU without native bf16 emulates (measured on a 2-core AVX2 EPYC: ~17 s of a ~20 s
    step, against ~0.4 s in float32). The state and the update rule are torch's own, so checkpoints carry over."""

    def __init__(self, params, ns_dtype: torch.dtype = torch.float32, **kw):
        super().__init__(params, **kw)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        if self.ns_dtype == torch.bfloat16:
            return super().step(closure)
        import torch.optim._muon as impl  # the iteration is a module-level function there; swap it for one step

        original = impl._zeropower_via_newtonschulz
        impl._zeropower_via_newtonschulz = lambda g, coef, steps, eps: _orthogonalize(g, coef, steps, eps, self.ns_dtype)
        try:
            return super().step(closure)
        finally:
            impl._zeropower_via_newtonschulz = original


def make_optimizers(model: Denoiser, cfg: TrainConfig, bf16: bool = False) -> list[torch.optim.Optimizer]:
    """AdamW for everything, or Muon for the blocks' weight matrices and AdamW for embeddings and norms (its
    Newton-Schulz iterations in bf16 only when training itself runs in bf16)."""
    named = list(model.named_parameters())
    matrices = [p for n, p in named if p.dim() == 2 and n.startswith("blocks.")] if cfg.optimizer == "muon" else []
    rest = [(n, p) for n, p in named if not any(p is m for m in matrices)]
    adamw = torch.optim.AdamW([{"params": [p for _, p in rest if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                               {"params": [p for _, p in rest if p.dim() < 2], "weight_decay": 0.0}],
                              lr=cfg.lr, betas=(0.9, 0.95))
    if not matrices:
        return [adamw]
    # match_rms_adamw scales each matrix's orthogonalised update to AdamW's RMS, so AdamW's lr and decay carry over
    return [adamw, Muon(matrices, ns_dtype=torch.bfloat16 if bf16 else torch.float32, lr=cfg.lr,
                        weight_decay=cfg.weight_decay, adjust_lr_fn="match_rms_adamw")]


