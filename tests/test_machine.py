"""model.machine: the free cores and the CPU's description, read once for the engine, the service and training."""

import os

from model.machine import cpuinfo, free_cores


def test_free_cores_are_this_process_affinity():
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert free_cores() == max(1, expected or 1)


def test_cpuinfo_is_text_even_off_linux(monkeypatch):
    assert isinstance(cpuinfo(), str)
    monkeypatch.setattr("model.machine.Path.read_text", lambda self: (_ for _ in ()).throw(OSError("no /proc")))
    assert cpuinfo() == ""
