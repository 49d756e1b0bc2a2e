"""`hone train`: masked-diffusion training on editor-shaped infill examples, optionally after an
autoregressive phase (route ar-diffusion: causal next-token first, then adaptation to masked
diffusion with shifted logits, the Dream/DiffuCoder recipe). Time-based schedule, resumable."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from pathlib import Path

import msgspec
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import save_model
from .config import preset
from .corpus import load_texts
from .data import Budgets, ar_batch, infill_batch, mask_canvas
from .network import Denoiser, infill_attention_mask
from .tokenizer import HoneTokenizer

ROUTES = ("diffusion", "ar-diffusion")
PRECISIONS = ("auto", "bf16", "fp32")


class TrainConfig(msgspec.Struct, kw_only=True):
    route: str = "ar-diffusion"  # diffusion (from scratch) | ar-diffusion (AR phase, then masked diffusion)
    ar_fraction: float = 0.3  # share of the wall-clock budget spent in the AR phase
    model_preset: str = "small"
    hours: float = 2.5  # wall-clock budget; the LR schedule follows elapsed time
    tokens: int = 0  # > 0: a token budget instead (the schedule follows tokens seen): equal-compute comparisons
    batch: int = 16
    lr: float = 1.5e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 200
    weight_decay: float = 0.1
    clip: float = 1.0
    prefix_tokens: int = 192
    middle_tokens: int = 64
    suffix_tokens: int = 64
    eval_every_s: float = 300.0  # also checkpoints then
    threads: int = 1
    seed: int = 0
    precision: str = "auto"  # auto: bf16 autocast where the hardware computes bf16 natively, else fp32


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        return ""


def native_bf16(device: torch.device) -> bool:
    """CUDA with bf16 support, or a CPU with AMX / AVX512-BF16 (emulated bf16 was 2.6x slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    flags = _cpuinfo()
    return "amx_bf16" in flags or "avx512_bf16" in flags


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
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * warm * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cos)


def diffusion_loss(model: Denoiser, ids, is_context, targets, mask_id: int, gen: torch.Generator):
    """Masked-token cross-entropy (mean over masked canvas slots) -> scalar."""
    noisy, tgt, _t = mask_canvas(ids, is_context, targets, mask_id, gen)
    h, _ = model.hidden(noisy, attn_mask=infill_attention_mask(is_context))  # (B, T, D)
    if model.cfg.shifted:  # the output at j-1 predicts slot j
        h, tgt = h[:, :-1], tgt[:, 1:]
    sel = tgt != -100
    logits = model.head(h[sel])  # only the predicted positions go through the head: (N, V)
    return F.cross_entropy(logits.float(), tgt[sel])


def ar_loss(model: Denoiser, ids, pad_id: int):
    h, _ = model.hidden(ids[:, :-1], causal=True)
    tgt = ids[:, 1:]
    sel = tgt != pad_id
    return F.cross_entropy(model.head(h[sel]).float(), tgt[sel])


class LossModule(torch.nn.Module):
    """Both objectives behind one forward, so DistributedDataParallel sees (and syncs) every step."""

    def __init__(self, model: Denoiser, pad_id: int, mask_id: int):
        super().__init__()
        self.model, self.pad_id, self.mask_id = model, pad_id, mask_id

    def forward(self, ids, is_context=None, targets=None, gen: torch.Generator | None = None):
        if is_context is None:
            return ar_loss(self.model, ids, self.pad_id)
        return diffusion_loss(self.model, ids, is_context, targets, self.mask_id, gen)


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
        if init_from is not None and cfg.route != "diffusion":
            raise ValueError("fine-tuning (--init-from) continues masked diffusion: use route 'diffusion'")
        self.cfg, self.run_dir = cfg, run_dir
        self.dist = Dist()
        run_dir.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(cfg.threads)
        self.device = self.dist.device()
        self.bf16 = use_bf16(cfg.precision, self.device)
        self.budgets = Budgets(cfg.prefix_tokens, cfg.middle_tokens, cfg.suffix_tokens)
        self.texts, self.skipped = self._load(corpus / "train.jsonl")
        self.held = load_texts(corpus / "heldout.jsonl")
        torch.manual_seed(cfg.seed)
        if init_from is not None:  # fine-tune: that model's network, weights and tokenizer
            from .checkpoint import load_model

            self.model, self.tok = load_model(init_from, self.device)
            self.model.float()
        else:
            self.tok = t = HoneTokenizer.from_file(tokenizer)
            mcfg = preset(cfg.model_preset, vocab_size=t.vocab_size, pad_id=t.pad_id, bos_id=t.bos_id, eos_id=t.eos_id,
                          mask_id=t.mask_id, null_id=t.null_id, shifted=cfg.route == "ar-diffusion",
                          max_seq_len=max(1024, self.budgets.seq_len))
            self.model = Denoiser(mcfg).to(self.device)
        self.loss_fn: torch.nn.Module = LossModule(self.model, self.tok.pad_id, self.tok.mask_id)
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.loss_fn = DistributedDataParallel(self.loss_fn, device_ids=[self.dist.local] if self.device.type == "cuda" else None)
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2]
        other = [p for n, p in self.model.named_parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": other, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
        self.step, self.elapsed, self.tokens_seen, self.phase_switch_step = 0, 0.0, 0, None
        self.segments: list[dict] = []  # one per run() of this schedule: where it ran, how, which steps
        seed = cfg.seed + 1000 * self.dist.rank  # each rank draws its own examples
        self.rng, self.gen = random.Random(seed), torch.Generator().manual_seed(seed)
        self.log_path = run_dir / "log.jsonl"
        self._resume()
        self._held_batches = self._make_held() if self.dist.main else []  # only the main process evaluates

    def _load(self, path: Path):
        texts, skipped = [], 0
        with open(path, encoding="utf-8", errors="strict") as f:
            for line in f:
                try:
                    text = json.loads(line)["text"]
                    text.encode("utf-8")  # lone surrogates would break the tokenizer
                except (ValueError, KeyError, UnicodeError):
                    skipped += 1
                    continue
                texts.append(text)
        return texts, skipped

    def _make_held(self):
        rng, gen = random.Random(1234), torch.Generator().manual_seed(1234)
        out = []
        for _ in range(8):
            ids, ctx, tgt = infill_batch(self.tok, self.held, rng, self.budgets, 16)
            out.append((ids, ctx, tgt, gen.get_state()))
            torch.rand((16, self.budgets.seq_len), generator=gen)  # advance so each batch draws new masks
        return out

    @property
    def progress(self) -> float:
        if self.cfg.tokens > 0:
            return self.tokens_seen / self.cfg.tokens
        return self.elapsed / (self.cfg.hours * 3600)

    def in_ar_phase(self) -> bool:
        return self.cfg.route == "ar-diffusion" and self.progress < self.cfg.ar_fraction

    @torch.no_grad()
    def evaluate(self) -> float:
        """Held-out masked-token CE on fixed infill batches (same masks every time)."""
        self.model.eval()
        losses = []
        for ids, ctx, tgt, state in self._held_batches:
            gen = torch.Generator().set_state(state)
            with self._autocast():
                losses.append(float(diffusion_loss(self.model, ids.to(self.device), ctx.to(self.device),
                                                   tgt.to(self.device), self.tok.mask_id, gen)))
        self.model.train()
        return sum(losses) / len(losses)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _resume(self):
        state_path = self.run_dir / "state.pt"
        if not state_path.exists():
            return
        st = torch.load(state_path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        self.step, self.elapsed, self.tokens_seen = st["step"], st["elapsed"], st["tokens_seen"]
        self.phase_switch_step = st.get("phase_switch_step")
        self.segments = st.get("segments", [])
        if self.dist.main:  # other ranks keep their own streams
            self.rng.setstate(st["py_rng"])
            self.gen.set_state(st["torch_rng"])
        print(f"resumed {state_path} at step {self.step}, {self.elapsed / 60:.1f} min, {self.tokens_seen / 1e6:.2f}M tokens")

    def save(self, export: bool = True):
        if not self.dist.main:
            return
        opt = self.opt.state_dict()  # bf16 moments halve the file (loading casts them back to fp32); copies, not the live state
        opt["state"] = {i: {k: v.to(torch.bfloat16) if k.startswith("exp_avg") else v for k, v in slot.items()}
                        for i, slot in opt["state"].items()}
        st = {"model": self.model.state_dict(), "opt": opt, "step": self.step, "elapsed": self.elapsed,
              "tokens_seen": self.tokens_seen, "phase_switch_step": self.phase_switch_step,
              "segments": self.segments, "py_rng": self.rng.getstate(), "torch_rng": self.gen.get_state(), "train_config": msgspec.to_builtins(self.cfg)}
        tmp = self.run_dir / "state.pt.tmp"
        torch.save(st, tmp)
        tmp.replace(self.run_dir / "state.pt")  # atomic: a kill mid-save keeps the previous checkpoint
        if export:
            save_model(self.run_dir / "model", self.model, self.tok, dtype=torch.bfloat16)
            (self.run_dir / "model" / "train_state.json").write_text(json.dumps(
                {"step": self.step, "hours": self.elapsed / 3600, "tokens_seen": self.tokens_seen,
                 "phase_switch_step": self.phase_switch_step, "train_config": msgspec.to_builtins(self.cfg),
                 "segments": self.segments,
                 "corpus_files": len(self.texts), "skipped_records": self.skipped}, indent=2))
            plot_losses(self.log_path, self.run_dir / "model" / "loss.png")

    def log(self, rec: dict):
        if not self.dist.main:
            return
        with open(self.log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def run(self):
        cfg, b = self.cfg, self.budgets
        stop = {"flag": False}

        def on_signal(signum, frame):
            stop["flag"] = True  # finish the step, checkpoint, exit

        old = [signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)]
        n_params = self.model.num_parameters()
        if self.dist.main:
            print(f"model {n_params / 1e6:.2f}M params, route {cfg.route}, {len(self.texts)} files ({self.skipped} skipped), "
                  f"seq {b.seq_len}, {'bf16 autocast' if self.bf16 else 'fp32'} on {self.device}, {self.dist.world} process(es)")
        seg = {"machine": machine_name(self.device), "precision": "bf16 autocast" if self.bf16 else "fp32",
               "threads": cfg.threads, "processes": self.dist.world, "from_step": self.step, "to_step": self.step,
               "minutes": 0.0}
        self.segments.append(seg)
        seg_start = self.elapsed
        by_tokens = cfg.tokens > 0
        done = (lambda: self.tokens_seen) if by_tokens else (lambda: int(self.elapsed))
        bar = tqdm(total=cfg.tokens if by_tokens else int(cfg.hours * 3600), initial=done(),
                   unit="tok" if by_tokens else "s", unit_scale=by_tokens, desc="train", disable=not self.dist.main)
        last_eval = self.elapsed
        ema = None
        self.model.train()
        try:
            while self.progress < 1.0:
                t0 = time.perf_counter()
                lr = lr_at(cfg, self.step, self.progress)
                for g in self.opt.param_groups:
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
                        loss = self.loss_fn(ids)
                    else:
                        ids, ctx, tgt = infill_batch(self.tok, self.texts, self.rng, b, cfg.batch)
                        loss = self.loss_fn(ids.to(self.device), ctx.to(self.device), tgt.to(self.device), self.gen)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
                self.opt.step()
                self.step += 1
                self.tokens_seen += cfg.batch * b.seq_len * self.dist.world
                lv = loss.item()
                dt, stopping = self.dist.agree(time.perf_counter() - t0, stop["flag"])
                self.elapsed += dt
                seg["to_step"], seg["minutes"] = self.step, (self.elapsed - seg_start) / 60
                ema = lv if ema is None else 0.95 * ema + 0.05 * lv
                bar.update(done() - bar.n)
                bar.set_postfix(step=self.step, loss=f"{ema:.3f}", phase="ar" if ar else "diff", lr=f"{lr:.1e}")
                if self.step % 20 == 0:
                    self.log({"step": self.step, "elapsed": self.elapsed, "tokens": self.tokens_seen,
                              "phase": "ar" if ar else "diffusion", "loss": lv, "lr": lr})
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
            print(f"done: step {self.step}, {self.tokens_seen / 1e6:.2f}M tokens, held-out masked CE {held:.3f}")
        self.dist.close()
        return held

    def _checkpoint(self) -> float | None:
        """Held-out loss into the log, then state + model folder (the main process only)."""
        if not self.dist.main:
            return None
        held = self.evaluate()
        self.log({"step": self.step, "elapsed": self.elapsed, "tokens": self.tokens_seen, "heldout_masked_ce": held})
        tqdm.write(f"step {self.step} {self.elapsed / 60:.1f} min {self.tokens_seen / 1e6:.2f}M tokens held-out masked CE {held:.3f}")
        self.save()
        return held


def read_log(path: Path) -> list[dict]:
    """The records of a run's log.jsonl (none if it does not exist)."""
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def plot_losses(logs: Path | dict[str, Path], out: Path, train_curves: bool = True) -> None:
    """A picture of the loss log(s): training loss per phase and held-out masked CE against tokens seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, path in ({"this run": logs} if isinstance(logs, Path) else logs).items():
        recs = read_log(path)
        for phase, style in (("ar", ":"), ("diffusion", "-")) if train_curves else ():
            pts = [(r["tokens"] / 1e6, r["loss"]) for r in recs if r.get("phase") == phase]
            if pts:
                ax.plot(*zip(*pts), style, alpha=0.5, label=f"{label}: train loss ({phase})")
        pts = [(r["tokens"] / 1e6, r["heldout_masked_ce"]) for r in recs if "heldout_masked_ce" in r]
        if pts:
            ax.plot(*zip(*pts), "o-", label=f"{label}: held-out masked CE")
    ax.set_xlabel("tokens seen (M)")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
