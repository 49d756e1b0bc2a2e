"""The server and adapted models: the workspace's adapted model answers (the default when it is missing or broken),
and idle adaptation's child process stops at the first request (lsp_server.adaptation)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from lsp_server.adaptation import IdleAdapter, needs_adapting
from model import DEFAULT_MODEL_DIR
from model.adapted import AdaptInfo, adapted_dir, install, model_fingerprint
from model.testing import make_tiny_model
from lsp_server.server import plain as lsp_plain

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process states are read from /proc")


def _stopped(pid: int, within: float = 5.0, want: bool = True) -> bool:
    """Whether the process is stopped (state T in /proc/PID/stat), waiting up to `within` seconds for it to be `want`
    (a signal lands a moment after it is sent)."""
    deadline = time.monotonic() + within
    while True:
        stopped = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
        if stopped == want or time.monotonic() > deadline:
            return stopped
        time.sleep(0.02)


def _adapt_here(root: Path, kept: bool = True, model: Path | None = None) -> None:
    info = AdaptInfo(root=str(root), base=str(DEFAULT_MODEL_DIR), base_fingerprint=model_fingerprint(DEFAULT_MODEL_DIR),
                     kept=kept, before={"heldout_masked_ce": 2.0}, after={"heldout_masked_ce": 1.9}, finished=time.time())
    install(model, str(root), info)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HONE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_idle_adaptation_stops_at_a_request_and_continues_when_quiet(tmp_path, cache):
    clock = [0.0]
    done = []
    script = "import json, time; time.sleep(1.5); print(json.dumps({'kept': True, 'before': {}, 'after': {}, " \
             "'steps': 3, 'minutes': 0.1}))"
    adapter = IdleAdapter(lambda root, kept: done.append((root, kept)), clock=lambda: clock[0],
                          command=lambda root, base: [sys.executable, "-c", script], idle_start_s=10, idle_resume_s=2,
                          background=False)
    adapter.configure("idle", str(tmp_path), DEFAULT_MODEL_DIR)
    adapter.tick()
    assert adapter.stats()["state"] == "waiting" and adapter.runs == 0  # not quiet for long enough yet
    clock[0] = 11.0
    adapter.tick()
    pid = adapter._proc.pid
    assert adapter.stats()["state"] == "running" and not _stopped(pid, within=0)
    adapter.request_started()  # a keystroke: stopped at once
    assert _stopped(pid) and adapter.stats()["state"] == "paused"
    adapter.request_ended()
    clock[0] = 12.0
    adapter.tick()
    assert _stopped(pid, within=0.3, want=False)  # not quiet long enough to continue
    clock[0] = 14.5
    adapter.tick()
    assert not _stopped(pid, want=False) and adapter.pauses == 1
    deadline = time.monotonic() + 30
    while not done and time.monotonic() < deadline:
        adapter.tick()
        time.sleep(0.1)
    assert done == [(str(tmp_path), True)]
    assert adapter.stats()["last"]["kept"] is True and adapter.stats()["last"]["steps"] == 3
    clock[0] = 100.0
    adapter.tick()
    assert adapter.runs == 1  # once per root per server run
    adapter.close()


def test_a_current_adaptation_is_not_redone(tmp_path, cache):
    assert needs_adapting(str(tmp_path), DEFAULT_MODEL_DIR) == "never adapted"
    _adapt_here(tmp_path, kept=False)
    assert needs_adapting(str(tmp_path), DEFAULT_MODEL_DIR) == ""
    assert needs_adapting(str(tmp_path), DEFAULT_MODEL_DIR, now=time.time() + 2 * 86400) == "adapted more than a day ago"


def test_the_service_answers_with_the_workspaces_adapted_model_and_falls_back(tmp_path, cache, lsp_fake_engine):
    root = tmp_path / "proj"
    root.mkdir()
    _adapt_here(root, model=make_tiny_model(tmp_path / "staging"))
    adapted_model = str(adapted_dir(root) / "model")
    engine, loaded = lsp_fake_engine(), []

    def loader(target):
        loaded.append(target)
        if target.model == adapted_model and broken[0]:
            raise ValueError("corrupt weights")
        return engine

    from lsp_server.models import ModelManager, Target
    from lsp_server.service import Service

    for broken in ([False], [True]):
        loaded.clear()
        svc = Service(ModelManager(loader=loader), Target("", "cpu", False))
        svc.workspace.set_folders([root.as_uri()])
        svc.configure({}, initial=True)
        svc.models.future.result(30)
        stats = svc.adaptation_stats()
        assert loaded[0].model == adapted_model and loaded[0].adapted == str(root)
        if broken[0]:
            assert [t.model for t in loaded] == [adapted_model, ""]  # the default answers instead
            assert stats["inUse"] is None and "corrupt weights" in stats["loadError"]
            assert svc.status()["state"] == "ready"
        else:
            assert stats["inUse"] == str(root) and svc.models.label() == "default, adapted to proj"
        svc.close()
    svc = Service(ModelManager(loader=loader), Target("", "cpu", False))
    svc.workspace.set_folders([root.as_uri()])
    svc.configure({"useAdapted": False}, initial=True)
    assert svc.target().model == ""  # the setting turns it off
    svc.close()


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_hone_lsp_loads_the_workspaces_adapted_model_over_stdio(tmp_path, cache, lsp_start_client, lsp_stop_client,
                                                                     lsp_wait_status):
    root = tmp_path / "proj"
    root.mkdir()
    _adapt_here(root, model=make_tiny_model(tmp_path / "staging"))
    command = [sys.executable, "-m", "lsp_server", "--device", "cpu", "--no-compile"]  # no --model: the default's place
    client = await lsp_start_client({"grounding": False}, command=command, root=root, env={"HONE_CACHE": str(cache)})
    try:
        status = await lsp_wait_status(client, "ready", "error")
        assert status["state"] == "ready" and status["model"] == "default, adapted to proj"
        stats = await client.protocol.send_request_async("hone/stats", {})
        assert lsp_plain(stats)["adaptation"]["inUse"] == str(root)
    finally:
        await lsp_stop_client(client)
