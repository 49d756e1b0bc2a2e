"""The workspace index and cross-file retrieval: Python files in, context chunks out.

One retrieval function serves the language server (workspace folders, open buffers over disk), training (the other
files of a file's package) and repository-level evaluation, so it is deterministic and needs no disk (`from_files`).
Torch-free and stdlib only.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass

# ----------------------------------------------------------------------------------------------- symbols of one file

PARSE_ERRORS = (SyntaxError, ValueError, RecursionError, MemoryError)  # what ast.parse raises on text being edited


@dataclass(frozen=True)
class FileSymbols:
    """The names a file binds, imports and offers to other files."""

    defined: frozenset[str]  # every name bound anywhere: defs, classes, targets, args, global/nonlocal, self.x
    imported: frozenset[str]  # names bound by imports (`import a.b` -> a, `from x import y as z` -> z)
    exported: frozenset[str]  # top-level names, methods and class attributes of its classes, self.x of its methods


def file_symbols(text: str) -> FileSymbols:
    """The file's names from its syntax tree, or from a line scan when it does not parse (it is being edited)."""
    try:
        tree = ast.parse(text)
    except PARSE_ERRORS:
        return _symbols_by_lines(text)
    return _symbols_of_tree(tree)


def _target_names(node: ast.AST) -> list[str]:
    """Plain names bound by an assignment target (tuples and starred unpacked)."""
    return [n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]


def _module_level(body: list[ast.stmt]):
    """Statements that run at module level: the body and the blocks of its if/try/with/for/while statements."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, (ast.If, ast.For, ast.AsyncFor, ast.While)):
            yield from _module_level(stmt.body)
            yield from _module_level(stmt.orelse)
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            yield from _module_level(stmt.body)
        elif isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
            yield from _module_level(stmt.body)
            for handler in stmt.handlers:
                yield from _module_level(handler.body)
            yield from _module_level(stmt.orelse)
            yield from _module_level(stmt.finalbody)


def _bound_at(stmt: ast.stmt) -> list[str]:
    """Names a statement binds at its own level (not inside nested functions or classes)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    if isinstance(stmt, ast.Assign):
        return [name for target in stmt.targets for name in _target_names(target)]
    if isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
        return _target_names(stmt.target)
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        return _target_names(stmt.target)
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        return [name for item in stmt.items if item.optional_vars for name in _target_names(item.optional_vars)]
    return []


def _self_attributes(func: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """Attributes a method assigns on its first parameter (`self.x = ...`, `self.x: T = ...`, `self.x += ...`)."""
    params = func.args.posonlyargs + func.args.args
    if not params:
        return []
    me = params[0].arg
    return [n.attr for n in ast.walk(func) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
            and isinstance(n.value, ast.Name) and n.value.id == me]


def _symbols_of_tree(tree: ast.Module) -> FileSymbols:
    defined: set[str] = set()
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            defined.add(node.id)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            defined.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            defined.update(node.names)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name) \
                and node.value.id == "self":
            defined.add(node.attr)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            defined.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            defined.add(node.rest)
        elif isinstance(node, ast.Import):
            imported.update(a.asname or a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.update(a.asname or a.name for a in node.names if a.name != "*")
    exported: set[str] = set()
    for stmt in _module_level(tree.body):
        exported.update(_bound_at(stmt))
        if isinstance(stmt, ast.ClassDef):
            exported.update(_class_members(stmt))
    return FileSymbols(_interned(defined), _interned(imported), _interned(exported))


def _class_members(cls: ast.ClassDef) -> list[str]:
    """Methods, class attributes, nested classes and `self.x` attributes of a class."""
    names: list[str] = []
    for stmt in _module_level(cls.body):
        names.extend(_bound_at(stmt))
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.extend(_self_attributes(stmt))
    return names


def _interned(names: set[str]) -> frozenset[str]:
    return frozenset(sys.intern(n) for n in names)


_DEF_LINE = re.compile(r"^([ \t]*)(?:async[ \t]+)?(def|class)[ \t]+([A-Za-z_]\w*)", re.M)
_ASSIGN_LINE = re.compile(r"^([ \t]*)([A-Za-z_]\w*)[ \t]*(?::[^=\n]*)?(?:[-+*/%&|^@]|//|\*\*|<<|>>)?=(?!=)", re.M)
_SELF_ATTR = re.compile(r"\bself\.([A-Za-z_]\w*)[ \t]*(?::[^=\n]*)?(?:[-+*/%&|^@]|//|\*\*|<<|>>)?=(?!=)")
_IMPORT_LINE = re.compile(r"^[ \t]*import[ \t]+([^\n#;]+)", re.M)
_FROM_LINE = re.compile(r"^[ \t]*from[ \t]+\.*[\w.]*[ \t]+import[ \t]+(\([^)]*\)?|[^\n#;]*)", re.M)
_AS = re.compile(r"^([\w.]+)(?:\s+as\s+(\w+))?$")


def _symbols_by_lines(text: str) -> FileSymbols:
    """Line-scan fallback for code that does not parse: def/class lines, `name =` lines, `self.x =`, imports."""
    defined: set[str] = set()
    exported: set[str] = set()
    class_indent: str | None = None  # indentation of the top-level class being read, None outside one
    for m in _DEF_LINE.finditer(text):
        indent, kind, name = m.groups()
        defined.add(name)
        if not indent:
            exported.add(name)
            class_indent = "" if kind == "class" else None
        elif class_indent is not None:
            exported.add(name)  # a method (or a nested def: close enough for a file that does not parse)
    for m in _ASSIGN_LINE.finditer(text):
        defined.add(m.group(2))
        if not m.group(1):
            exported.add(m.group(2))
    attrs = set(_SELF_ATTR.findall(text))
    defined |= attrs
    exported |= attrs
    imported: set[str] = set()
    for m in _IMPORT_LINE.finditer(text):
        for part in m.group(1).split(","):
            am = _AS.match(part.strip())
            if am:
                imported.add(am.group(2) or am.group(1).split(".")[0])
    for m in _FROM_LINE.finditer(text):
        for part in m.group(1).strip("() \t\n\\").replace("\\\n", " ").split(","):
            am = _AS.match(part.strip())
            if am and "." not in am.group(1):
                imported.add(am.group(2) or am.group(1))
    return FileSymbols(_interned(defined), _interned(imported), _interned(exported))
