"""`hone bench lsp` runs end to end on the tiny model and ends with one JSON line of figures."""

import json
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.e2e
def test_bench_lsp_smoke(lsp_tiny_model, lsp_server_env):
    cmd = [sys.executable, "-m", "lsp_server.bench", "--model", str(lsp_tiny_model), "--lines", "2", "--cps", "25",
           "--max-tokens", "4", "--cancel-trials", "1"]
    proc = subprocess.run(cmd, cwd=REPO, env=lsp_server_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert len(lines) > 3  # human-readable lines first
    for key in ("inline_p50_ms", "inline_p95_ms", "cache_hit_rate", "cancel_to_ack_p50_ms",
                "startup_to_first_completion_ms", "keystrokes", "model_runs"):
        assert key in figures
    assert figures["keystrokes"] > 0 and figures["model"] == "tiny"
    assert figures["cancel_to_ack_p50_ms"] < 2000
    # the server's debug log has a line per model run; the bench reads the typing replay's runs back from it
    assert 0 < figures["runs_logged"] <= figures["model_runs"] and figures["run_p50_ms"] > 0
    assert any(line.startswith("model runs while typing") for line in lines)


@pytest.mark.e2e
def test_bench_lsp_cold_files(lsp_tiny_model, lsp_server_env):
    """--cold: one explicit request per newly opened file; --empty-cache starts the server on a temporary cache."""
    cmd = [sys.executable, "-m", "lsp_server.bench", "--model", str(lsp_tiny_model), "--cold", "3", "--max-tokens", "4",
           "--empty-cache", "--eager"]
    proc = subprocess.run(cmd, cwd=REPO, env=lsp_server_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["cold_requests"] == 3 and figures["cold_during_build"] + figures["cold_ready"] == 3
    assert figures["empty_cache"] and any(line.startswith("empty compile cache: ") for line in lines)
    assert any(line.startswith("cold-file requests") for line in lines)


@pytest.mark.e2e
def test_bench_lsp_cold_files_with_the_cursor_placed_first(lsp_tiny_model, lsp_server_env):
    """--prefetch-ms: the cursor is placed (hone/cursor) and rests before the last keystroke, so the server computes
    the completion there ahead; the figures say how many were."""
    cmd = [sys.executable, "-m", "lsp_server.bench", "--model", str(lsp_tiny_model), "--cold", "3", "--max-tokens", "4",
           "--eager", "--prefetch-ms", "400"]
    proc = subprocess.run(cmd, cwd=REPO, env=lsp_server_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["cold_requests"] == 3 and figures["cold_prefetch_ms"] == 400
    assert 1 <= figures["cold_prefetched"] <= 3  # (a slow CI machine may not finish every one in time)
