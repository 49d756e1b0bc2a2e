"""Context windows, sanitising, and the line/block decision."""

from hypothesis import given
from hypothesis import strategies as st

from lsp_server.context import (MAX_WINDOW_CHARS, WINDOW_GRID, build_context, cut_after, cut_before, decide_mode, detect_indent_unit,
                                sanitize)

chars = st.sampled_from(list("ab :(\t") + ["\n", "\r\n", "\r", "😀", "\ud800", "\x00", "\u2028"])
texts = st.lists(chars, max_size=300).map("".join)


@given(texts, st.integers(0, 400), st.integers(1, 80))
def test_windows_are_bounded_and_adjacent(text, offset, limit):
    offset = min(offset, len(text))
    before, at_start = cut_before(text, offset, limit)
    after, at_end = cut_after(text, offset, limit)
    assert len(before) <= limit + WINDOW_GRID and len(after) <= limit
    assert text[:offset].endswith(before) and text[offset:].startswith(after)
    assert at_start == (len(before) == offset) and at_end == (len(after) == len(text) - offset)


def test_prefix_window_start_stays_put_while_typing():
    text = "".join(f"line_{i} = {i}\n" for i in range(2000))
    starts = set()
    for typed in range(200):  # the cursor moves 200 characters: the cut prefix keeps its first line
        before, _ = cut_before(text, 10_000 + typed, 3072)
        starts.add(10_000 + typed - len(before))
    assert len(starts) == 1


@given(texts)
def test_sanitize_is_tokenizable_and_normalises_line_ends(text):
    out = sanitize(text)
    out.encode("utf-8")  # no lone surrogates left
    assert "\r" not in out
    assert out.count("\n") == text.count("\n") + text.count("\r") - text.count("\r\n")


@given(texts, st.integers(0, 400))
def test_context_never_fails_and_splits_at_the_cursor(text, offset):
    ctx = build_context(text, offset)
    assert ctx.mode in ("line", "block") and ctx.block_indent >= 0
    assert ctx.prefix.endswith(ctx.line_prefix) and ctx.suffix.startswith(ctx.line_suffix)
    assert "\n" not in ctx.line_prefix + ctx.line_suffix


def test_big_document_windows():
    text = "x = 1\n" * 1_000_000
    ctx = build_context(text, len(text) // 2)
    assert len(ctx.prefix) <= MAX_WINDOW_CHARS and len(ctx.suffix) <= MAX_WINDOW_CHARS
    assert not ctx.doc_end
    assert ctx.prefix.startswith("x = 1")  # cut at a line start
    small = build_context("a = 1\nb", 7)
    assert small.doc_end


def test_mode_decision():
    assert decide_mode("auto", "    x = ", "", "def f():") == ("line", 0)  # text left of the cursor
    assert decide_mode("auto", "    ", "foo)", "def f():") == ("line", 0)  # text right of the cursor
    assert decide_mode("auto", "    ", "", "def f():") == ("block", 4)
    assert decide_mode("auto", "", "", "def f():  # a comment") == ("block", 1)  # editor did not indent
    assert decide_mode("auto", "        ", "", "    items = [") == ("block", 8)
    assert decide_mode("auto", "    ", "", "    x = 1") == ("line", 0)
    assert decide_mode("auto", "", "", None) == ("line", 0)
    assert decide_mode("line", "    ", "", "def f():") == ("line", 0)
    assert decide_mode("block", "    ", "", "x = 1") == ("block", 4)


def test_build_context_crlf_and_tabs():
    text = "class A:\r\n\tdef f(self):\r\n\t\t"
    ctx = build_context(text, len(text))
    assert ctx.eol == "\r\n" and ctx.indent_unit == "\t"
    assert ctx.mode == "block" and ctx.block_indent == 2
    assert "\r" not in ctx.prefix
    assert detect_indent_unit(["def f():", "    pass"]) == "    "
