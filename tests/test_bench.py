"""The engine benchmarks run on a tiny network and end with their JSON line."""

from __future__ import annotations

import json




def test_speed_bench_compares_diffusion_with_its_ar_twin(spm_dir, capsys):
    from model.reports.bench import run_speed

    figs = run_speed(str(spm_dir), n=2, threads=1)
    for key in ("speedup_vs_ar_block", "speedup_vs_ar_line", "em_diff_block", "em_diff_line"):
        assert isinstance(figs[key], float)
    assert figs["line.ar"]["forwards"] >= 1 and figs["block.diffusion τ=0.9"]["tokens_per_forward"] > 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model"] == figs["model"]
