"""What the model sees around the cursor: character windows, line endings, and the line/block decision."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from model.drafts import copy_hints
from model.types import SampleOptions

_ENGINE = SampleOptions()
MAX_WINDOW_CHARS = 8192  # per side: a 5 MB document costs no more than a small one
HINT_CHARS = 262_144  # per side: where a copy hint is looked for (a few hundred µs in a huge document)
CHARS_PER_TOKEN_MAX = 16  # generous (runs of indentation are long tokens): the engine's token budget decides
OPENERS = (":", "(", "[", "{", "\\")

_SURROGATE = re.compile("[\ud800-\udfff]")
_CR = re.compile(r"\r\n?")
_COMMENT = re.compile(r"\s+#[^'\"]*$")


def sanitize(text: str) -> str:
    """Lone surrogates (which no tokenizer accepts) become U+FFFD; every line ending becomes "\\n".

    A string that holds a valid astral character never contains surrogates in Python, so only
    broken input changes; the model was trained on "\\n" text."""
    if "\r" in text:
        text = _CR.sub("\n", text)
    return _SURROGATE.sub("\ufffd", text)


def window_chars(token_budget: int) -> int:
    return min(MAX_WINDOW_CHARS, max(256, token_budget * CHARS_PER_TOKEN_MAX))


WINDOW_GRID = 1024  # a cut prefix window starts on this grid, so typing does not move it (cached model contexts)


def cut_before(text: str, offset: int, limit: int) -> tuple[str, bool]:
    """About `limit` characters before `offset` (up to WINDOW_GRID more), starting at a line start when cut;
    the start stays put while the cursor moves within a grid cell. (text, reaches start)."""
    start = max(0, offset - limit) // WINDOW_GRID * WINDOW_GRID
    if start == 0:
        return text[:offset], True
    nl = text.find("\n", start, offset)
    if nl != -1 and nl - start < limit // 2:
        start = nl + 1
    return text[start:offset], False


def cut_after(text: str, offset: int, limit: int) -> tuple[str, bool]:
    """Up to `limit` characters after `offset`, ending at a line end when cut; (text, reaches end)."""
    end = offset + limit
    if end >= len(text):
        return text[offset:], True
    nl = max(text.rfind("\n", offset, end), text.rfind("\r", offset, end))
    if nl != -1 and end - nl < limit // 2:
        end = nl + 1
    return text[offset:end], False


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def detect_eol(text: str) -> str:
    """The first line ending in `text` ("\\n" when there is none)."""
    m = re.search(r"\r\n|\r|\n", text)
    return m.group() if m else "\n"


def detect_indent_unit(lines: list[str]) -> str:
    """"\\t" when more indented lines start with a tab than with a space, else four spaces."""
    tabs = sum(1 for ln in lines if ln.startswith("\t"))
    spaces = sum(1 for ln in lines if ln.startswith(" ") and ln.strip())
    return "\t" if tabs > spaces else "    "


def decide_mode(setting: str, line_prefix: str, line_suffix: str, prev_line: str | None) -> tuple[str, int]:
    """(mode, block_indent) for the engine.

    Mid-line, or after text on the line: finish the line. On an empty or blank line after a line that
    opens a block (':' or an opener): a block, which ends at the first line indented less than the
    cursor line (or than one more than the opener line when the editor did not indent). Otherwise a line.
    """
    blank_line = not (line_prefix + line_suffix).strip()
    indent = indent_of(line_prefix + line_suffix) if blank_line else indent_of(line_prefix)
    if prev_line is not None:
        indent_floor = indent_of(prev_line) + 1
    else:
        indent_floor = 0
    if setting == "line":
        return "line", 0
    if setting == "block":
        return "block", max(indent, indent_floor) if blank_line else indent
    if not blank_line or prev_line is None:
        return "line", 0
    head = _COMMENT.sub("", prev_line.rstrip())
    if head.endswith(OPENERS):
        return "block", max(indent, indent_floor)
    return "line", 0


@dataclass(frozen=True)
class Context:
    """The cursor's surroundings, ready for the engine (sanitized, "\\n" line endings)."""

    prefix: str
    suffix: str
    doc_end: bool  # the suffix window reaches the end of the document
    line_prefix: str  # the cursor line left of the cursor
    line_suffix: str  # the cursor line right of the cursor
    mode: str  # line | block
    block_indent: int
    eol: str  # the document's line ending, for the text sent back
    indent_unit: str  # "\t" or spaces, as the document indents
    hints: tuple[str, ...] = ()  # drafts.copy_hints over the whole document (within HINT_CHARS of the cursor), then
    # the workspace's other files: rests of the line that followed the cursor's last characters elsewhere


def build_context(text: str, offset: int, setting_mode: str = "auto", prefix_tokens: int = _ENGINE.prefix_budget,
                  suffix_tokens: int = _ENGINE.suffix_budget, elsewhere: Iterable[str] = ()) -> Context:
    """The context at `offset` (a code point offset into the document); `elsewhere`: other files' texts the copy
    hints are also looked for in (read only as far as needed)."""
    offset = max(0, min(offset, len(text)))
    raw_prefix, _ = cut_before(text, offset, window_chars(prefix_tokens))
    raw_suffix, doc_end = cut_after(text, offset, window_chars(suffix_tokens))
    prefix, suffix = sanitize(raw_prefix), sanitize(raw_suffix)
    before_lines = prefix.split("\n")
    line_prefix = before_lines[-1]
    line_suffix = suffix.split("\n", 1)[0]
    prev_line = next((ln for ln in reversed(before_lines[:-1]) if ln.strip()), None)
    mode, block_indent = decide_mode(setting_mode, line_prefix, line_suffix, prev_line)
    hints = copy_hints(text[max(0, offset - HINT_CHARS): offset], text[offset: offset + HINT_CHARS], elsewhere)
    return Context(prefix, suffix, doc_end, line_prefix, line_suffix, mode, block_indent,
                   detect_eol(raw_prefix + raw_suffix), detect_indent_unit(before_lines),
                   tuple(h for h in (sanitize(h).rstrip("\n") for h in hints) if h))
