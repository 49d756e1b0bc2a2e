"""What this machine offers a model: its free cores and its CPU's description. Standard library only, so the
language server, the service's driver and training read it without torch."""

from __future__ import annotations

import os
from pathlib import Path


def free_cores() -> int:
    """The cores this process may run on (its affinity; all of them where the OS does not say). Threads must match
    them: an oversubscribed CPU forward is many times slower."""
    affinity = getattr(os, "sched_getaffinity", None)
    return max(1, len(affinity(0)) if affinity else os.cpu_count() or 1)


def cpuinfo() -> str:
    """/proc/cpuinfo ("" off Linux): the CPU's model name and flags."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
