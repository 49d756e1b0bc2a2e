"""Post-processing of model text: brackets, overlap with the right of the cursor, repeats, indentation."""

from lsp_server.context import build_context
from lsp_server.postprocess import bracket_errors, clean, drop_line_overlap, drop_repeated_lines, reindent, strip_trailing


def test_bracket_errors():
    assert bracket_errors("print(f(x))") == 0
    assert bracket_errors("print(f(x)") == 1
    assert bracket_errors("foo(a, b))") == 1
    assert bracket_errors("s = ')' + x") == 0
    assert bracket_errors("x = 1  # )") == 0


def test_overlap_with_the_right_of_the_cursor():
    assert drop_line_overlap("a, b)", "foo(", ")") == "a, b"
    assert drop_line_overlap("f(x)", "print(", ")") == "f(x)"  # the ")" the model wrote closes f(
    assert drop_line_overlap("x):", "def f(", "):") == "x"
    assert drop_line_overlap("new_value", "return ", "value") == "new_"
    assert drop_line_overlap("41", "x = ", "1 + y") == "41"  # one digit may be new content
    assert drop_line_overlap("abc", "", "") == "abc"


def test_repeated_lines_and_reindent_and_trailing():
    assert drop_repeated_lines("x = 1\n    return x", "\n    return x\n") == "x = 1"
    assert drop_repeated_lines("x = 1", "\nx = 1") == "x = 1"
    assert reindent("if a:\n        b\n    c", "\t") == "if a:\n\t\tb\n\tc"
    assert reindent("if a:\n\tb", "    ") == "if a:\n    b"
    assert strip_trailing("a  \nb  \n  \n", keep_last=False) == "a\nb"
    assert strip_trailing("a + ", keep_last=True) == "a + "


def test_clean_end_to_end():
    ctx = build_context("def f(x):\r\n    ", len("def f(x):\r\n    "))
    assert clean("    return x  \n    y = 2\n\n", ctx) == "return x\r\n    y = 2"
    line = build_context("print(", 6)
    assert clean("x)\nmore", line) == "x)"
    mid = build_context("foo()", 4)
    assert clean("a, b)", mid) == "a, b"
    assert clean("   \n  ", mid) == ""
