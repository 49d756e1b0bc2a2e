"""`hone bench steps` on a tiny spm network: each way's steps agree with eager, and the limits are figures."""

from model.reports.steps import run


def test_bench_steps_times_each_way_against_eager(spm_dir):
    figs = run(str(spm_dir), threads=1, reps=2, ways=("eager", "aotinductor", "onnxruntime"))
    aot = figs["ways"]["aotinductor"]
    for n, limits in figs["limits"].items():
        assert limits["flop_ms"] > 0 and limits["weight_read_ms"] > 0
        assert aot[n]["canvas_ms"] > 0 and aot[n]["stream_ms"] > 0 and aot[n]["max_abs_diff"] < 1e-3
        assert figs["ways"]["eager"][n]["max_abs_diff"] == 0
    ort = figs["ways"]["onnxruntime"]  # an optional dependency: measured when installed, else said so
    assert ort.get("error", "").startswith("not installed") or all(ort[n]["max_abs_diff"] < 1e-3 for n in figs["limits"])
