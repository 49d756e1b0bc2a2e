"""Grounding: a suggestion is shown only up to the first name it introduces that resolves nowhere, or the string or
bracket it opens and leaves open on its line, and not at all when its completed line cannot parse as a statement or
leaves open a string the line began before the cursor. A bare name it types must be in scope at the cursor
(scope_names: Python's scoping read off the document's indentation; JetBrains' local Full Line completion checks
its names against the project's resolve too).

A name resolves when the document or the workspace index uses or defines it (`known`), it is a builtin or keyword,
the line binds it (`x = `, `for x in`, `as x`, `lambda x:`, keyword arguments), or it is an attribute of a name the
document imports from outside the workspace (`np.anything`: a module's members are not indexed, so nothing is
claimed about them). Torch-free and stdlib only: the server, the evaluations and the service share it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

from .workspace import BUILTIN_ATTRS, BUILTIN_NAMES, KEYWORDS, _bindings, bound_imports

MODULE_DUNDERS = frozenset({"__file__", "__name__", "__doc__", "__all__", "__path__", "__spec__", "__loader__",
                            "__package__", "__builtins__", "__annotations__", "__dict__", "__version__", "__class__"})
ALWAYS_KNOWN = BUILTIN_NAMES | KEYWORDS | MODULE_DUNDERS | {"self", "cls", "_"}  # `_`: gettext's, often a builtin
# what a line's text is made of, for this purpose: strings (with their prefixes; an unterminated one runs to the end),
# comments, names, and single characters
_LEX = re.compile(r"""(?P<str>(?:\b[rRbBuUfF]{1,2})?(?:'''|\"\"\"|'(?:\\.|[^'\\])*'?|"(?:\\.|[^"\\])*"?))"""
                  r"|(?P<comment>#.*)|(?P<name>[A-Za-z_]\w*)|(?P<other>\S)")
_NO_CHECK = re.compile(r"^\s*(?:async\s+)?(?:def|class|import|from|global|nonlocal)\b")  # lines that bind what they name
_PAIRS = {")": "(", "]": "[", "}": "{"}
IMPORTS_CHARS = 65_536  # the head of a document whose imports say which names come from outside the workspace


def external_roots(text: str, in_workspace: Callable[[str], bool]) -> frozenset[str]:
    """The names a document binds by importing from outside the workspace (`import numpy as np` -> np): their
    members are not indexed. `in_workspace(name)`: whether the workspace defines that imported name."""
    return frozenset(bound.split(".")[0] for bound, name in bound_imports(text) if name is None or not in_workspace(name))


_BLOCK = re.compile(r"^([ \t]*)(?:async[ \t]+)?(def|class)[ \t]+(\w+)")
_STAR = re.compile(r"^[ \t]*from[ \t]+\S+[ \t]+import[ \t]+\*", re.M)
_NONLOCAL = re.compile(r"\b(?:global|nonlocal)[ \t]+([\w \t,]+)")
_CLOSERS = (")", "]", "}", "#")
DEPTH_LINES = 60  # lines before the cursor's read to tell whether it is inside brackets
# a line that starts like this continues a statement begun on an earlier line
_CONTINUES = re.compile(r"(?:and|or|in|is|not[ \t]+in)\b|[-+*/%|&^<>=!.]")
_ENDS_OPEN = (",", "(", "[", "{", "\\", "+", "-", "*", "/", "%", "&", "|", "^", "<", ">", "=", ".")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _block_end(lines: list[str], row: int) -> int:
    """The row after the block whose header is at `row` (a signature's closing line does not end it)."""
    ind, end = _indent(lines[row]), row + 1
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > ind
                                or lines[end].lstrip().startswith(_CLOSERS)):
        end += 1
    return end


_TOP_BLOCK = ("try", "if ", "else", "elif ", "except", "finally", "with ", "for ", "while ", "async ")
_IMPORTED = re.compile(r"^[ \t]*(?:from[ \t]+[.\w]+[ \t]+)?import[ \t]+(\([^)]*\)|[^\n#;]*)", re.M)


def _imported(text: str) -> set[str]:
    """The names the text's imports bind (`import a.b` binds a, `x as y` binds y)."""
    out = set()
    for group in _IMPORTED.findall(text):
        for part in group.strip("()").replace("\\", " ").split(","):
            words = part.split()
            if words:
                out.add(words[-1] if len(words) >= 3 and words[-2] == "as" else words[0].split(".")[0])
    return out


def _module_names(lines: list[str]) -> tuple[set[str], bool]:
    """(what the module binds: its top-level statements, the bodies of its top-level if/try/with/for blocks, every
    def and class, every import at any depth (one inside a function is harmless to count); whether it star-imports).
    One pass over the lines."""
    top, imports, blocks = [], [], set()
    in_block = in_import = False
    for line in lines:
        c = line[:1]
        if not c:
            continue
        if in_import or "import" in line:
            imports.append(line)
            in_import = ")" not in line and (in_import or "(" in line)  # `from m import (` over several lines
        if c.isalpha() or c == "_":
            top.append(line)
            in_block = line.startswith(_TOP_BLOCK)
        elif in_block and c in " \t":
            top.append(line)
        if (c in " \tdca") and line.lstrip().startswith(("def ", "class ", "async def ")) and (m := _BLOCK.match(line)):
            blocks.add(m.group(3))
    imported = "\n".join(imports)
    return _bindings("\n".join(top)) | _imported(imported) | blocks, bool(_STAR.search(imported))


class _LastModule:
    """The module names of the last document asked about: typing changes one line, and the rest of a document
    of 200 KB takes ~15 ms to read again (a keystroke's budget), ~0.1 ms to compare."""

    doc: str = ""
    names: frozenset[str] = frozenset()
    star: bool = False

    @classmethod
    def names_of(cls, doc: str, lines: list[str], row_start: int, row_end: int) -> tuple[set[str], bool]:
        old, tail = cls.doc, doc[row_end:]
        if old and len(old) - len(tail) >= row_start and old.endswith(tail) and old.startswith(doc[:row_start]):
            line = doc[row_start:row_end]
            return set(cls.names) | _bindings(line) | _imported(line), cls.star or bool(_STAR.search(line))
        names, star = _module_names(lines)
        cls.doc, cls.names, cls.star = doc, frozenset(names), star
        return names, star


def scope_names(doc: str, offset: int) -> set[str] | None:
    """The names a bare name at `offset` of `doc` can resolve to, found the way Python scopes them (approximately:
    the document need not parse): what the module binds, the enclosing functions' parameters and bindings, and the
    body of a class the cursor is directly in. None when a star import makes it unknowable."""
    lines = doc.split("\n")
    row = doc.count("\n", 0, offset)
    row_start = doc.rfind("\n", 0, offset) + 1
    names, star = _LastModule.names_of(doc, lines, row_start, row_start + len(lines[row]))
    if star:
        return None
    level, innermost = _indent(lines[row]), True
    for r in range(row - 1, -1, -1):
        if level == 0:
            break
        line = lines[r]
        if not line.strip() or line.lstrip().startswith(_CLOSERS) or _indent(line) >= level:
            continue
        level = _indent(line)
        m = _BLOCK.match(line)
        if m is None or (m.group(2) == "class" and not innermost):  # a class body is not seen from its methods
            innermost = innermost and m is None
            continue
        innermost = False
        region = "\n".join(lines[r: _block_end(lines, r)])
        names |= _bindings(region) | _imported(region)
        names |= {n for g in _NONLOCAL.findall(region) for n in re.findall(r"\w+", g)}
    return names


def _inside_brackets(doc: str, line_start: int) -> bool:
    """Whether the line starting at `line_start` continues a statement: brackets opened on the DEPTH_LINES lines
    before it are still open, or the line before ends with an operator, a comma or a backslash."""
    depth, in_doc = 0, False
    start = line_start
    for _ in range(DEPTH_LINES + 1):
        start = doc.rfind("\n", 0, start - 1) + 1 if start > 0 else 0
    before = doc[start:line_start].split("\n")
    for line in before:
        if line.count('"""') % 2 or line.count("'''") % 2:
            in_doc = not in_doc
            continue
        if in_doc:
            continue
        for kind, t, _ in _lex(line):
            if kind == "other":
                depth += (t in "([{") - (t in ")]}")
    last = next((x.split("#")[0].rstrip() for x in reversed(before) if x.strip()), "")
    return depth > 0 or last.endswith(_ENDS_OPEN)


def statement_error(doc: str, offset: int, line: str) -> str:
    """Why the cursor's line, completed as `line`, cannot be a Python statement of its own ("" when it can, or when
    it continues an earlier line). Open brackets pass when the next line goes on deeper or closes them."""
    row_start = doc.rfind("\n", 0, offset) + 1
    code = line.strip()
    if (not code or code.startswith(("@", "#", "case ", "match ", '"', "'")) or _CONTINUES.match(code)
            or _inside_brackets(doc, row_start)):
        return ""
    head = "if 1: pass\n" if re.match(r"(?:elif|else)\b", code) else "try: pass\n" if re.match(
        r"(?:except|finally)\b", code) else ""
    try:
        ast.parse(head + code + (" pass" if code.endswith(":") else ""))
        return ""
    except SyntaxError as e:
        why = str(e.msg)
    except (ValueError, MemoryError, RecursionError):  # null bytes, absurd nesting: not ours to judge
        return ""
    if "never closed" in why or "unexpected EOF" in why:
        nxt = next((x for x in doc[offset:].split("\n")[1:] if x.strip()), "")
        if _indent(nxt) > _indent(line) or nxt.lstrip().startswith(_CLOSERS):
            return ""
    return why


def _lex(line: str) -> list[tuple[str, str, int]]:
    return [(m.lastgroup or "", m.group(), m.start()) for m in _LEX.finditer(line)]


def _bound(tokens: list[tuple[str, str, int]]) -> set[str]:
    """Names the line itself binds: assignment and keyword-argument targets, `for` targets, `as` names, lambda
    parameters, walrus targets."""
    out: set[str] = set()
    texts = [t for _, t, _ in tokens]
    for i, (kind, t, _) in enumerate(tokens):
        if kind != "name":
            continue
        after = texts[i + 1: i + 3]
        if after[:1] == ["="] and after[1:2] != ["="] or after[:2] == [":", "="]:
            out.add(t)
        if i and texts[i - 1] == "as":
            out.add(t)
    for opener, closer in (("for", "in"), ("lambda", ":")):
        for i, t in enumerate(texts):
            if t == opener:
                j = i + 1
                while j < len(texts) and texts[j] != closer:
                    if tokens[j][0] == "name":
                        out.add(texts[j])
                    j += 1
    return out


def unterminated(line: str, start: int) -> int | None:
    """Where a single-quoted string that reaches past `start` of the line (the suggestion's part) and stays open at the
    line's end begins (its prefix letters included), or None (a triple quote may go on over the next lines)."""
    for kind, t, at in _lex(line):
        if kind == "str" and at + len(t) > start:
            body = t.lstrip("rRbBuUfF")
            if body not in ("'''", '"""') and (len(body) < 2 or body[-1] != body[0]):
                return at
    return None


def ground(text: str, line_prefix: str, known: Callable[[str], bool], external: frozenset[str] = frozenset(),
           scope: set[str] | None = None, statement: Callable[[str], str] | None = None) -> tuple[str, str]:
    """(the part of the suggestion `text` to show, why the rest was cut: "" | "name <x>" | "string" | "bracket").
    `line_prefix`: the cursor line left of the cursor; `known(name)`: whether the document or the workspace uses or
    defines it; `external`: names imported from outside the workspace (their attributes are not checked). Only the
    suggestion's first line is checked (a line completion is one line; a block's later lines keep their text).
    `scope`: the names a bare name typed after the cursor may resolve to (scope_names; None: any `known` one);
    `statement(line)`: why the completed line cannot be a statement ("" when it can: statement_error)."""
    first, nl, rest = text.partition("\n")
    line = line_prefix + first
    start = len(line_prefix)
    if (opened := unterminated(line, start)) is not None:  # shown up to the string the suggestion leaves open
        return (text[: opened - start].rstrip() if opened > start else ""), "string"
    tokens = _lex(line)
    depth: list[tuple[str, int]] = []  # the brackets open so far: (opener, where)
    for kind, t, at in tokens:  # a closer that does not match the bracket it would close
        if kind != "other":
            continue
        if t in "([{":
            depth.append((t, at))
        elif t in _PAIRS:
            if depth and depth[-1][0] != _PAIRS[t]:
                return text[: max(0, at - start)].rstrip() if at >= start else "", "bracket"
            if depth:
                depth.pop()
    if statement is not None and (why := statement(line)):
        if "never closed" in why and depth and depth[0][1] > start:  # cut before the bracket it leaves open
            shown, more = ground(text[: depth[0][1] - start].rstrip(), line_prefix, known, external, scope, statement)
            return shown, more or "bracket"
        return "", "syntax"
    if _NO_CHECK.match(line):
        return text, ""
    bound = _bound(tokens)
    texts = [t for _, t, _ in tokens]
    for i, (kind, t, at) in enumerate(tokens):
        if kind != "name" or at + len(t) <= start or t in ALWAYS_KNOWN or t in bound or t in external:
            continue
        attribute = i > 0 and texts[i - 1] == "."
        if scope is not None and at >= start and not attribute:  # a bare name typed by the suggestion: in scope?
            if t in scope:
                continue
        elif known(t):
            continue
        if attribute:  # an attribute: of a builtin type, or of a name imported from outside the workspace
            if t in BUILTIN_ATTRS:
                continue
            j = i - 1
            while j >= 2 and texts[j] == "." and tokens[j - 1][0] == "name":
                j -= 2
            root = texts[j + 1] if tokens[j + 1][0] == "name" else ""
            if root in external:
                continue
        cut = text[: max(0, at - start)]
        return (cut.rstrip() if cut.strip() else ""), f"name {t}"
    return first + nl + rest, ""



def in_docstring(doc: str, offset: int) -> bool:
    """Whether `offset` is inside a triple-quoted string (an odd number of triple quotes before it; approximate)."""
    return (doc.count('"""', 0, offset) + doc.count("'''", 0, offset)) % 2 == 1


def ground_in(doc: str, line_prefix: str, suggestion: str,
              workspace: tuple[Callable[[str], bool], Callable[[str], bool]] | None,
              offset: int | None = None) -> tuple[str, str]:
    """ground() on a suggestion for the document `doc` -> (what to show, why the rest was cut or ""). A name
    resolves when the document holds it as a word (looked up only for the suggestion's few names) or the workspace
    (`Workspace.knows`: uses, defines) does; without a scanned workspace only the line's syntax is checked. With the
    cursor's `offset` in `doc`, a bare name the suggestion types must also be in scope there (scope_names), and the
    completed line must be able to stand as a statement (statement_error)."""
    if not suggestion:
        return suggestion, ""
    scope, statement = None, None
    if offset is not None and in_docstring(doc, offset):
        return suggestion, ""  # prose (or code of another language) in a triple-quoted string: nothing to check
    if offset is not None:
        scope = scope_names(doc, offset)
        end = doc.find("\n", offset)
        rest = doc[offset: len(doc) if end < 0 else end]  # what the line holds after the cursor (an auto-closed ")")

        def statement(line: str) -> str:
            why = statement_error(doc, offset, line)
            return statement_error(doc, offset, line + rest) if why and rest.strip() else why
    if workspace is None:
        known, external = (lambda name: True), frozenset()
    else:
        uses, defines = workspace
        known = lambda name: uses(name) or re.search(rf"\b{name}\b", doc) is not None  # noqa: E731
        external = external_roots(doc[:IMPORTS_CHARS], defines)
    return ground(suggestion, line_prefix, known, external, scope, statement)
