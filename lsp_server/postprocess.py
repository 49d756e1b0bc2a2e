"""Clean-ups of the engine's text that fill-in-the-middle does not already guarantee.

The engine sees the suffix, stops a line at its end and a block at its dedent, so content is left
alone; what is fixed here is what the editor would otherwise show wrong: indentation typed twice or
in the wrong character, text that repeats what is already right of the cursor, trailing spaces and
blank lines, and "\\n" where the document uses "\\r\\n".
"""

from __future__ import annotations

from .context import Context, indent_of

PAIRS = {")": "(", "]": "[", "}": "{"}
OPEN = set(PAIRS.values())
MAX_DUP_LINES = 8


def bracket_errors(line: str) -> int:
    """Unmatched brackets on a line (quoted text skipped): 0 when balanced."""
    stack: list[str] = []
    errors = 0
    quote = ""
    escaped = False
    for ch in line:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "#":
            break
        elif ch in OPEN:
            stack.append(ch)
        elif ch in PAIRS:
            if stack and stack[-1] == PAIRS[ch]:
                stack.pop()
            else:
                errors += 1
    return errors + len(stack)


def drop_line_overlap(text: str, line_prefix: str, line_suffix: str) -> str:
    """Drop an ending of `text`'s last line that repeats the start of the text right of the cursor.

    Kept only when it makes the line's brackets no better balanced, so `print(|)` + "f(x)" stays
    while `foo(|)` + "a, b)" loses its second ")"; a repeat with letters or digits (`= 1`) goes when it
    is two characters or more, or all of the right text."""
    right = line_suffix.rstrip()
    if not right or not text:
        return text
    last = text.rsplit("\n", 1)[-1]
    head = line_prefix if "\n" not in text else ""
    for k in range(min(len(right), len(last)), 0, -1):
        if not last.endswith(right[:k]):
            continue
        kept = text[: len(text) - k]
        if any(c.isalnum() for c in right[:k]) and (k >= 2 or k == len(right)):
            return kept
        before = bracket_errors(head + last + line_suffix)
        after = bracket_errors(head + kept.rsplit("\n", 1)[-1] + line_suffix)
        return kept if after < before else text
    return text


def drop_repeated_lines(text: str, suffix: str) -> str:
    """Drop completion lines that repeat the first non-blank lines after the cursor line."""
    lines = text.split("\n")
    if len(lines) < 2:
        return text
    following = [ln.strip() for ln in suffix.split("\n")[1:] if ln.strip()][:MAX_DUP_LINES]
    for k in range(min(len(lines) - 1, len(following)), 0, -1):
        if [ln.strip() for ln in lines[-k:]] == following[:k]:
            return "\n".join(lines[:-k])
    return text


def reindent(text: str, unit: str) -> str:
    """Re-express the leading whitespace of new lines in the document's indent character."""
    lines = text.split("\n")
    for i in range(1, len(lines)):
        ln = lines[i]
        lead = ln[: indent_of(ln)]
        if unit == "\t" and " " in lead:
            width = len(lead.replace("\t", "    "))
            lines[i] = "\t" * (width // 4) + " " * (width % 4) + ln[len(lead):]
        elif unit != "\t" and "\t" in lead:
            lines[i] = lead.replace("\t", unit) + ln[len(lead):]
    return "\n".join(lines)


def strip_trailing(text: str, keep_last: bool) -> str:
    """Trailing spaces of every line and trailing blank lines; the last line keeps its spaces when
    `keep_last` (text follows on the cursor line and may need the separation)."""
    lines = [ln.rstrip() for ln in text.split("\n")[:-1]] + [text.split("\n")[-1]]
    while len(lines) > 1 and not lines[-1].strip():
        lines.pop()
        lines[-1] = lines[-1].rstrip()
    if not keep_last:
        lines[-1] = lines[-1].rstrip()
    return "\n".join(lines)


def clean(text: str, ctx: Context) -> str:
    """The text to insert at the cursor ("" when nothing useful is left)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if ctx.mode == "line":
        text = text.split("\n", 1)[0]
    if ctx.line_prefix and not ctx.line_prefix.strip():  # the editor already indented the cursor line
        first, nl, rest = text.partition("\n")
        text = first.lstrip(" \t") + nl + rest
    text = drop_repeated_lines(text, ctx.suffix)
    text = drop_line_overlap(text, ctx.line_prefix, ctx.line_suffix)
    text = reindent(text, ctx.indent_unit)
    keep_last = bool(ctx.line_suffix[:1].isalnum())
    text = strip_trailing(text, keep_last)
    if not text.strip():
        return ""
    return text if ctx.eol == "\n" else text.replace("\n", ctx.eol)


def clean_span(text: str, eol: str) -> str:
    """Post-processing for rewrites and holes: normalised line endings, no trailing spaces on inner lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    text = "\n".join([ln.rstrip() for ln in lines[:-1]] + [lines[-1]])
    return text if eol == "\n" else text.replace("\n", eol)
