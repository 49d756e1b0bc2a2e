"""model.engine.Engine: what it answers about its model (fit, limits) beside filling holes (tests/test_sampler.py)."""

from __future__ import annotations

import pytest

from conftest import CompilingBackend
from fit_cases import FIT_CASES, FIT_IDS
from model.types import Limits, SampleOptions, fit_options


def test_limits_come_from_the_model(engine, spm_engine):
    assert engine.limits == Limits(max_len=engine.max_len) and engine.max_len == 512  # the tiny preset's max_seq_len
    assert spm_engine.limits.max_len == spm_engine.max_len == 511  # the spm stream carries a second BOS


@pytest.mark.parametrize("case", FIT_CASES, ids=FIT_IDS)
def test_engine_fit_is_the_shared_rule_on_its_limits(case, engine):
    """Engine.fit answers the table's cases at its own model length (512 tokens) as types.fit_options does."""
    limits = engine.limits
    assert engine.fit(case.opts, case.holes, case.fixed) == fit_options(case.opts, limits, case.holes, case.fixed)


def test_engine_fit_shrinks_for_its_model(engine):
    fit = engine.fit(SampleOptions(max_tokens=400, prefix_budget=192, suffix_budget=64))
    assert fit.opts is not None and fit.opts.max_tokens == 512 - 3 - 192 - 64 and "253 slots per hole" in fit.reason
    assert engine.fit(SampleOptions(max_tokens=64)).reason == ""


def test_the_engine_keeps_its_compile_status():
    """Engine.compile records what happened in `steps` (the server's status and the service's /hone/stats read it):
    the backend's outcome, a failure as eager with its kind, or a backend that has nothing to compile."""
    import threading

    import torch

    from model.engine import Engine

    Backend = CompilingBackend

    cpu = torch.device("cpu")
    eng = Engine(Backend("compiled"), "m", cpu)
    assert eng.steps == "eager"
    done = threading.Event()
    thread = eng.compile_in_background(done.set)
    assert eng.steps == "compiling"  # at once, before the build has started
    eng.backend.release.set()
    assert done.wait(30) and eng.steps == "compiled"
    thread.join(30)
    failing = Engine(Backend(OSError("no compiler")), "m", cpu)
    failing.backend.release.set()
    assert failing.compile() == failing.steps == "eager (compiling failed: OSError)"
    assert Engine(object(), "m", cpu).compile() == "eager (this backend is not compiled)"
