"""Open documents, incremental sync and LSP positions.

LSP lines end at `\\n`, `\\r\\n` or `\\r` (str.splitlines also splits at `\\f`, `\\x1c`, U+2028 …, so it is
not used), and a position's character counts code units of the negotiated encoding: UTF-16 unless the
client offered another. Positions past the end of a line or of the document are clamped, and a
UTF-16 position inside a surrogate pair rounds down to the start of the character.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

UTF8, UTF16, UTF32 = "utf-8", "utf-16", "utf-32"
_EOL = re.compile(r"\r\n|\r|\n")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def char_units(ch: str, encoding: str = UTF16) -> int:
    """Code units of one code point; a lone surrogate counts as one UTF-16 unit (three UTF-8 bytes)."""
    cp = ord(ch)
    if encoding == UTF16:
        return 2 if cp > 0xFFFF else 1
    if encoding == UTF8:
        return 1 if cp < 0x80 else 2 if cp < 0x800 else 3 if cp < 0x10000 else 4
    return 1


def col_to_index(line: str, col: int, encoding: str = UTF16) -> int:
    """Client column -> code point index into `line`, clamped to [0, len(line)], rounding down mid-character."""
    if col <= 0:
        return 0
    if encoding == UTF32 or line.isascii() or (encoding == UTF16 and not _ASTRAL.search(line)):
        return min(col, len(line))
    total = 0
    for i, ch in enumerate(line):
        total += char_units(ch, encoding)
        if total > col:
            return i
    return len(line)


def index_to_col(line: str, index: int, encoding: str = UTF16) -> int:
    """Code point index into `line` -> client column."""
    index = max(0, min(index, len(line)))
    if encoding == UTF32 or line.isascii():
        return index
    if encoding == UTF16:
        return index + len(_ASTRAL.findall(line, 0, index))
    return sum(char_units(ch, UTF8) for ch in line[:index])


def line_starts(text: str, lo: int, hi: int) -> list[int]:
    """Offsets in [lo, hi] (lo ≥ 1) at which a line starts, i.e. just after a line ending."""
    out = []
    for m in _EOL.finditer(text, max(0, lo - 1), min(len(text), hi + 1)):
        end = m.end()
        if m.group() == "\r" and end < len(text) and text[end] == "\n":
            continue  # the scanned stretch ended between "\r" and "\n"
        if lo <= end <= hi:
            out.append(end)
    return out


@dataclass
class Document:
    uri: str
    text: str
    version: int | None = None
    encoding: str = UTF16
    starts: list[int] = field(default_factory=list)  # offset of each line's first character

    def __post_init__(self) -> None:
        self.starts = [0, *line_starts(self.text, 1, len(self.text))]

    def line_bounds(self, line: int) -> tuple[int, int]:
        """(start, end) offsets of a line without its line ending."""
        start = self.starts[line]
        if line + 1 >= len(self.starts):
            return start, len(self.text)
        end = self.starts[line + 1]
        return start, end - (2 if self.text[end - 2 : end] == "\r\n" else 1)

    def offset_at(self, line: int, character: int) -> int:
        """LSP position -> offset into `text`; a line past the end means the end of the document."""
        if line < 0:
            return 0
        if line >= len(self.starts):
            return len(self.text)
        start, end = self.line_bounds(line)
        return start + col_to_index(self.text[start:end], character, self.encoding)

    def position_at(self, offset: int) -> tuple[int, int]:
        """Offset -> LSP (line, character); an offset inside a line ending maps to the end of that line."""
        offset = max(0, min(offset, len(self.text)))
        line = bisect.bisect_right(self.starts, offset) - 1
        start, end = self.line_bounds(line)
        return line, index_to_col(self.text[start:end], min(offset, end) - start, self.encoding)

    def apply(self, new_text: str, start: tuple[int, int] | None = None, end: tuple[int, int] | None = None) -> None:
        """Replace the range start..end (LSP positions) by new_text; no range replaces the whole text."""
        if start is None or end is None:
            self.text = new_text
            self.__post_init__()
            return
        a = self.offset_at(*start)
        b = max(a, self.offset_at(*end))
        self.text = self.text[:a] + new_text + self.text[b:]
        delta = len(new_text) - (b - a)
        # starts before a and after b are unaffected (only shifted); rescan the edited stretch
        head = self.starts[: bisect.bisect_left(self.starts, max(1, a))]  # always keeps 0
        tail = self.starts[bisect.bisect_right(self.starts, b) :]
        mid = line_starts(self.text, max(1, a), a + len(new_text))
        self.starts = head + mid + [s + delta for s in tail]


class DocumentStore:
    """The documents the client has opened, by URI (their contents are the client's to bound)."""

    def __init__(self) -> None:
        self.docs: dict[str, Document] = {}
        self.encoding = UTF16

    def open(self, uri: str, text: str, version: int | None = None) -> Document:
        doc = self.docs[uri] = Document(uri, text, version, self.encoding)
        return doc

    def get(self, uri: str) -> Document | None:
        return self.docs.get(uri)

    def close(self, uri: str) -> None:
        self.docs.pop(uri, None)
