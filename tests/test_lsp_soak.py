"""`hone bench soak` runs briefly on the tiny model: every request is answered and the figures end in one JSON line."""

import json
import subprocess
import sys

import pytest

from conftest import REPO

KEYS = ("requests", "answered", "lost", "rss_start_mb", "rss_warm_mb", "rss_end_mb", "growth_after_warmup_mb",
        "rss_quiet_mb", "p50_ms", "p95_ms")


@pytest.mark.e2e
def test_soak_smoke(lsp_tiny_model, lsp_server_env):
    cmd = [sys.executable, "-m", "lsp_server.soak", "--model", str(lsp_tiny_model), "--requests", "150",
           "--report-every", "50", "--seed", "3"]
    proc = subprocess.run(cmd, cwd=REPO, env=lsp_server_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    for key in KEYS:
        assert key in figures, key
    assert figures["requests"] == 150 and figures["answered"] == 150 and figures["lost"] == 0
    assert figures["errors"] > 0  # the junk got its error answers
    assert figures["rss_end_mb"] > 0 and figures["p95_ms"] >= figures["p50_ms"] > 0
    assert figures["server_counters"]["cancelled"] > 0  # $/cancelRequest reached running requests
    mem = figures["server_memory"]  # hone/stats: the process' RSS and each cache against its bounds
    assert mem["rssMb"] > 0
    for name in ("recentContexts", "typedThrough", "debounce", "contextStreams"):
        cache = mem["caches"][name]
        assert cache["entries"] <= cache["maxEntries"] and cache["bytes"] <= cache["maxBytes"]  # both bounds, each
    rows = [r for r in map(str.split, lines) if len(r) == 6 and all(x.replace(".", "").isdigit() for x in r)]
    assert len(rows) == 3 and all(float(r[3]) > 0 for r in rows)  # RSS every 50 requests
