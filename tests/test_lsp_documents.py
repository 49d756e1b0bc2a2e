"""Documents: LSP line endings, UTF-16/8/32 positions, clamping, and incremental edits (hypothesis)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsp_server.documents import UTF8, UTF16, UTF32, Document, col_to_index, index_to_col

# text that exercises every line-ending rule and every UTF-16 width, plus characters str.splitlines
# would wrongly treat as line breaks
ALPHABET = st.sampled_from(["a", "b", " ", "\t", "\n", "\r", "\r\n", "é", "€", "😀", "𝄞", "\x0c", "\x1c", "\u2028",
                            "\x00", "\ud800", "\udfff"])
texts = st.lists(ALPHABET, max_size=40).map("".join)
ENCODINGS = st.sampled_from([UTF16, UTF8, UTF32])


def units(s: str, enc: str) -> int:
    if enc == UTF16:
        return len(s.encode("utf-16-le", "surrogatepass")) // 2
    if enc == UTF8:
        return len(s.encode("utf-8", "surrogatepass"))
    return len(s)


def line_count(doc: Document) -> int:
    return len(doc.starts)


def line_text(doc: Document, line: int) -> str:
    start, end = doc.line_bounds(line)
    return doc.text[start:end]


def lsp_lines(text: str) -> list[str]:
    """Reference split: only \\n, \\r\\n and \\r end a line."""
    out, cur, i = [], [], 0
    while i < len(text):
        if text.startswith("\r\n", i):
            out.append("".join(cur)), cur.clear()
            i += 2
            continue
        if text[i] in "\r\n":
            out.append("".join(cur)), cur.clear()
        else:
            cur.append(text[i])
        i += 1
    out.append("".join(cur))
    return out


@given(texts)
def test_lines_follow_lsp_rules(text):
    doc = Document("u", text)
    assert [line_text(doc, i) for i in range(line_count(doc))] == lsp_lines(text)


@given(texts, ENCODINGS)
def test_offset_position_roundtrip(text, enc):
    doc = Document("u", text, encoding=enc)
    for line in range(line_count(doc)):
        start, end = doc.line_bounds(line)
        for off in range(start, end + 1):
            pos = doc.position_at(off)
            assert pos == (line, units(text[start:off], enc))
            assert doc.offset_at(*pos) == off


@given(texts, st.integers(0, 50), st.integers(0, 200), ENCODINGS)
def test_any_position_is_clamped_inside_the_document(text, line, character, enc):
    doc = Document("u", text, encoding=enc)
    off = doc.offset_at(line, character)
    assert 0 <= off <= len(text)
    if line >= line_count(doc):
        assert off == len(text)
    else:
        start, end = doc.line_bounds(line)
        assert start <= off <= end
        assert units(text[start:off], enc) <= character  # rounds down, never past the asked column


def test_surrogate_pairs_and_crlf():
    doc = Document("u", "x = '😀'\r\ny")
    assert doc.offset_at(0, 5) == 5  # after the quote, before the emoji
    assert doc.offset_at(0, 6) == 5  # the middle of the surrogate pair rounds down
    assert doc.offset_at(0, 7) == 6
    assert doc.offset_at(0, 99) == 7  # past the end of the line: its end, not into "\r\n"
    assert doc.position_at(8) == (0, 8)  # between "\r" and "\n": end of line 0
    assert doc.offset_at(1, 0) == 9
    assert doc.offset_at(7, 0) == len(doc.text)


def test_negative_and_utf8_columns():
    assert col_to_index("é€😀", -3) == 0
    assert col_to_index("é€😀", 2, UTF8) == 1
    assert col_to_index("é€😀", 4, UTF8) == 1  # inside "€" rounds down
    assert index_to_col("é€😀", 3, UTF8) == 9
    assert index_to_col("é€😀", 3, UTF32) == 3


edits = st.tuples(st.integers(0, 6), st.integers(0, 12), st.integers(0, 6), st.integers(0, 12), texts)


@settings(max_examples=300)
@given(texts, st.lists(edits, max_size=6), ENCODINGS)
def test_incremental_edits_match_a_fresh_parse(text, changes, enc):
    doc = Document("u", text, encoding=enc)
    for l1, c1, l2, c2, new in changes:
        a, b = doc.offset_at(l1, c1), doc.offset_at(l2, c2)
        expected = doc.text[:a] + new + doc.text[max(a, b):]
        doc.apply(new, (l1, c1), (l2, c2))
        assert doc.text == expected
        assert doc.starts == Document("u", expected).starts  # the incremental line index is exact


def test_full_replace():
    doc = Document("u", "a\nb")
    doc.apply("x\r\ny\rz")
    assert line_count(doc) == 3 and line_text(doc, 2) == "z"


@pytest.mark.parametrize("enc", [UTF16, UTF8])
def test_big_document_edits_are_cheap(enc):
    import time

    text = "def f(x):\n    return x + 1  # é\n" * 160_000  # ~5 MB
    doc = Document("u", text, encoding=enc)
    t = time.perf_counter()
    for i in range(50):
        doc.apply("y", (100_000 + i, 4), (100_000 + i, 4))
        doc.offset_at(100_000 + i, 10)
    per_edit = (time.perf_counter() - t) / 50
    assert per_edit < 0.05, per_edit  # linear copies only, no re-splitting of the document
