"""`hone bench thirdparty` (model.reports.thirdparty) on tiny random families, its GPU script rehearsed on the CPU,
and the user's cache refresh setting (hf.cache_refresh_setting)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.backends.families import BidirectionalLM
from model.backends.hf import CACHE_REFRESH, CACHE_REFRESH_ENV, DEFAULT_CACHE_REFRESH, HFBackend, cache_refresh_setting
from model.reports import thirdparty
from model.reports.thirdparty import HEADLINE, IdTokenizer, family_shape, random_network

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def test_tiny_bench_prints_lines_then_the_json_per_family(capsys):
    figs = thirdparty.run("both", "tiny", "cpu", cases=1, refresh="block", threads=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[-1]) == json.loads(json.dumps(figs))
    assert any("recompute p50" in ln for ln in lines) and any("token agreement" in ln for ln in lines)
    for key in HEADLINE:
        assert set(figs[key]) == {"qwen2", "llada"}
        assert all(isinstance(v, float) and v > 0 for v in figs[key].values())
    for fam in ("qwen2", "llada"):
        f = figs["families"][fam]
        assert f["line"]["slots"] == 16 and f["block"]["slots"] == 64
        for kind in ("line", "block"):
            assert f[kind]["recompute"]["forwards"] >= 1 and f[kind]["cached"]["full_forwards"] >= 1
            assert f[kind]["cached"]["p50_ms"] > 0


def test_one_family_gives_plain_numbers_and_step_refresh_agrees_exactly():
    figs = thirdparty.run("llada", "tiny", "cpu", cases=1, refresh="step", threads=1)
    assert figs["token_agreement_line"] == 1.0 and figs["token_agreement_block"] == 1.0
    assert figs["families"]["llada"]["block"]["cached"]["full_forwards"] == figs["families"]["llada"]["block"]["cached"]["forwards"]


def _params(family: str, size: str) -> int:
    c, _ = family_shape(family, size)
    with torch.device("meta"):
        return sum(p.numel() for p in BidirectionalLM(c).parameters())


def test_sizes_are_the_published_shapes():
    assert 7.5e9 < _params("qwen2", "7b") < 7.7e9  # Dream 7B: 7.62B with its untied head
    assert 7.9e9 < _params("llada", "7b") < 8.1e9  # LLaDA 8B
    assert all(80e6 < _params(f, "small") < 120e6 for f in ("qwen2", "llada"))
    assert family_shape("llada", "7b")[1]["mask"] == 126336
    with pytest.raises(ValueError, match="qwen2"):
        family_shape("gpt2", "small")
    with pytest.raises(ValueError, match="7b"):
        family_shape("qwen2", "13b")


def test_random_network_is_drawn_in_the_asked_dtype():
    c, _ = family_shape("qwen2", "tiny")
    net = random_network(c, CPU, torch.bfloat16, seed=1)
    assert {p.dtype for p in net.parameters()} == {torch.bfloat16}
    assert float(net.layers[0].attn_norm.weight.detach().float().mean()) == 1.0
    assert float(net.layers[0].attn.q.bias.detach().abs().sum()) == 0
    assert torch.equal(net.embed.weight, random_network(c, CPU, torch.bfloat16, seed=1).embed.weight)


def test_id_tokenizer_round_trips_without_line_breaks():
    tok = IdTokenizer(mask=511, eos=510)
    ids = [0, 10, 509, 152063]
    assert tok.encode(tok.decode(ids)) == ids and "\n" not in tok.decode(list(range(512)))


def test_cache_refresh_setting(monkeypatch):
    monkeypatch.delenv(CACHE_REFRESH_ENV, raising=False)
    assert cache_refresh_setting() == DEFAULT_CACHE_REFRESH and DEFAULT_CACHE_REFRESH in CACHE_REFRESH
    monkeypatch.setenv(CACHE_REFRESH_ENV, "block")
    assert cache_refresh_setting() == "block" and cache_refresh_setting("step") == "step"  # an explicit value wins
    c, specials = family_shape("llada", "tiny")
    be = HFBackend.of_network(random_network(c, CPU, torch.float32), IdTokenizer(**specials), CPU, "llada")
    assert be.cache_refresh == "block" and be.mask_id == specials["mask"] and not be.shifted
    monkeypatch.setenv(CACHE_REFRESH_ENV, "sometimes")
    with pytest.raises(ValueError, match=f"{CACHE_REFRESH_ENV}.*block"):
        cache_refresh_setting()


def test_hone_bench_has_the_module_parsers_flags():
    import argparse

    from lsp_server import cli

    p = argparse.ArgumentParser()
    cli._args_bench(p.add_subparsers())
    ours = vars(p.parse_args(["bench", "thirdparty"]))
    theirs = vars(thirdparty.parser().parse_args([]))
    for key in ("family", "size", "cases", "refresh", "device", "threads", "seed"):
        assert ours[key] == theirs[key], key


def test_gpu_check_script_rehearses_on_the_cpu(tmp_path):
    """scripts/gpu_check.sh end to end at tiny size: PYTHONPATH from the tree, one JSON with both families."""
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "HONE_GPU_CHECK_SIZE": "tiny",
           "HONE_GPU_CHECK_DEVICE": "cpu", "HONE_GPU_CHECK_CASES": "1", "HONE_GPU_CHECK_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    figs = json.loads((tmp_path / "thirdparty.json").read_text())
    assert set(figs["families"]) == {"qwen2", "llada"} and figs["size"] == "tiny"
    assert set(figs["speedup_cached_vs_recompute_block"]) == {"qwen2", "llada"}
    assert "size=tiny" in (tmp_path / "env.txt").read_text()
