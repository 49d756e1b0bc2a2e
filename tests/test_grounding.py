"""Grounding: suggestions cut before a name that resolves nowhere, hidden when their line cannot tokenize; the
service applies it with the document and the scanned workspace."""

import asyncio
import re

from model.grounding import external_roots, ground, ground_in, scope_names, statement_error

DOC = "import numpy as np\nfrom .models import Store\n\nconfig = load()\n\nclass A:\n    def run(self):\n        return 1\n"
KNOWN = frozenset(re.findall(r"[A-Za-z_]\w*", DOC)).__contains__  # the document's words, as ground_in looks them up
EXTERNAL = external_roots(DOC, lambda name: name == "Store")  # the workspace defines Store


def test_a_name_that_resolves_nowhere_is_cut_before():
    assert EXTERNAL == {"np"}
    assert ground("config.frobnicate(1)", "    x = ", KNOWN, EXTERNAL) == ("config.", "name frobnicate")
    assert ground("undefined_helper(config)", "    x = ", KNOWN, EXTERNAL) == ("", "name undefined_helper")
    assert ground("'ok' if flag_nobody_set else 'no'", "    return ", KNOWN, EXTERNAL)[0] == "'ok' if"


def test_resolvable_names_are_kept():
    keep = ["config.run()",  # both in the document (the class member `run`)
            "np.linalg.norm(config)",  # members of a module imported from outside the workspace are not checked
            "len(sorted(config.items()))",  # builtins, and an attribute builtin types have
            "sum(v for v in range(3))",  # a comprehension binds v
            "Store(root=config)"]  # a keyword argument names a parameter
    for text in keep:
        assert ground(text, "    x = ", KNOWN, EXTERNAL) == (text, ""), text
    assert ground("fig.run()", "    a = con", KNOWN, EXTERNAL) == ("fig.run()", "")  # the word the cursor is in
    assert ground("def helper(a, b):", "", KNOWN, EXTERNAL) == ("def helper(a, b):", "")  # a def line binds its names
    workspace = {"fetch_all"}.__contains__  # another file defines it
    assert ground("Store('.').fetch_all()", "    x = ", lambda n: KNOWN(n) or workspace(n), EXTERNAL)[1] == ""


def test_a_string_left_open_is_cut_and_a_bracket_that_closes_nothing_too():
    assert ground('f"{key}:', "    out = ", KNOWN, EXTERNAL) == ("", "string")
    assert ground('path.join(root, "data', "    return os.", KNOWN, EXTERNAL) == ("path.join(root,", "string")
    assert ground("abc", "    s = 'x ", KNOWN, EXTERNAL) == ("", "string")  # the string began before the cursor
    assert ground("def'", "s = 'abc", KNOWN, EXTERNAL) == ("def'", "")  # it closes the string the line opened
    assert ground('"""', "    ", KNOWN, EXTERNAL) == ('"""', "")  # a docstring goes on over the next lines
    assert ground("foo(config]", "    z = ", lambda n: True, EXTERNAL) == ("foo(config", "bracket")


SCOPED = """import os
from pkg import tools
from pkg.more import (
    helper_one,
    helper_two as two,
)

LIMIT = 3


def outer(
    path: str,
    *,
    mode: str = "r",
) -> int:
    total = 0

    def inner(x):
        return x + total

    for line in open(path):
        total += len(line)
    return total


class Box:
    size = 2

    def grow(self, by):
        return by
"""


def _at(doc: str, marker: str) -> int:
    return doc.index(marker) + len(marker)


def test_a_bare_name_must_be_in_scope_where_it_is_typed():
    doc = SCOPED.replace("        return x + total", "        return x + total\n        ‸")
    here = _at(doc, "return x + total\n        ")
    names = scope_names(doc, here)
    assert {"x", "total", "path", "mode", "inner", "outer", "LIMIT", "os", "tools", "Box", "helper_one", "two"} <= names
    grow = _at(SCOPED, "        return by")
    assert "by" in scope_names(SCOPED, grow) and "size" not in scope_names(SCOPED, grow)  # class body: not in methods
    assert "size" in scope_names(SCOPED, _at(SCOPED, "    size = 2"))
    assert scope_names("from m import *\n\ndef f():\n    x\n", 20) is None  # a star import: anything may resolve
    line_start = SCOPED.index("    return total")
    doc = SCOPED[:line_start] + "    return " + SCOPED[line_start + len("    return total"):]
    at = line_start + len("    return ")
    assert ground_in(doc, "    return ", "total + LIMIT", None, at) == ("total + LIMIT", "")
    assert ground_in(doc, "    return ", "total + by", None, at) == ("total +", "name by")  # `by` is grow's parameter
    assert ground_in(doc, "    return ", "os.path.join(path)", None, at)[1] == ""


def test_a_completed_line_that_cannot_be_a_statement_is_hidden():
    doc = "def f(a):\n    if a\n    return a\n"
    at = _at(doc, "    if a")
    assert statement_error(doc, at, "    if a.ready() and") != ""
    assert ground_in(doc, "    if a", ".ready() and", None, at) == ("", "syntax")
    assert ground_in(doc, "    if a", ".ready():", None, at) == (".ready():", "")
    doc = "import os\n\ndef f(a):\n    return os.\n\n\ndef g():\n    pass\n"
    assert ground_in(doc, "    return os.", "path.join(os", None, _at(doc, "return os.")) == ("path.join", "bracket")
    opened = "def f(a):\n    g(a\n        b)\n"  # the next line goes on deeper: a call over two lines
    assert statement_error(opened, _at(opened, "    g(a"), "    g(a,") == ""
    closed = "def f(a):\n    g()\n"  # the editor closed the bracket after the cursor
    assert ground_in(closed, "    g(", "a, 1", None, _at(closed, "    g(")) == ("a, 1", "")
    inside = "x = f(\n    1,\n    \n)\n"  # a line inside brackets is not a statement of its own
    assert statement_error(inside, _at(inside, "1,\n    "), "    and b") == ""
    doc = 'def f():\n    """Reads the\n    \n    """\n'  # prose in a docstring is not checked at all
    assert ground_in(doc, "    ", "config file, if you must.", None, _at(doc, "Reads the\n    ")) == (
        "config file, if you must.", "")


async def test_the_service_grounds_with_the_workspace_once_scanned(tmp_path, lsp_service_factory, lsp_fake_engine):
    (tmp_path / "models.py").write_text("class Store:\n    def fetch_all(self):\n        return []\n")
    uri = (tmp_path / "app.py").as_uri()
    engine = lsp_fake_engine("store.fetch_all() + store.invented_name()")
    h = lsp_service_factory(engine, debounceMs=0, grounding=True)
    svc = h.service
    await asyncio.wrap_future(svc.models.future)
    svc.documents.open(uri, "store = make()\nx = \n")
    first = await svc.complete(uri, 1, 4)  # no workspace folder: what other files hold is unknown, names are kept
    assert first.text == "store.fetch_all() + store.invented_name()"
    svc.workspace.set_folders([tmp_path.as_uri()])
    for _ in range(200):
        if svc.workspace.scans:
            break
        await asyncio.sleep(0.02)
    svc.documents.open(uri, "store = make()\ny = \n")
    c = await svc.complete(uri, 1, 4)
    assert c.text == "store.fetch_all() + store." and svc.counters.grounded == 1
    svc.configure({"grounding": False}, initial=False)
    svc.documents.open(uri, "store = make()\nz = \n")
    assert (await svc.complete(uri, 1, 4)).text == engine.text
