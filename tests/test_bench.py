"""The engine benchmarks run on a tiny network and end with their JSON line."""

from __future__ import annotations

import json




def test_speed_bench_compares_diffusion_with_its_ar_twin(spm_dir, tmp_path, capsys):
    from model.reports.bench import run_speed
    from model.testing import sample_texts

    with open(tmp_path / "heldout.jsonl", "w") as f:  # a corpus's held-out split (here: three stdlib modules)
        for text in sample_texts():
            f.write(json.dumps({"path": "m.py", "text": text}) + "\n")
    figs = run_speed(str(spm_dir), n=2, threads=1, corpus=str(tmp_path))
    for key in ("speedup_vs_ar_block", "speedup_vs_ar_line", "em_diff_block", "em_diff_line",
                "speedup_canvas_drafts_vs_ar_line", "speedup_canvas_drafts_vs_ar_block", "same_text_line",
                "same_text_block", "accepted_per_forward_line", "accepted_per_forward_block"):
        assert isinstance(figs[key], float)
    assert figs["line.ar"]["forwards"] >= 1 and figs["block.diffusion τ=0.9"]["tokens_per_forward"] > 0
    assert figs["line.ar + n-gram drafts"]["forwards"] >= 1 and figs["cases"] == "heldout"
    assert figs["same_text_line"] == figs["same_text_block"] == 1.0  # canvas drafts never change the verified text
    out = capsys.readouterr().out
    assert "(held out)" in out and json.loads(out.strip().splitlines()[-1])["model"] == figs["model"]


def test_engine_bench_times_the_compiled_step_against_the_compute_limit(spm_dir):
    from model.reports.bench import run

    figs = run(str(spm_dir), n=2, threads=1, compile=True)
    assert figs["compiled"] == "compiled" and figs["compile_s"] > 0
    assert figs["step_ms_compiled"] > 0 and 0 < figs["step_ms_flop_limit"] < figs["step_ms_cached"]
    assert figs["ar.single_line"]["forwards"] >= 1
    ks = figs["keystroke"]
    assert ks["tokens_per_keystroke"] < 4 and ks["back_encoded"] == 0 and ks["jump_ms"] > 0  # a return is resumed
