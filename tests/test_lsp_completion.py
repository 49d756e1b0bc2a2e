"""Engine requests from documents: options from settings, canvas fitting, holes, rewrites, complete_file."""


import pytest

from lsp_server.completion import (MAX_HOLES, engine_max_len, find_holes, fit_canvas, plan_completion, plan_fill,
                                   plan_rewrite, sample_options)
from lsp_server.settings import Settings
from model.types import SampleOptions


def test_sample_options_follow_settings():
    o = sample_options(Settings(max_tokens=12, threshold=0.7, commit_rule="entropy", deadline_ms=0), mode="line")
    assert (o.max_tokens, o.threshold, o.rule, o.deadline_s, o.mode) == (12, 0.7, "entropy", None, "line")
    assert sample_options(Settings(deadline_ms=250)).deadline_s == 0.25
    o.validate()


def test_fit_canvas():
    base = SampleOptions(max_tokens=500, prefix_budget=192, suffix_budget=64, initial_slots=500)
    fitted = fit_canvas(base, 512)
    assert fitted.max_tokens == 512 - 2 - 192 - 64 and fitted.initial_slots == fitted.max_tokens
    assert fit_canvas(base, None) is base
    assert fit_canvas(SampleOptions(max_tokens=32), 1024).max_tokens == 32
    tight = fit_canvas(SampleOptions(max_tokens=64), 200, holes=3, fixed=20)  # budgets shrink, slots stay ≥ 16
    assert tight.max_tokens == 16 and 1 + tight.prefix_budget + 3 * 16 + 20 + tight.suffix_budget + 1 <= 200
    with pytest.raises(ValueError):
        fit_canvas(SampleOptions(), 100, holes=2, fixed=90)


def test_engine_max_len(tmp_path):
    from model.engine import Engine
    from model.testing import make_tiny_model

    engine = Engine.load(make_tiny_model(tmp_path / "m"), "cpu", threads=1)
    assert engine_max_len(engine) == engine.backend.model.cfg.max_seq_len == 512
    assert engine_max_len(object()) is None


def test_plan_completion_windows_and_mode():
    text = "x = 1\n" * 5000 + "def f():\n    \n" + "y = 2\n" * 5000
    plan = plan_completion(text, text.index("    \n") + 4, Settings(max_tokens=40))
    assert plan.opts.mode == "block" and plan.opts.block_indent == 4 and plan.opts.max_tokens == 40
    assert not plan.opts.doc_end
    assert plan_completion("a = ", 4, Settings()).opts.doc_end


def test_holes():
    assert find_holes("a ??? b ???? c") == [2, 8]
    assert plan_fill("no holes", Settings()) is None
    plan = plan_fill("a = ???\r\nb = ???\r\n", Settings(max_tokens=7))
    assert plan.pieces == ["a = ", "\nb = ", "\n"] and plan.spans == [(4, 7), (13, 16)] and plan.eol == "\r\n"
    assert plan.opts.max_tokens == 7 and plan.opts.mode == "free"
    assert plan.finish(["x  \ny", "z"]) == ["x\r\ny", "z"]
    with pytest.raises(ValueError, match="at most"):
        plan_fill("???" * (MAX_HOLES + 1), Settings())
    with pytest.raises(ValueError, match="span"):
        plan_fill("??? " + "x" * 20_000 + " ???", Settings())


def test_rewrite_hole_size():
    plan = plan_rewrite("a = old_value + 1\n", 4, 17, n_tokens=6, settings=Settings())
    assert plan.pieces == ["a = ", "\n"] and plan.spans == [(4, 17)]
    assert plan.opts.initial_slots == 6 and plan.opts.max_tokens == 14
    empty = plan_rewrite("abc", 2, 1, n_tokens=0, settings=Settings(max_tokens=9))  # reversed range
    assert empty.spans == [(1, 2)] and empty.opts.max_tokens == 9


def test_complete_file_uses_utf16_columns(lsp_fake_engine):
    from lsp_server.completion import complete_file

    engine = lsp_fake_engine("len(s)  ")
    out = complete_file(engine, "s = '😀'\nn = \n", 1, 4)
    assert out == "len(s)"
    _, prefix, suffix, opts = engine.calls[-1]
    assert prefix == "s = '😀'\nn = " and suffix == "\n" and opts.mode == "line"
    complete_file(engine, "s = '😀' + ", 0, 11)  # 11 UTF-16 units: the emoji counts two
    assert engine.calls[-1][1] == "s = '😀' + "
