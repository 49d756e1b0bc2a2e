"""`hone bench engine`: forwards, tokens per forward, ms per forward and per completion, per commit rule."""

from __future__ import annotations

import json
import statistics
import sysconfig
import time
from pathlib import Path

import torch

from .engine import Engine
from .evaluate import infill_cases
from .sampler import RULES, SampleOptions


def real_python_texts(limit: int = 200) -> list[str]:
    """Standard-library sources: real Python that is on every machine."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:limit]
    return [t for t in (f.read_text(encoding="utf-8", errors="replace") for f in files) if len(t) > 2000]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def step_times(engine: Engine, n_slots: int = 16, ctx_tokens: int = 256, reps: int = 30) -> dict:
    """ms of one canvas step, cached vs uncached, at the given context size (Hone models)."""
    b = engine.backend
    ids = [1] * ctx_tokens
    slot_pos = list(range(ctx_tokens - 64, ctx_tokens - 64 + n_slots))
    canvas = torch.full((n_slots,), b.mask_id)
    out = {}
    for cached in (True, False):
        s = b.session(ids, slot_pos, cached)
        s.predict(canvas)
        t = time.perf_counter()
        for _ in range(reps):
            s.predict(canvas)
        out["cached" if cached else "uncached"] = (time.perf_counter() - t) * 1000 / reps
    return out


def run(model_dir: str | None, n: int = 30, device: str = "cpu") -> dict:
    engine = Engine.load(model_dir, device)
    texts = real_python_texts()
    figures: dict = {"model": engine.name, "device": str(engine.device), "threads": torch.get_num_threads()}
    st = step_times(engine)
    figures["step_ms_cached"], figures["step_ms_uncached"] = st["cached"], st["uncached"]
    print(f"model {engine.name} on {engine.device}, {torch.get_num_threads()} threads")
    print(f"one canvas step (16 slots, 256-token context): cached {st['cached']:.2f} ms, uncached {st['uncached']:.2f} ms")
    cases = {"single_line": (infill_cases(texts, n, "rest_of_line", 7), "line", 32),
             "block64": (infill_cases(texts, n, "lines", 8), "free", 64)}
    for rule in RULES:
        for name, (cs, mode, max_tokens) in cases.items():
            lat, fw, tok, fwd_ms = [], 0, 0, []
            for pre, _mid, suf in cs:
                r = engine.infill(pre, suf, SampleOptions(rule=rule, mode=mode, max_tokens=max_tokens,
                                                          initial_slots=max_tokens if name == "block64" else 0))
                lat.append(r.stats.wall_ms)
                fw += r.stats.forwards
                tok += r.stats.tokens
                fwd_ms.append(r.stats.wall_ms / max(1, r.stats.forwards))
            key = f"{rule}.{name}"
            figures[key] = {"p50_ms": pct(lat, 0.5), "p95_ms": pct(lat, 0.95), "forwards": fw / len(cs),
                            "tokens_per_forward": tok / max(1, fw), "ms_per_forward": statistics.mean(fwd_ms)}
            f = figures[key]
            print(f"{key:26s} p50 {f['p50_ms']:7.1f} ms  p95 {f['p95_ms']:7.1f} ms  forwards {f['forwards']:5.1f}  "
                  f"tok/fwd {f['tokens_per_forward']:.2f}  ms/fwd {f['ms_per_forward']:.2f}")
    print(json.dumps(figures))
    return figures
