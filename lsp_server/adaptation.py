"""Idle adaptation (user setting `adapt: idle`): `hone adapt` on the workspace root in a child process at the lowest
priority, started after IDLE_START_S without a request, stopped (SIGSTOP: at once, no core used) when a request comes
and continued after IDLE_RESUME_S of quiet. A kept result is installed as the root's adapted model (model.adapted) and
swapped in by the server between requests. One child at a time; each root at most once per server run, again only
when its adaptation is missing, older than STALE_S or made from another base model.

Memory and disk: the child is a second Python process with torch (peak ~1.1 GB RSS while it trains, nothing after);
an adapted model takes ~20 MB on disk, at most model.adapted.MAX_ADAPTED of them are kept.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from model.adapted import adapted_dir, model_fingerprint, read_info

log = logging.getLogger(__name__)

IDLE_START_S = 60.0  # quiet before an adaptation starts
IDLE_RESUME_S = 3.0  # quiet before a stopped adaptation continues
STALE_S = 24 * 3600.0  # an adaptation older than this is made again
ADAPT_MINUTES = 5.0  # its training budget (CPU time of the child, pauses not counted)
POLL_S = 0.5
CHILD_NICE = 19


def needs_adapting(root: str, base: Path, now: float | None = None) -> str:
    """Why `root` should be adapted from `base` ("" when its adaptation is current)."""
    info = read_info(adapted_dir(root))
    if info is None:
        return "never adapted"
    if info.base_fingerprint != model_fingerprint(base):
        return "adapted from another base model"
    if (now or time.time()) - info.finished > STALE_S:
        return "adapted more than a day ago"
    return ""


def adapt_command(root: str, base: Path, minutes: float = ADAPT_MINUTES) -> list[str]:
    return [sys.executable, "-m", "lsp_server.cli", "adapt", root, "--model", str(base), "--minutes", str(minutes),
            "--cpu-time"]


class IdleAdapter:
    """Runs and pauses the adaptation child. `on_done(root, kept)` is called from its thread when a child ends."""

    def __init__(self, on_done: Callable[[str, bool], None] = lambda root, kept: None, *,
                 clock: Callable[[], float] = time.monotonic,
                 command: Callable[[str, Path], list[str]] = adapt_command,
                 idle_start_s: float = IDLE_START_S, idle_resume_s: float = IDLE_RESUME_S, background: bool = True) -> None:
        self.on_done, self._clock, self._command = on_done, clock, command
        self.idle_start_s, self.idle_resume_s = idle_start_s, idle_resume_s
        self._background = background  # a thread calls tick() every POLL_S (tests call it themselves)
        self._lock = threading.Lock()
        self._mode, self._root, self._base = "off", "", None
        self._proc: subprocess.Popen | None = None
        self._err = None
        self._paused = False
        self._active = 0  # requests running now
        self._last_request = clock()
        self._tried: set[str] = set()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.runs = 0
        self.pauses = 0
        self.last: dict = {}  # the last child's outcome: root, kept, held-out before/after, or its error

    # ---- what the server tells it ------------------------------------------------------------------

    def configure(self, mode: str, root: str, base: Path | None) -> None:
        """The setting, the workspace root to adapt ("" none) and the base model folder (None: not a local default
        model, nothing to adapt)."""
        with self._lock:
            self._mode, self._root, self._base = mode, root, base
            wanted = mode == "idle" and bool(root) and base is not None
        if not wanted:
            self._kill()
        elif self._background and (self._thread is None or not self._thread.is_alive()):
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="hone-adapt", daemon=True)
            self._thread.start()

    def request_started(self) -> None:
        """A request came: stop the child at once (it continues once the editor is quiet again)."""
        with self._lock:
            self._active += 1
            self._last_request = self._clock()
            if self._proc is not None and not self._paused and self._proc.poll() is None:
                self._signal(signal.SIGSTOP)
                self._paused = True
                self.pauses += 1

    def request_ended(self) -> None:
        with self._lock:
            self._active = max(0, self._active - 1)
            self._last_request = self._clock()

    # ---- the loop ------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - adaptation is optional; the server goes on without it
                log.exception("idle adaptation failed")
                self._kill()

    def tick(self) -> None:
        """One look: collect a finished child, continue a stopped one after quiet, start one after long quiet."""
        with self._lock:
            quiet = self._clock() - self._last_request if not self._active else 0.0
            proc, root, base, mode = self._proc, self._root, self._base, self._mode
        if proc is not None:
            if proc.poll() is not None:
                self._collect(proc)
            elif self._paused and quiet >= self.idle_resume_s:
                with self._lock:
                    if self._proc is proc and self._paused and not self._active:
                        self._signal(signal.SIGCONT)
                        self._paused = False
            return
        if mode != "idle" or not root or base is None or root in self._tried or quiet < self.idle_start_s:
            return
        self._tried.add(root)
        why = needs_adapting(root, base)
        if not why:
            return
        log.info("idle adaptation of %s starts (%s)", root, why)
        self._err = tempfile.TemporaryFile()  # its progress and errors (a pipe nobody reads could fill and block it)
        child = subprocess.Popen(self._command(root, base), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=self._err, preexec_fn=lambda: os.nice(CHILD_NICE))
        with self._lock:
            self._proc, self._paused = child, False
            self.runs += 1
            self.last = {"root": root, "state": "running", "why": why, "started": time.time()}

    def _collect(self, proc: subprocess.Popen) -> None:
        out, _ = proc.communicate()
        self._err.seek(0)
        err = self._err.read()[-4096:]
        self._err.close()
        root = self.last.get("root", "")
        result: dict = {"root": root, "state": "done", "exitCode": proc.returncode}
        try:
            info = json.loads(out.decode().strip().splitlines()[-1])
            result |= {"kept": info["kept"], "before": info["before"], "after": info["after"], "steps": info["steps"],
                       "minutes": round(info["minutes"], 2)}
        except (ValueError, IndexError, KeyError):
            lines = [x for x in err.decode(errors="replace").splitlines() if x.strip()]
            result |= {"state": "failed", "kept": False, "error": lines[-1] if lines else f"exit code {proc.returncode}"}
        with self._lock:
            self._proc, self._paused = None, False
            self.last = result
        log.info("idle adaptation of %s ended: %s", root, result)
        self.on_done(root, bool(result.get("kept")))

    def _signal(self, sig: int) -> None:
        try:
            self._proc.send_signal(sig)
        except (OSError, AttributeError):
            pass

    def _kill(self) -> None:
        with self._lock:
            proc, self._proc, self._paused = self._proc, None, False
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on its kill until continued
            proc.kill()
            proc.wait()

    def close(self) -> None:
        self._stop.set()
        self._kill()

    def stats(self) -> dict:
        with self._lock:
            state = ("paused" if self._paused else "running") if self._proc is not None else (
                "waiting" if self._mode == "idle" and self._root and self._base is not None else "off")
            return {"mode": self._mode, "state": state, "root": self._root, "runs": self.runs, "pauses": self.pauses,
                    "last": self.last}
