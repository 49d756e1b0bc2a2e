"""The server process' memory: its resident size, and glibc's allocator kept from holding on to freed memory.

glibc gives each thread that allocates its own arena (up to 8 per core); freed blocks stay in the arena that held
them, so a server whose threads (stdin reader, worker, model loader, compile build) take turns allocating
tensors grows a little with every request. Two arenas and a trim after model runs keep it flat."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

ARENAS = 2  # glibc malloc arenas (M_ARENA_MAX): the event loop and the worker rarely allocate at the same moment
TRIM_EVERY_S = 30.0  # at most one malloc_trim (a few ms: it walks the arenas) per this many seconds while busy
QUIET_TRIM_S = 2.0  # and one once the server has been this long without a model run (off every request's path):
# 40 cold completions in a bare process left 412 MB resident, 383 after a trim
_M_ARENA_MAX = -8  # mallopt parameter (malloc.h)


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:  # not glibc (musl): nothing to tune
        return None


_LIBC = _libc()


def limit_arenas(n: int = ARENAS) -> bool:
    """Cap glibc's arenas (arenas made from now on); True if it took."""
    return bool(_LIBC is not None and _LIBC.mallopt(_M_ARENA_MAX, n))


def trim() -> None:
    """Hand memory freed inside the arenas back to the system."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


class Trimmer:
    """trim() at most once per TRIM_EVERY_S, called after model runs (maybe), and when the server has gone quiet
    (now)."""

    def __init__(self, every_s: float = TRIM_EVERY_S) -> None:
        self.every_s, self._last = every_s, float("-inf")
        self.trims = 0

    def maybe(self, now: float) -> None:
        if now - self._last >= self.every_s:
            self.now(now)

    def now(self, now: float) -> None:
        self._last = now
        trim()
        self.trims += 1


def rss_mb() -> float | None:
    """This process' resident set size in MB (Linux; None elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
    except (OSError, StopIteration, ValueError):
        return None
