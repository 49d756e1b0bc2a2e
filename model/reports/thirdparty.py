"""`hone bench thirdparty`: the native third-party families (model.backends.families) with random weights at a
chosen size, recompute (every step runs the whole window) vs the dual cache (hf._DualCacheSession) on the same cases:
single lines and 64-token blocks after 512 tokens of context. ms p50/p95, forwards, tokens per forward, and how many
tokens the cached text shares with the recompute path's.

Nothing is downloaded: the network is built from the family's published shape and its weights drawn on the device
(bf16 on CUDA, float32 on CPU). Token ids stand in for text (IdTokenizer), so no tokenizer files are needed either.
Random weights commit about one token per forward under the threshold rule (their distributions are flat): the
forwards are a worst case, the cost of one step is what the cache changes. Runs as `python -m
model.reports.thirdparty` with torch, safetensors and msgspec alone (scripts/gpu_check.sh)."""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

import torch

from ..backends.families import STYLE_OF_FAMILY, BidirectionalLM, FamilyConfig
from ..backends.hf import CACHE_REFRESH, HFBackend, cache_refresh_setting
from ..machine import free_cores
from ..sampler import sample
from ..types import SampleOptions
from .common import pct

FAMILIES = ("qwen2", "llada")  # the bench's choices: the two shapes third-party diffusion code models come in
SIZES = ("tiny", "small", "7b")  # tiny: tests; small: ~100M parameters for CPUs; 7b: the published 7B/8B shapes
CONTEXT_TOKENS = 512  # tokens around the hole ...
PREFIX_TOKENS = 384  # ... of which before it (the rest after it)
LINE_TOKENS = 16  # canvas slots of a single-line case
BLOCK_TOKENS = 64  # canvas slots of a block case
DEFAULT_CASES = {"tiny": 2, "small": 3, "7b": 8}  # cases per kind when --cases is not given
BENCH_REFRESH = "block"  # the cached path measured: the approximation (step is exact by construction and tested)
INIT_STD = 0.02  # the families' initializer_range: random weights drawn as their training started

# The published config.json values each size keeps (model.backends.families reads the same keys from a folder)
_FAMILY = {
    "qwen2": dict(family="qwen2", rms_eps=1e-6, rope_theta=1e6, rope_scaling=None, qkv_bias=True, o_bias=False,
                  tie_embeddings=False, max_positions=131072),  # Dream-v0 / Dream-Coder-v0 / DiffuCoder 7B
    "llada": dict(family="llada", rms_eps=1e-5, rope_theta=5e5, rope_scaling=None, qkv_bias=False, o_bias=False,
                  tie_embeddings=False, max_positions=4096),  # LLaDA-8B-Base / -Instruct
}
_SHAPES = {  # (size, family) -> width, depth, heads and vocabulary
    ("tiny", "qwen2"): dict(hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, intermediate=128, vocab_size=512),
    ("tiny", "llada"): dict(hidden=64, layers=2, heads=4, kv_heads=4, head_dim=16, intermediate=128, vocab_size=512),
    # ~100M: a smaller vocabulary than the real ones keeps the step's cost in the blocks, as at 7B (a 152k-token
    # head would be most of a 640-wide model's work)
    ("small", "qwen2"): dict(hidden=640, layers=8, heads=10, kv_heads=2, head_dim=64, intermediate=1728,
                             vocab_size=49152),
    ("small", "llada"): dict(hidden=640, layers=8, heads=10, kv_heads=10, head_dim=64, intermediate=1728,
                             vocab_size=49152),
    ("7b", "qwen2"): dict(hidden=3584, layers=28, heads=28, kv_heads=4, head_dim=128, intermediate=18944,
                          vocab_size=152064),  # Dream-v0-Base-7B config.json
    ("7b", "llada"): dict(hidden=4096, layers=32, heads=32, kv_heads=32, head_dim=128, intermediate=12288,
                          vocab_size=126464),  # LLaDA-8B-Base config.json (d_model, n_layers, mlp_hidden_size ...)
}
_SPECIALS_7B = {"qwen2": dict(mask=151666, eos=151643), "llada": dict(mask=126336, eos=126081)}  # their tokenizers'


def family_shape(family: str, size: str) -> tuple[FamilyConfig, dict[str, int]]:
    """The network of `family` at `size` and its special ids (mask, eos); ValueError naming the choices."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {list(FAMILIES)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {list(SIZES)}")
    c = FamilyConfig(**_FAMILY[family], **_SHAPES[size, family])
    v = c.vocab_size
    return c, (_SPECIALS_7B[family] if size == "7b" else dict(mask=v - 1, eos=v - 2))


def random_network(c: FamilyConfig, device: torch.device, dtype: torch.dtype, seed: int = 0) -> BidirectionalLM:
    """BidirectionalLM(c) with weights drawn on `device` in `dtype` (never materialised elsewhere or in float32):
    matrices N(0, INIT_STD), norm weights 1, biases 0."""
    with torch.device("meta"):
        net = BidirectionalLM(c).to(dtype)
    net = net.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.dim() == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, INIT_STD, generator=gen)
    return net.eval()


class IdTokenizer:
    """Token ids written as one character each (chr(BASE + id)): random ids become texts that encode back to
    exactly those ids, and never hold a line break, so every case fills its whole canvas."""

    BASE = 0x10000  # the first code point past the 16-bit plane: no control characters, no surrogates

    def __init__(self, mask: int, eos: int):
        self.mask_token_id, self.eos_token_id = mask, eos
        self.bos_token_id = self.pad_token_id = None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(ch) - self.BASE for ch in text]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(chr(self.BASE + i) for i in ids)


def case_pieces(tok: IdTokenizer, vocab: int, n: int, seed: int) -> list[list[str]]:
    """n cases of [prefix, suffix]: PREFIX_TOKENS and CONTEXT_TOKENS - PREFIX_TOKENS random non-special ids."""
    rng = random.Random(seed)
    specials = {tok.mask_token_id, tok.eos_token_id}
    def ids(k: int) -> list[int]:
        return [i if i not in specials else 0 for i in (rng.randrange(vocab) for _ in range(k))]
    return [[tok.decode(ids(PREFIX_TOKENS)), tok.decode(ids(CONTEXT_TOKENS - PREFIX_TOKENS))] for _ in range(n)]


def _options(slots: int, mode: str, cached: bool) -> SampleOptions:
    """A fixed canvas of `slots` (no growing: both paths do the same work), the threshold rule, no deadline."""
    return SampleOptions(rule="threshold", mode=mode, max_tokens=slots, initial_slots=slots, cached=cached,
                         prefix_budget=CONTEXT_TOKENS, suffix_budget=CONTEXT_TOKENS, context_budget=0,
                         deadline_s=None)


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """Share of token positions where two runs' outputs agree (the longer output of each pair counts)."""
    same = sum(sum(x == y for x, y in zip(u, v)) for u, v in zip(a, b))
    total = sum(max(len(u), len(v)) for u, v in zip(a, b))
    return same / total if total else 1.0


def _timed(be: HFBackend, pieces: list[str], opts: SampleOptions) -> tuple[float, object]:
    t = time.perf_counter()
    r = sample(be, pieces, opts)
    if be.device.type == "cuda":
        torch.cuda.synchronize(be.device)
    return (time.perf_counter() - t) * 1000, r


def _path_figures(ms: list[float], results: list) -> dict:
    forwards = [r.stats.forwards for r in results]
    tokens = [r.stats.tokens for r in results]
    return {"p50_ms": pct(ms, 0.5), "p95_ms": pct(ms, 0.95), "forwards": sum(forwards) / len(forwards),
            "tokens_per_forward": sum(tokens) / max(1, sum(forwards)), "ms_per_forward": sum(ms) / max(1, sum(forwards))}


def bench_family(family: str, size: str, device: torch.device, cases: int, refresh: str, seed: int = 0,
                 say=print) -> dict:
    """Recompute vs cached for one family: figures per kind (line, block) and the four headline numbers."""
    c, specials = family_shape(family, size)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    t = time.perf_counter()
    net = random_network(c, device, dtype, seed)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    made_s = time.perf_counter() - t
    params = sum(p.numel() for p in net.parameters())
    tok = IdTokenizer(**specials)
    be = HFBackend.of_network(net, tok, device, STYLE_OF_FAMILY[family], cache_refresh=refresh)
    sessions: list = []
    opened = be.session
    def session(seg, cached):  # counts the cached sessions' full forwards (refreshes)
        s = opened(seg, cached)
        sessions.append(s)
        return s
    be.session = session
    say(f"{family} {size}: {params / 1e6:.1f}M parameters, {device.type} {str(dtype).removeprefix('torch.')}"
        + (f", {torch.get_num_threads()} threads" if device.type == "cpu" else "")
        + f", weights drawn in {made_s:.1f} s; {CONTEXT_TOKENS} context tokens, refresh {refresh}, {cases} cases")
    out: dict = {"family": family, "size": size, "params": params, "dtype": str(dtype), "refresh": refresh,
                 "cases": cases, "context_tokens": CONTEXT_TOKENS}
    all_pieces = case_pieces(tok, c.vocab_size, cases, seed)
    for cached in (False, True):  # warm-up: first kernels, allocator
        sample(be, all_pieces[0], _options(LINE_TOKENS, "line", cached))
    for kind, slots in (("line", LINE_TOKENS), ("block", BLOCK_TOKENS)):
        ms: dict[bool, list[float]] = {False: [], True: []}
        results: dict[bool, list] = {False: [], True: []}
        refreshes = []
        for pieces in all_pieces:
            for cached in (False, True):
                sessions.clear()
                took, r = _timed(be, pieces, _options(slots, kind, cached))
                ms[cached].append(took)
                results[cached].append(r)
                if cached:
                    refreshes.append(sum(getattr(s, "refreshes", 0) for s in sessions))
        rec, cac = _path_figures(ms[False], results[False]), _path_figures(ms[True], results[True])
        cac["full_forwards"] = sum(refreshes) / len(refreshes)
        speedup = rec["p50_ms"] / cac["p50_ms"]
        agree = agreement([tok.encode(r.texts[0]) for r in results[True]], [tok.encode(r.texts[0]) for r in results[False]])
        say(f"  {kind:5} {slots} slots  recompute p50 {rec['p50_ms']:8.1f} ms  p95 {rec['p95_ms']:8.1f} ms  "
            f"{rec['forwards']:.1f} forwards  {rec['tokens_per_forward']:.2f} tokens/forward  "
            f"{rec['ms_per_forward']:.1f} ms/forward")
        say(f"  {kind:5} {slots} slots  cached    p50 {cac['p50_ms']:8.1f} ms  p95 {cac['p95_ms']:8.1f} ms  "
            f"{cac['forwards']:.1f} forwards ({cac['full_forwards']:.1f} full)  "
            f"{cac['tokens_per_forward']:.2f} tokens/forward  {cac['ms_per_forward']:.1f} ms/forward  "
            f"-> {speedup:.2f}x, token agreement {agree:.3f}")
        out[kind] = {"slots": slots, "recompute": rec, "cached": cac}
        out[f"speedup_cached_vs_recompute_{kind}"] = speedup
        out[f"token_agreement_{kind}"] = agree
    del be, net
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


HEADLINE = ("speedup_cached_vs_recompute_line", "speedup_cached_vs_recompute_block", "token_agreement_line",
            "token_agreement_block")


def run(family: str = "both", size: str = "small", device: str = "cpu", cases: int | None = None,
        refresh: str = BENCH_REFRESH, seed: int = 0, threads: int | None = None) -> dict:
    """Bench one family or both; prints the lines, then one JSON line: the headline figures (per family when
    both) and every figure under "families"."""
    families = FAMILIES if family == "both" else (family,)
    for f in families:
        family_shape(f, size)  # checked before anything heavy
    refresh = cache_refresh_setting(refresh)
    dev = torch.device(device)
    if dev.type == "cpu":
        torch.set_num_threads(threads or free_cores())
    n = cases or DEFAULT_CASES[size]
    per = {f: bench_family(f, size, dev, n, refresh, seed) for f in families}
    figures: dict = {"bench": "thirdparty", "size": size, "device": str(dev), "refresh": refresh, "cases": n}
    if dev.type == "cuda":
        figures["gpu"] = torch.cuda.get_device_name(dev)
    for key in HEADLINE:
        figures[key] = per[families[0]][key] if len(families) == 1 else {f: per[f][key] for f in families}
    figures["families"] = per
    print(json.dumps(figures), flush=True)
    return figures


def parser() -> argparse.ArgumentParser:
    """`python -m model.reports.thirdparty`: the flags of `hone bench thirdparty` (lsp_server.cli, which must not
    import torch to build its parser), without the rest of the hone command."""
    p = argparse.ArgumentParser(prog="python -m model.reports.thirdparty", description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="both", choices=[*FAMILIES, "both"])
    p.add_argument("--size", default="small", choices=list(SIZES), help="tiny (tests), small (~100M, CPUs) or 7b")
    p.add_argument("--cases", type=int, default=None, help=f"cases per kind (default {DEFAULT_CASES})")
    p.add_argument("--refresh", default=BENCH_REFRESH, choices=list(CACHE_REFRESH), help="the cached path's "
                   "refresh (block: after CACHE_BLOCK committed slots; step: every step, exact)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all free cores)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    run(a.family, a.size, a.device, a.cases, a.refresh, a.seed, a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
