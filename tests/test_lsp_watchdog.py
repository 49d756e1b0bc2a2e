"""The server exits with its editor: `initialize`'s processId is watched (lsp_server/watchdog.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import pytest
from lsprotocol import types
from pytest_lsp import client_capabilities

from conftest import REPO
from lsp_server import watchdog

EXIT_WITHIN_S = 2.0  # the bound, from the editor's death to the server's exit


def fake_editor() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def test_alive():
    editor = fake_editor()
    assert watchdog.alive(editor.pid)
    editor.kill()
    editor.wait()
    assert not watchdog.alive(editor.pid)
    assert not watchdog.alive(0)


def test_watch_calls_back_once_the_process_is_gone():
    editor = fake_editor()
    gone = threading.Event()
    assert watchdog.watch(editor.pid, gone.set, poll_s=0.05) is not None
    assert not gone.wait(0.2)
    editor.kill()  # not reaped at once: a zombie counts as gone too
    assert gone.wait(2)
    editor.wait()


def test_a_pid_that_is_not_there_is_not_watched():
    editor = fake_editor()
    editor.kill()
    editor.wait()
    assert watchdog.watch(editor.pid, lambda: None) is None


@pytest.mark.e2e
async def test_server_exits_when_the_editor_dies(lsp_start_client, lsp_stop_client):
    """The editor (a child process of its own) dies without shutdown or exit, and stdin stays open (the test
    process holds it): the server still exits within 2 s."""
    editor = fake_editor()
    client = await lsp_start_client(initialize=False)
    try:
        await client.initialize_session(types.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"), process_id=editor.pid, root_uri=REPO.as_uri()))
        server = client._server
        await asyncio.sleep(0.3)
        assert server.returncode is None
        t0 = time.monotonic()
        editor.kill()
        editor.wait()
        await asyncio.wait_for(server.wait(), 10)
        assert time.monotonic() - t0 < EXIT_WITHIN_S
    finally:
        if editor.poll() is None:
            editor.kill()
            editor.wait()
        if client._server is not None and client._server.returncode is None:
            await lsp_stop_client(client)
        else:
            await client.stop()
