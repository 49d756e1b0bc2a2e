"""`hone bench engine`: forwards, tokens per forward, ms per forward and per completion, per commit rule."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from ..engine import Engine
from ..layout import Segments
from ..types import RULES, SampleOptions
from ..training.corpus import load_texts
from .common import pct, read_source, stdlib_files
from .evaluate import infill_cases


def real_python_texts(limit: int = 200) -> list[str]:
    """Standard-library sources: real Python that is on every machine."""
    return [t for t in map(read_source, stdlib_files()[:limit]) if len(t) > 2000]


def step_times(engine: Engine, n_slots: int = 16, ctx_tokens: int = 256, reps: int = 30) -> dict:
    """ms of one canvas step, cached vs uncached, at the given context size (Hone models)."""
    b = engine.backend
    seg = Segments([[1] * (ctx_tokens - 64), [1] * 64], [[b.mask_id] * n_slots])
    canvas = torch.full((n_slots,), b.mask_id)
    out = {}
    for cached in (True, False):
        s = b.session(seg, cached)
        s.predict(canvas)
        t = time.perf_counter()
        for _ in range(reps):
            s.predict(canvas)
        out["cached" if cached else "uncached"] = (time.perf_counter() - t) * 1000 / reps
    return out


def canvas_step_flops(engine: Engine, n_slots: int = 16, ctx_tokens: int = 256) -> float:
    """Multiply-adds x 2 of one cached canvas step of a Hone network: the blocks' matrices and the head for each
    slot, and attention over the context plus the canvas."""
    c = engine.backend.network.model.cfg
    d = c.d_model
    per_slot = 2 * (c.n_layers * (4 * d * d + 3 * d * c.d_ff) + c.vocab_size * d)
    attention = c.n_layers * 4 * (ctx_tokens + n_slots) * d
    return n_slots * (per_slot + attention)


def matmul_gflops(size: int = 1024, reps: int = 5) -> float:
    """This machine's float32 matmul rate with the current threads: the compute limit the step is measured against."""
    a = torch.randn(size, size)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(reps))
    return 2 * size**3 / best / 1e9


def memory_gbs(mb: int = 256) -> float:
    """This machine's memory bandwidth for one large copy (read + write), GB/s."""
    a = torch.empty(mb * 2**18)
    b = torch.empty_like(a)
    b.copy_(a)
    t = min(_timed(lambda: b.copy_(a)) for _ in range(3))
    return 2 * a.numel() * 4 / t / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def keystroke_cost(engine: Engine, chars: int = 120) -> dict | None:
    """Per-keystroke context cost of a cached causal stream (spm models): type `chars` characters of a real file
    one at a time, updating the stream as a request would; ms and tokens encoded per keystroke."""
    from ..sampler import prefix_window_start

    b = engine.backend
    if not b.streams:
        return None
    text = next(t for t in real_python_texts() if len(t) > 20_000)
    at = len(text) // 2
    opts = engine.default_options()
    budget = opts.prefix_budget
    suffix = b.encode(text[at + chars : at + chars + 400])[: opts.suffix_budget]
    ms, encoded = [], []
    for i in range(chars + 1):
        pre = b.encode(text[max(0, at - 3000) // 1024 * 1024 : at + i])
        stream = b.stream(Segments([pre[prefix_window_start(len(pre), budget):], suffix], [[]]))
        t = time.perf_counter()
        b.context.update(stream)
        ms.append((time.perf_counter() - t) * 1000)
        encoded.append(b.context.last_encoded)
    ms, encoded = ms[1:], encoded[1:]  # the first request encodes the whole stream
    # a jump elsewhere in the file (a new stream: encoded afresh), then back (the stream set aside is resumed)
    elsewhere = b.encode(text[1024 : at // 2])
    there = b.stream(Segments([elsewhere[prefix_window_start(len(elsewhere), budget):],
                               b.encode(text[at // 2 : at // 2 + 400])[: opts.suffix_budget]], [[]]))
    jump_ms = _timed(lambda: b.context.update(there)) * 1000
    back_ms = _timed(lambda: b.context.update(stream)) * 1000
    return {"p50_ms": pct(ms, 0.5), "p95_ms": pct(ms, 0.95), "tokens_per_keystroke": statistics.mean(encoded),
            "worst_ms": max(ms), "jump_ms": jump_ms, "back_ms": back_ms, "back_encoded": b.context.last_encoded}


def compile_engine(engine: Engine, figures: dict) -> None:
    """Compile the engine's hot steps (timed) and say how it went."""
    t = time.perf_counter()
    figures["compiled"] = engine.compile()
    figures["compile_s"] = time.perf_counter() - t
    print(f"compiling the model's steps: {figures['compiled']} in {figures['compile_s']:.1f} s")


def run(model_dir: str | None, n: int = 30, device: str = "cpu", ar_dir: str | None = None, threads: int | None = None,
        compile: bool = False) -> dict:
    engine = Engine.load(model_dir, device, threads=threads)
    texts = real_python_texts()
    figures: dict = {"model": engine.name, "device": str(engine.device), "threads": torch.get_num_threads()}
    st = step_times(engine)
    figures["step_ms_cached"], figures["step_ms_uncached"] = st["cached"], st["uncached"]
    print(f"model {engine.name} on {engine.device}, {torch.get_num_threads()} threads")
    print(f"one canvas step (16 slots, 256-token context): cached {st['cached']:.2f} ms, uncached {st['uncached']:.2f} ms")
    if compile and engine.backend.streams:
        compile_engine(engine, figures)
        figures["step_ms_compiled"] = step_times(engine)["cached"]
        print(f"one canvas step, compiled: {figures['step_ms_compiled']:.2f} ms")
    if engine.backend.network is not None:
        flops, gflops = canvas_step_flops(engine), matmul_gflops()
        figures["step_ms_flop_limit"] = flops / gflops / 1e6
        print(f"compute limit of that step: {figures['step_ms_flop_limit']:.2f} ms "
              f"({flops / 1e9:.2f} GFLOP at this machine's {gflops:.0f} GFLOP/s float32 matmul)")
    ks = keystroke_cost(engine)
    if ks:
        figures["keystroke"] = ks
        print(f"context per keystroke (cached causal stream): p50 {ks['p50_ms']:.2f} ms, p95 {ks['p95_ms']:.2f} ms, "
              f"{ks['tokens_per_keystroke']:.2f} tokens encoded; worst keystroke (the window slid) {ks['worst_ms']:.1f} ms")
        print(f"a jump elsewhere in the file: {ks['jump_ms']:.1f} ms (a new stream); back again: {ks['back_ms']:.1f} ms "
              f"({ks['back_encoded']} tokens encoded: the stream set aside is resumed)")
    cases = {"single_line": (infill_cases(texts, n, "rest_of_line", 7), "line", 32),
             "block64": (infill_cases(texts, n, "lines", 8), "free", 64)}
    for rule in RULES:
        if rule == "ar" and not engine.backend.streams:
            continue  # only an spm network decodes through a causal stream
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
    if ar_dir:
        figures["ar_baseline.single_line"] = run_ar_baseline(ar_dir, n, device, threads)
    print(json.dumps(figures))
    return figures


def ar_complete_line(engine: Engine, prefix: str, max_tokens: int = 32) -> tuple[str, int, float]:
    """Autoregressive baseline: the same network used causally (the AR phase's checkpoint), greedy,
    KV-cached, prefix only, until a newline. -> (text, forwards, ms)."""
    b = engine.backend
    model = b.model
    t0 = time.perf_counter()
    ids = [b.bos_id] + b.encode(prefix)[-engine.default_options().prefix_budget :]
    out: list[int] = []
    with torch.no_grad():
        h, cache = model.hidden(torch.tensor([ids]), causal=True, keep_kv=True)
        forwards = 1
        for _ in range(max_tokens):
            nxt = int(model.head(h[0, -1]).argmax())
            out.append(nxt)
            if "\n" in b.decode([nxt]) or nxt == b.eos_id:
                break
            pos = torch.tensor([len(ids) + len(out) - 1])
            h, kv = model.hidden(torch.tensor([[nxt]]), pos, past=cache, keep_kv=True)
            cache = [(torch.cat((k0, k1), 2), torch.cat((v0, v1), 2)) for (k0, v0), (k1, v1) in zip(cache, kv)]
            forwards += 1
    return b.decode(out).split("\n")[0], forwards, (time.perf_counter() - t0) * 1000


def run_ar_baseline(ar_dir: str, n: int = 30, device: str = "cpu", threads: int | None = None) -> dict:
    engine = Engine.load(ar_dir, device, threads=threads)
    cases = infill_cases(real_python_texts(), n, "rest_of_line", 7)
    lat, fw, tok, em = [], 0, 0, 0
    for pre, mid, _suf in cases:
        text, f, ms = ar_complete_line(engine, pre)
        lat.append(ms)
        fw += f
        tok += len(engine.backend.encode(text))
        em += text.rstrip() == mid.rstrip()
    fig = {"p50_ms": pct(lat, 0.5), "p95_ms": pct(lat, 0.95), "forwards": fw / n, "tokens_per_forward": tok / max(1, fw),
           "exact_match": em / n}
    print(f"AR baseline single_line     p50 {fig['p50_ms']:7.1f} ms  p95 {fig['p95_ms']:7.1f} ms  forwards {fig['forwards']:5.1f}  "
          f"tok/fwd {fig['tokens_per_forward']:.2f}  EM {fig['exact_match']:.2f}")
    return fig


SPEED_DECODINGS = {  # label -> SampleOptions overrides; "ar" is the AR twin (the spm network through its causal stream)
    "diffusion τ=0.9": {"rule": "threshold"},
    "diffusion one-per-step": dict(rule="one"),
    "ar": dict(rule="ar", draft="none"),  # plain greedy AR, one token per forward: the baseline
    "ar + lookup drafts": dict(rule="ar", draft="lookup"),  # the same text, drafts from the document verified
    "ar + n-gram drafts": dict(rule="ar", draft="ngram"),  # ... else from the model's corpus n-gram table
    "ar + canvas drafts": dict(rule="ar", draft="canvas"),  # the canvas read after the stream drafts (one forward)
}


def _speed_cases(n: int, corpus: str | None) -> dict[str, tuple[list, str, int]]:
    texts = load_texts(Path(corpus) / "heldout.jsonl") if corpus else real_python_texts()
    return {"line": (infill_cases(texts, n, "rest_of_line", 11), "line", 32),
            "block": (infill_cases(texts, n, "lines", 12), "free", 64)}


def run_speed(model_dir: str | None, n: int = 30, device: str = "cpu", ar_dir: str | None = None,
              threads: int | None = None, compile: bool = False, corpus: str | None = None) -> dict:
    """The diffusion decodings and the AR twin on the same cases (from `corpus`'s held-out split, else the standard
    library): EM, forwards, tokens per forward, p50/p95 ms, and the ratios. The AR twin is the same network's rule
    'ar' for spm models, else `ar_dir`."""
    from .evaluate import edit_similarity

    engine = Engine.load(model_dir, device, threads=threads)
    ar_engine = engine if engine.backend.streams else (Engine.load(ar_dir, device, threads=threads) if ar_dir else None)
    if ar_engine is None:
        raise ValueError("this model has no causal stream to decode autoregressively: pass --ar-model DIR")
    print(f"model {engine.name} on {engine.device}, {torch.get_num_threads()} threads; cases from "
          f"{corpus + ' (held out)' if corpus else 'the standard library (training data)'}; AR twin: "
          f"{'the same network (rule ar)' if ar_engine is engine else ar_dir}")
    figures: dict = {"model": engine.name, "threads": torch.get_num_threads(), "cases": "heldout" if corpus else "stdlib"}
    if compile:
        compile_engine(engine, figures)
    texts: dict[str, list[str]] = {}  # "kind.label" -> each case's text (the drafted rows must equal plain AR's)
    for kind, (cases, mode, max_tokens) in _speed_cases(n, corpus).items():
        for label, over in SPEED_DECODINGS.items():
            got_texts = texts.setdefault(f"{kind}.{label}", [])
            eng = ar_engine if over.get("rule") == "ar" else engine
            if eng is not engine and over.get("rule") == "ar":  # a separate AR network decodes causally with its prefix
                if over.get("draft") != "none":
                    continue
                lat, fw, tok, em, es = [], 0, 0, 0, 0.0
                for pre, mid, _suf in cases:
                    text, f, ms = ar_complete_line(eng, pre, max_tokens)
                    got_texts.append(text)
                    lat.append(ms)
                    fw, tok = fw + f, tok + len(eng.backend.encode(text))
                    em += text.rstrip() == mid.rstrip()
                    es += edit_similarity(text.rstrip(), mid.rstrip())
            else:
                lat, fw, tok, em, es = [], 0, 0, 0, 0.0
                for pre, mid, suf in cases:
                    r = eng.infill(pre, suf, SampleOptions(mode=mode, max_tokens=max_tokens, **over))
                    got = r.texts[0]
                    got_texts.append(got)
                    lat.append(r.stats.wall_ms)
                    fw, tok = fw + r.stats.forwards, tok + r.stats.tokens
                    em += got.rstrip() == mid.rstrip()
                    es += edit_similarity(got.rstrip(), mid.rstrip())
            f = {"exact_match": em / len(cases), "edit_similarity": es / len(cases), "forwards": fw / len(cases),
                 "tokens_per_forward": tok / max(1, fw), "p50_ms": pct(lat, 0.5), "p95_ms": pct(lat, 0.95),
                 "mean_ms": statistics.mean(lat)}
            figures[f"{kind}.{label}"] = f
            print(f"{kind:5s} {label:24s} EM {f['exact_match']:.3f}  ES {f['edit_similarity']:.3f}  forwards {f['forwards']:5.1f}  "
                  f"tok/fwd {f['tokens_per_forward']:.2f}  p50 {f['p50_ms']:7.1f} ms  p95 {f['p95_ms']:7.1f} ms")
    for kind in ("line", "block"):
        d, a = figures[f"{kind}.diffusion τ=0.9"], figures[f"{kind}.ar"]
        figures[f"speedup_vs_ar_{kind}"] = a["mean_ms"] / max(1e-9, d["mean_ms"])
        figures[f"em_diff_{kind}"] = d["exact_match"] - a["exact_match"]
        print(f"{kind}: diffusion τ=0.9 is {figures[f'speedup_vs_ar_{kind}']:.2f}x the AR twin's speed (mean ms), "
              f"EM {figures[f'em_diff_{kind}']:+.3f}")
        if (c := figures.get(f"{kind}.ar + canvas drafts")) is not None:  # a separate AR twin has no canvas
            plain, drafted = texts[f"{kind}.ar"], texts[f"{kind}.ar + canvas drafts"]
            figures[f"speedup_canvas_drafts_vs_ar_{kind}"] = a["mean_ms"] / max(1e-9, c["mean_ms"])
            figures[f"same_text_{kind}"] = sum(x == y for x, y in zip(plain, drafted)) / max(1, len(plain))
            figures[f"accepted_per_forward_{kind}"] = c["tokens_per_forward"]
            print(f"{kind}: ar + canvas drafts is {figures[f'speedup_canvas_drafts_vs_ar_{kind}']:.2f}x plain AR's speed, "
                  f"{figures[f'accepted_per_forward_{kind}']:.2f} tokens per forward, same text in "
                  f"{figures[f'same_text_{kind}']:.0%} of cases")
    print(json.dumps(figures))
    return figures
