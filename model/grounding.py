"""Grounding: a suggestion is shown only up to the first name it introduces that resolves nowhere, or the string it
opens and leaves open on its line, and not at all when it leaves open a string the line began before the cursor.

A name resolves when the document or the workspace index uses or defines it (`known`), it is a builtin or keyword,
the line binds it (`x = `, `for x in`, `as x`, `lambda x:`, keyword arguments), or it is an attribute of a name the
document imports from outside the workspace (`np.anything`: a module's members are not indexed, so nothing is
claimed about them). Torch-free and stdlib only: the server, the evaluations and the service share it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .workspace import BUILTIN_ATTRS, BUILTIN_NAMES, KEYWORDS, bound_imports

ALWAYS_KNOWN = BUILTIN_NAMES | KEYWORDS | {"self", "cls"}
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


def ground(text: str, line_prefix: str, known: Callable[[str], bool], external: frozenset[str] = frozenset()) -> tuple[str, str]:
    """(the part of the suggestion `text` to show, why the rest was cut: "" | "name <x>" | "string" | "bracket").
    `line_prefix`: the cursor line left of the cursor; `known(name)`: whether the document or the workspace uses or
    defines it; `external`: names imported from outside the workspace (their attributes are not checked). Only the
    suggestion's first line is checked (a line completion is one line; a block's later lines keep their text)."""
    first, nl, rest = text.partition("\n")
    line = line_prefix + first
    start = len(line_prefix)
    if (opened := unterminated(line, start)) is not None:  # shown up to the string the suggestion leaves open
        return (text[: opened - start].rstrip() if opened > start else ""), "string"
    tokens = _lex(line)
    depth: list[str] = []
    for kind, t, at in tokens:  # a closer that does not match the bracket it would close
        if kind != "other":
            continue
        if t in "([{":
            depth.append(t)
        elif t in _PAIRS:
            if depth and depth[-1] != _PAIRS[t]:
                return text[: max(0, at - start)].rstrip() if at >= start else "", "bracket"
            if depth:
                depth.pop()
    if _NO_CHECK.match(line):
        return text, ""
    bound = _bound(tokens)
    texts = [t for _, t, _ in tokens]
    for i, (kind, t, at) in enumerate(tokens):
        if kind != "name" or at + len(t) <= start or t in ALWAYS_KNOWN or t in bound or t in external or known(t):
            continue
        if i and texts[i - 1] == ".":  # an attribute: of a builtin type, or of a name imported from outside the workspace
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



def ground_in(doc: str, line_prefix: str, suggestion: str,
              workspace: tuple[Callable[[str], bool], Callable[[str], bool]] | None) -> tuple[str, str]:
    """ground() on a suggestion for the document `doc` -> (what to show, why the rest was cut or ""). A name
    resolves when the document holds it as a word (looked up only for the suggestion's few names) or the workspace
    (`Workspace.knows`: uses, defines) does; without a scanned workspace only the line's syntax is checked."""
    if not suggestion:
        return suggestion, ""
    if workspace is None:
        known, external = (lambda name: True), frozenset()
    else:
        uses, defines = workspace
        known = lambda name: uses(name) or re.search(rf"\b{name}\b", doc) is not None  # noqa: E731
        external = external_roots(doc[:IMPORTS_CHARS], defines)
    return ground(suggestion, line_prefix, known, external)
