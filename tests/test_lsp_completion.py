"""Engine requests from documents: options from settings, canvas fitting, holes, rewrites, complete_file."""


import pytest

from fit_cases import FIT_CASES, FIT_IDS
from lsp_server.completion import SpanPlan, find_holes, fitted, plan_completion, plan_fill, plan_rewrite, sample_options
from lsp_server.settings import Settings
from model.types import MAX_HOLES, MAX_TOKENS, SampleOptions


def test_sample_options_follow_settings():
    o = sample_options(Settings(max_tokens=12, threshold=0.7, commit_rule="entropy", deadline_ms=0), mode="line")
    assert (o.max_tokens, o.threshold, o.rule, o.deadline_s, o.mode) == (12, 0.7, "entropy", None, "line")
    assert sample_options(Settings(deadline_ms=250)).deadline_s == 0.25
    o.validate()


@pytest.mark.parametrize("case", FIT_CASES, ids=FIT_IDS)
def test_the_server_shrinks_with_engine_fit(case, lsp_fake_engine):
    """The server goes on with what Engine.fit says fits, and fails with its reason only when nothing does."""
    engine = lsp_fake_engine()
    engine.max_len = case.max_len
    fit = engine.fit(case.opts, case.holes, case.fixed)
    case.check(fit, lambda opts: engine.fit(opts, case.holes, case.fixed))
    plan = SpanPlan(case.pieces(), [(0, 0)] * case.holes, case.opts, "\n")  # fixed: counted by the engine
    if case.fits is None:
        with pytest.raises(ValueError) as e:
            plan.fit(engine)
        assert str(e.value) == fit.reason
    else:
        assert plan.fit(engine).opts == fitted(engine, case.opts, case.holes, case.fixed) == fit.opts


def test_plans_fit_the_engine(lsp_fake_engine):
    engine = lsp_fake_engine()
    engine.max_len = 300
    plan = plan_completion("a = ", 4, Settings(max_tokens=200), engine, SampleOptions(prefix_budget=192, suffix_budget=64))
    assert plan.opts.max_tokens == 300 - 3 - 192 - 64
    assert plan_completion("a = ", 4, Settings(max_tokens=200)).opts.max_tokens == 200  # no engine: as asked
    big = plan_rewrite("a = b\n", 4, 5, n_tokens=5000, settings=Settings()).fit(lsp_fake_engine())
    assert big.opts.max_tokens == big.opts.initial_slots == MAX_TOKENS  # the ceiling, even when the model is long


def test_plan_completion_windows_and_mode():
    text = "x = 1\n" * 5000 + "def f():\n    \n" + "y = 2\n" * 5000
    plan = plan_completion(text, text.index("    \n") + 4, Settings(max_tokens=40))
    assert plan.opts.mode == "block" and plan.opts.block_indent == 4 and plan.opts.max_tokens == 40
    assert not plan.opts.doc_end
    assert plan_completion("a = ", 4, Settings()).opts.doc_end


def test_holes(lsp_fake_engine):
    assert find_holes("a ??? b ???? c") == [2, 8]
    assert plan_fill("no holes", Settings()) is None
    plan = plan_fill("a = ???\r\nb = ???\r\n", Settings(max_tokens=7))
    assert plan.pieces == ["a = ", "\nb = ", "\n"] and plan.spans == [(4, 7), (13, 16)] and plan.eol == "\r\n"
    assert plan.opts.max_tokens == 7 and plan.opts.mode == "free"
    assert plan.finish(["x  \ny", "z"]) == ["x\r\ny", "z"]
    with pytest.raises(ValueError, match="at most"):
        plan_fill("???" * (MAX_HOLES + 1), Settings()).fit(lsp_fake_engine())
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


def test_a_line_that_repeats_gets_the_copy_hint_from_the_whole_document(lsp_fake_engine):
    """The hint is looked for in the whole document, far beyond the model's window, CRLF or not."""
    from lsp_server.completion import complete_file

    engine = lsp_fake_engine("x")
    far = "v = config.verbose or quiet\r\n" + "pass\r\n" * 3000  # ~20k characters before the cursor
    complete_file(engine, far + "w = config.verbose", 3001, 18)
    assert engine.hints[-1] == [" or quiet"]
    complete_file(engine, "nothing repeats here\n", 0, 20)
    assert engine.calls[-1][0] == "infill"  # no hint, no cross-file context: the plain one-hole call
