"""Exit with the editor: LSP's `initialize` names the client's processId, and a server whose client is gone
should exit (the spec's words). pygls records the id but does not watch it; this does, by polling."""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Callable

log = logging.getLogger(__name__)

POLL_S = 0.5  # the server exits within this (plus its own shutdown) of the editor's death


def alive(pid: int) -> bool:
    """Whether process `pid` exists and has not exited."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return _alive_windows(pid)
    try:
        os.kill(pid, 0)  # signal 0: existence and permission check only
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Linux: a dead process its parent has not reaped yet still answers signal 0."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def _alive_windows(pid: int) -> bool:
    import ctypes

    SYNCHRONIZE, WAIT_TIMEOUT = 0x00100000, 0x102
    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(SYNCHRONIZE, False, pid)
    if not handle:
        return False
    try:
        return kernel32.WaitForSingleObject(handle, 0) == WAIT_TIMEOUT
    finally:
        kernel32.CloseHandle(handle)


def watch(pid: int, on_gone: Callable[[], None], poll_s: float = POLL_S) -> threading.Event | None:
    """Call `on_gone()` (from a daemon thread) once process `pid` no longer exists. Returns an event that stops
    the watch, or None when `pid` is not alive to begin with: an editor in another PID namespace (a container)
    sends an id this process cannot see, and exiting at once would make the server unusable there."""
    if not alive(pid):
        log.warning("the client's processId %d is not visible from here; not watching it", pid)
        return None
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(poll_s):
            if not alive(pid):
                log.info("the editor (process %d) is gone; exiting", pid)
                on_gone()
                return

    threading.Thread(target=run, name="hone-parent-watch", daemon=True).start()
    return stop
