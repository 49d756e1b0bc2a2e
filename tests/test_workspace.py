"""The workspace index (model.workspace): file symbols, scanning and ignore rules, and cross-file retrieval."""

from __future__ import annotations

import os
import threading

from model.workspace import (Chunk, FileSymbols, IndexLimits, WorkspaceIndex, file_symbols, gitignore_rules,
                             is_ignored)

SOURCE = '''\
import os.path
import numpy as np
from .store import Store as S, Item
from typing import *

LIMIT: int = 3
a, (b, *rest) = 1, (2, 3)

class Cache(Base):
    """Keeps items."""
    size = 10

    def __init__(self, path, *args, cap=4, **kw):
        self.path = path
        self.items: dict = {}
        global COUNT

    def get(self, key):
        for i, (k, v) in enumerate(self.items):
            with open(k) as fh:
                pass
        try:
            pass
        except OSError as err:
            self.errors += 1
        return [x for x in self.items if (y := x)]

def helper(n):
    def inner(q):
        nonlocal n
    return inner
'''


def test_file_symbols_of_code_that_parses():
    s = file_symbols(SOURCE)
    assert isinstance(s, FileSymbols)
    assert s.imported == {"os", "np", "S", "Item"}
    assert {"LIMIT", "a", "b", "rest", "Cache", "size", "__init__", "get", "helper", "inner", "path", "args", "cap",
            "kw", "items", "COUNT", "i", "k", "v", "fh", "err", "errors", "x", "y", "q", "n", "self"} <= s.defined
    assert s.exported == {"LIMIT", "a", "b", "rest", "Cache", "size", "__init__", "get", "path", "items", "errors",
                          "helper"}
    assert "inner" not in s.exported and "key" not in s.exported and "fh" not in s.exported


def test_file_symbols_of_broken_code_never_raise():
    broken = SOURCE + "\ndef half(a, b\n    x = \n"
    s = file_symbols(broken)
    assert {"Cache", "helper", "half", "LIMIT", "get", "__init__", "path", "items"} <= s.defined
    assert {"Cache", "helper", "half", "LIMIT", "get", "path", "items"} <= s.exported
    assert "inner" not in s.exported
    assert s.imported == {"os", "np", "S", "Item"}
    for text in ["(" * 500 + "x", "\0", "def", "x = '''", "from . import (a,\n b as c", "\ufffd" * 10, ""]:
        assert isinstance(file_symbols(text), FileSymbols)
    assert file_symbols("from . import (a,\n b as c").imported == {"a", "c"}


# ------------------------------------------------------------------------------------------------ scanning, ignores


def _tree(root, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")


def _scanned(root, limits: IndexLimits = IndexLimits()) -> set[str]:
    index = WorkspaceIndex(limits)
    index.add_root(str(root))
    index.scan()
    return {os.path.relpath(p, root).replace(os.sep, "/") for p in index._files}


def test_gitignore_patterns():
    rules = gitignore_rules("# comment\n*.log\n!keep.log\nout/\n/top.py\ndocs/**/gen_*.py\n**/cache\na?c.py\n"
                            "data/[0-9]*.py\n\\#hash.py\n")
    cases = {("x.log", False): True, ("d/keep.log", False): False, ("out", True): True, ("d/out", True): True,
             ("out", False): False, ("top.py", False): True, ("d/top.py", False): False,
             ("docs/gen_a.py", False): True, ("docs/x/y/gen_b.py", False): True, ("src/gen_a.py", False): False,
             ("cache", True): True, ("a/b/cache", True): True, ("abc.py", False): True, ("abbc.py", False): False,
             ("data/1x.py", False): True, ("data/x1.py", False): False, ("#hash.py", False): True}
    for (rel, is_dir), want in cases.items():
        assert is_ignored(rules, rel, is_dir) is want, rel
    nested = gitignore_rules("*.py\n!keep.py\n") + gitignore_rules("!*.py\n", "pkg/sub/")
    assert is_ignored(nested, "pkg/a.py", False) and not is_ignored(nested, "pkg/keep.py", False)
    assert not is_ignored(nested, "pkg/sub/a.py", False)  # the deeper file has the last word
    assert gitignore_rules("[z-a]\n*.py\n") and is_ignored(gitignore_rules("[z-a]\n*.py\n"), "a.py", False)


def test_scan_honours_gitignore_files_and_skips_environments_and_build_output(tmp_path):
    _tree(tmp_path, {
        ".gitignore": "*.gen.py\n/anchored.py\nlogs/\n!keep.gen.py\nsecret/**\n",
        "main.py": "x = 1\n", "anchored.py": "", "sub/anchored.py": "", "a.gen.py": "", "keep.gen.py": "",
        "logs/x.py": "", "sub/logs/y.py": "", "secret/deep/z.py": "", "stub.pyi": "def f() -> int: ...\n",
        "notes.txt": "", "pkg/.gitignore": "local_*.py\n!local_keep.py\n", "pkg/local_a.py": "",
        "pkg/local_keep.py": "", "pkg/mod.py": "",
        ".venv/lib/a.py": "", "venv/a.py": "", "env/a.py": "", "myenv/pyvenv.cfg": "", "myenv/lib/a.py": "",
        "node_modules/a.py": "", "build/a.py": "", "dist/a.py": "", "__pycache__/a.py": "", ".git/a.py": "",
        "x.egg-info/a.py": "", ".tox/a.py": "", "lib/site-packages/a.py": "", ".mypy_cache/a.py": "",
    })
    assert _scanned(tmp_path) == {"main.py", "sub/anchored.py", "keep.gen.py", "stub.pyi", "pkg/local_keep.py",
                                  "pkg/mod.py"}


def test_scan_skips_huge_binary_non_utf8_and_generated_files(tmp_path):
    _tree(tmp_path, {"ok.py": "x = 1\n", "huge.py": "x = 1\n" * 400, "latin.py": "s = '\xe9'\n".encode("latin-1"),
                     "bin.py": b"x = 1\0\n", "pb2.py": "# Generated by the protocol buffer compiler.  DO NOT EDIT!\n",
                     "late.py": "x = 1\n" * 10 + "# do not edit\n"})
    index = WorkspaceIndex(IndexLimits(max_file_bytes=1000))
    index.add_root(str(tmp_path))
    index.scan()
    assert sorted(os.path.basename(p) for p in index._files) == ["late.py", "ok.py"]
    assert index.stats()["skipped"] == {"too_big": 1, "not_utf8": 1, "binary": 1, "generated": 1}


def test_limits_bound_files_and_bytes(tmp_path):
    _tree(tmp_path, {f"m{i}.py": f"value_{i} = {i}\n" for i in range(6)})
    assert _scanned(tmp_path, IndexLimits(max_files=4)) == {"m0.py", "m1.py", "m2.py", "m3.py"}
    assert len(_scanned(tmp_path, IndexLimits(max_total_bytes=40))) == 3  # 12 bytes each
    index = WorkspaceIndex.from_files({"a.py": "x = 1\n", "b.py": "y = 2\n" * 100, "c.py": "z = 3\n"},
                                      IndexLimits(max_files=2, max_file_bytes=100))
    assert sorted(index._files) == ["a.py", "c.py"] and index.stats()["skipped"] == {"too_big": 1}
    index.set_file("d.py", "w = 4\n")
    assert "d.py" not in index._files and index.stats()["skipped"]["max_files"] == 1


def test_scan_stops_when_asked_and_reports_progress(tmp_path):
    _tree(tmp_path, {f"m{i}.py": f"value_{i} = {i}\n" for i in range(40)})
    index = WorkspaceIndex()
    index.add_root(str(tmp_path))
    seen = []
    index.scan(progress=lambda done, total: seen.append((done, total)), should_stop=lambda: len(seen) >= 5)
    assert len(index._files) == 5 and index.stats()["scan"] == "stopped"
    index.scan(should_stop=lambda: True)
    assert len(index._files) == 5
    index.scan(progress=lambda done, total: seen.append((done, total)))
    assert len(index._files) == 40 and seen[-1] == (40, 40) and index.stats()["scan"] == "done"


def test_rescan_picks_up_changes_and_drops_deleted_files(tmp_path):
    _tree(tmp_path, {"a.py": "def alpha(): ...\n", "b.py": "def beta(): ...\n"})
    index = WorkspaceIndex()
    index.add_root(str(tmp_path))
    index.scan()
    (tmp_path / "b.py").unlink()
    (tmp_path / "a.py").write_text("def alpha_two(): ...\n")
    os.utime(tmp_path / "a.py", ns=(1, 1))  # a changed stamp however coarse the clock
    index.scan()
    assert list(index._files) == [str(tmp_path / "a.py")] and "alpha_two" in index._symbols
    index.remove_root(str(tmp_path))
    assert index.stats()["files"] == 0 and index.stats()["roots"] == []


def test_set_file_under_a_root_follows_the_scan_rules(tmp_path):
    _tree(tmp_path, {".gitignore": "gen/\n", "venv2/pyvenv.cfg": ""})
    index = WorkspaceIndex()
    index.add_root(str(tmp_path))
    for rel in ["ok.py", "gen/x.py", "venv2/x.py", "node_modules/x.py", "readme.md"]:
        index.set_file(str(tmp_path / rel), "x = 1\n")
    index.set_file("/elsewhere/y.py", "y = 1\n")
    assert list(index._files) == [str(tmp_path / "ok.py")]


# ------------------------------------------------------------------------------------------------------- retrieval

STORE = '''\
"""Storage."""
from dataclasses import dataclass

LIMIT = 10


@dataclass
class Item:
    """One stored item."""
    key: str
    value: int = 0


class Store:
    """Keeps items in memory.

    More words that the summary leaves out."""

    kind = "memory"

    def __init__(self, path: str,
                 size: int = LIMIT):
        self.path = path
        self.items: dict[str, Item] = {}

    def get_item(self, key: str) -> Item | None:
        """Return the item under key."""
        found = self.items.get(key)
        return found

    def put(self, item: Item) -> None:
        self.last = item
        self.items[item.key] = item


def open_store(path: str) -> Store:
    """Open a store at path."""
    return Store(path)
'''

APP = '''\
from .store import Store, Item


class App:
    def __init__(self):
        self.store = Store("x")

    def run(self, key):
        item = self.store.get_item(key)
        total = 0
        '''

FILES = {
    "pkg/__init__.py": "from .store import Store, open_store\n",
    "pkg/store.py": STORE,
    "pkg/app.py": APP,
    "pkg/util.py": "def helper_for_app(n: int) -> int:\n    return n + 1\n",
    "other/user.py": "from pkg import open_store\nimport pkg.store as st\n\ndef main():\n    s = open_store('p')\n",
}


def _sources(chunks: list[Chunk]) -> list[tuple[str, str]]:
    return [(c.source, c.label) for c in chunks]


def test_a_relative_import_gives_the_class_summary_signatures_without_bodies():
    index = WorkspaceIndex.from_files(FILES)
    chunks = index.chunks_for("pkg/app.py", APP, len(APP))
    first = chunks[0]
    assert (first.source, first.label) == ("import", "pkg/store.py") and first.text.startswith("class Store:")
    text = first.text
    for line in ['    """Keeps items in memory."""', "    kind = \"memory\"", "    def __init__(self, path: str,",
                 "                 size: int = LIMIT):", "        self.path = path",
                 "        self.items: dict[str, Item] = {}", "    def get_item(self, key: str) -> Item | None: ...",
                 "    def put(self, item: Item) -> None:", "        self.last = item"]:
        assert line in text.split("\n"), line
    assert "found" not in text and "More words" not in text and "return" not in text
    assert all(c.path != "pkg/app.py" for c in chunks)  # never the file itself
    item = next(c for c in chunks if c.source == "import" and c.text.startswith("@dataclass"))
    assert item.text == '@dataclass\nclass Item:\n    """One stored item."""\n    key: str\n    value: int = 0'


def test_absolute_imports_modules_and_re_exports_resolve():
    index = WorkspaceIndex.from_files(FILES)
    user = FILES["other/user.py"]
    chunks = index.chunks_for("other/user.py", user + "    st.\n", len(user) + 8)
    texts = [c.text for c in chunks]
    # `from pkg import open_store`: pkg/__init__.py re-exports it from .store
    assert 'def open_store(path: str) -> Store:\n    """Open a store at path."""' in texts
    # `import pkg.store as st`: the module's top-level signatures
    module = next(t for t in texts if t.startswith("LIMIT = 10"))
    assert "class Store:\n    def __init__(self, path: str,\n                 size: int = LIMIT): ..." in module
    assert "def open_store(path: str) -> Store: ..." in module and "get_item" not in module


def test_absolute_imports_resolve_in_a_src_layout_on_disk(tmp_path):
    _tree(tmp_path, {"src/mypkg/__init__.py": "", "src/mypkg/store.py": STORE, "vendor/store.py": "class Store: ...\n",
                     "tests/test_store.py": "from mypkg.store import Store\n\n\ndef test_it():\n    s = Store('p')\n"})
    index = WorkspaceIndex()
    index.add_root(str(tmp_path))
    index.scan()
    test = (tmp_path / "tests/test_store.py").read_text()
    first = index.chunks_for(str(tmp_path / "tests/test_store.py"), test, len(test))[0]
    assert (first.label, first.source) == ("src/mypkg/store.py", "import") and "def get_item(" in first.text
    assert index.context_for(str(tmp_path / "tests/test_store.py"), test, len(test)).startswith(
        "# src/mypkg/store.py\nclass Store:\n")


def test_a_from_dot_import_of_a_module_gives_the_functions_used_through_it():
    text = ("from . import util\nimport pkg.store\n\n\n"
            "def go():\n    n = util.helper_for_app(2)\n    pkg.store.open_store(n)\n")
    index = WorkspaceIndex.from_files({**FILES, "pkg/go.py": text})
    chunks = index.chunks_for("pkg/go.py", text, len(text))
    assert [(c.label, c.text.split("\n")[0]) for c in chunks[:4]] == [
        ("pkg/store.py", "def open_store(path: str) -> Store:"),  # the nearest use first
        ("pkg/store.py", "LIMIT = 10"),  # then that module's summary
        ("pkg/util.py", "def helper_for_app(n: int) -> int: ..."),
        ("pkg/util.py", "def helper_for_app(n: int) -> int: ...")]  # the function, then util's summary


def test_a_name_used_near_the_cursor_and_defined_in_another_file_comes_back():
    files = dict(FILES)
    files["pkg/worker.py"] = "class Worker:\n    def go(self, db):\n        n = helper_for_app(3)\n        db.kind\n"
    index = WorkspaceIndex.from_files(files)
    text = files["pkg/worker.py"]
    chunks = index.chunks_for("pkg/worker.py", text, len(text))
    assert ("symbol", "pkg/util.py") in _sources(chunks)
    assert any(c.source == "symbol" and c.text.startswith("class Store:") for c in chunks)  # `kind` is Store's
    assert all(c.path != "pkg/worker.py" for c in chunks)
    # A name defined in many files says nothing about which one is meant.
    common = {f"lib/m{i}.py": f"def shared_name(x):\n    return x + {i}\n" for i in range(4)}
    app = "def f():\n    shared_name(1)\n"
    index = WorkspaceIndex.from_files({**common, "app.py": app})
    assert index.chunks_for("app.py", app, len(app)) == []
    index.remove_file("lib/m3.py")
    assert [c.label for c in index.chunks_for("app.py", app, len(app))] == ["lib/m0.py", "lib/m1.py", "lib/m2.py"]


def test_similar_code_comes_with_the_line_after_it():
    loop = "".join(f"    total_{i} = compute_total(rows, weight_{i}, bias)\n" for i in range(11))
    files = {"a/train.py": "def fit(rows, bias):\n" + loop + "    return finish_training(total_0)\n" + "\n" * 8,
             "b/eval.py": "def score(rows, bias):\n" + loop,
             "b/noise.py": "def unrelated(a, b):\n    return a * b + rows\n"}
    index = WorkspaceIndex.from_files(files)
    text = files["b/eval.py"]
    similar = [c for c in index.chunks_for("b/eval.py", text, len(text)) if c.source == "similar"]
    assert [c.label for c in similar] == ["a/train.py"] and similar[0].score == 25 / 27  # fit and score differ
    assert similar[0].text == files["a/train.py"].strip()  # the window's 12 lines and the one after them


def test_context_is_stable_while_typing_on_the_cursor_line_and_deterministic():
    index = WorkspaceIndex.from_files(FILES)
    base = index.context_for("pkg/app.py", APP, len(APP))
    assert base
    for typed in ["i", "item.", "self.store.put(Item(", "from .util import helper_for_app"]:
        assert index.context_for("pkg/app.py", APP + typed, len(APP) + len(typed)) == base
    assert WorkspaceIndex.from_files(dict(reversed(FILES.items()))).context_for("pkg/app.py", APP, len(APP)) == base
    lines_after = APP + "\n        return total\n"
    assert index.context_for("pkg/app.py", lines_after, len(APP)) == base  # the cursor's line and after do not count


def test_context_keeps_whole_chunks_within_max_chars():
    index = WorkspaceIndex.from_files(FILES)
    chunks = index.chunks_for("pkg/app.py", APP, len(APP))
    blocks = [f"# {c.label}\n{c.text}" for c in chunks]
    for limit in [0, 10, len(blocks[0]), len(blocks[0]) + 1, 300, 1200, 100_000]:
        context = index.context_for("pkg/app.py", APP, len(APP), max_chars=limit)
        assert len(context) <= limit
        parts = context.split("\n\n# ") if context else []
        assert all(("# " + p if i else p) in blocks for i, p in enumerate(parts))
    assert index.context_for("pkg/app.py", APP, len(APP), max_chars=len(blocks[0])) == blocks[0]
    assert index.context_for("pkg/app.py", APP, len(APP), max_chars=100_000) == "\n\n".join(blocks)


def test_open_buffers_override_disk_and_close_restores_it(tmp_path):
    _tree(tmp_path, {"pkg/__init__.py": "", "pkg/store.py": STORE, "pkg/app.py": APP})
    index = WorkspaceIndex()
    index.add_root(str(tmp_path))
    index.scan()
    store, app = str(tmp_path / "pkg/store.py"), str(tmp_path / "pkg/app.py")

    def summary() -> str:
        return index.chunks_for(app, APP, len(APP))[0].text

    assert "def get_item" in summary()
    index.open(store, STORE.replace("def get_item(self, key: str)", "def fetch_item(self, key: bytes)"))
    assert "def fetch_item(self, key: bytes)" in summary() and "get_item" not in summary()
    index.set_file(store, STORE.replace("get_item", "saved_item"))  # saved while open: the buffer still wins
    assert "fetch_item" in summary()
    index.close(store)
    assert "def saved_item" in summary()
    index.open(str(tmp_path / "pkg/new.py"), "def brand_new(): ...\n")
    index.chunks_for(app, APP, len(APP))
    assert "brand_new" in index._symbols
    index.close(str(tmp_path / "pkg/new.py"))
    assert "brand_new" not in index._symbols and index.stats()["open_buffers"] == 0


def test_set_file_and_remove_file_update_retrieval():
    index = WorkspaceIndex.from_files(FILES)
    index.set_file("pkg/store.py", STORE.replace("class Store:", "class Store(Base):"))
    assert index.chunks_for("pkg/app.py", APP, len(APP))[0].text.startswith("class Store(Base):")
    index.remove_file("pkg/store.py")
    assert all(c.label != "pkg/store.py" for c in index.chunks_for("pkg/app.py", APP, len(APP)))
    stats = index.stats()
    assert stats["files"] == 4 and "get_item" not in index._symbols
    assert all(len(p) == len(set(p)) for p in index._post.values())


def test_replaced_files_leave_no_windows_behind():
    index = WorkspaceIndex.from_files(FILES)
    for i in range(30):
        index.set_file("pkg/store.py", STORE + f"\nEXTRA_{i} = {i}\n")
    live = {w for p in index._post.values() for w in p}
    assert {index._by_fid[index._win_fid[w]].path for w in live} == set(FILES)
    index._compact()
    assert index.stats()["dead_chunks"] == 0 and len(index._win_fid) == index.stats()["chunks"]
    assert index.chunks_for("pkg/app.py", APP, len(APP))[0].text.startswith("class Store:")


def test_scan_in_a_thread_while_requests_and_edits_run(tmp_path):
    _tree(tmp_path, {f"pkg/m{i}.py": STORE.replace("Store", f"Store{i}") for i in range(30)})
    _tree(tmp_path, {"pkg/__init__.py": "", "pkg/app.py": APP.replace(".store import Store", ".m3 import Store3")})
    index = WorkspaceIndex()
    index.add_root(str(tmp_path))
    app = str(tmp_path / "pkg/app.py")
    thread = threading.Thread(target=index.scan)
    thread.start()
    while thread.is_alive():
        index.context_for(app, APP, len(APP))
        index.open(str(tmp_path / "pkg/m5.py"), "x = 1\n")
    thread.join()
    assert index.stats()["files"] == 32
    assert index.chunks_for(app, APP.replace("Store", "Store3"), len(APP)) and index.stats()["scan"] == "done"


def test_a_line_assigning_several_attributes_is_summarised_once():
    a = "class S:\n    def __init__(self, *system):\n        self.A, self.B, self.C = split(*system)\n    def run(self):\n        return 1\n"
    b = "from .a import S\n\ns = S(1)\ns."
    ctx = WorkspaceIndex.from_files({"pkg/a.py": a, "pkg/b.py": b}).context_for("pkg/b.py", b, len(b))
    assert ctx.count("self.A, self.B, self.C = split(*system)") == 1 and "def run(self): ..." in ctx


def test_reload_reads_a_file_again_by_the_scan_rules(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text("def helper(x):\n    return x\n")
    ix = WorkspaceIndex.from_files({})
    ix.reload(str(path))
    assert ix.stats()["files"] == 1
    path.write_bytes(b"x = 1\n\0\0")  # binary now: it leaves the index, as a scan would skip it
    ix.reload(str(path))
    assert ix.stats()["files"] == 0 and ix.stats()["skipped"].get("binary") == 1
    path.write_text("y = 2\n")
    ix.reload(str(path))
    path.unlink()
    ix.reload(str(path))  # gone
    assert ix.stats()["files"] == 0


def test_elsewhere_reads_the_folders_siblings_first_and_stops_at_its_budget():
    index = WorkspaceIndex.from_files({"pkg/a.py": "A\n", "pkg/b.py": "B\n", "lib/c.py": "C\n", "z.py": "Z\n"})
    assert list(index.elsewhere("pkg/b.py")) == ["A\n", "C\n", "Z\n"]  # its own text never
    assert list(index.elsewhere("lib/new.py")) == ["C\n", "A\n", "B\n", "Z\n"]
    assert list(index.elsewhere("pkg/b.py", max_chars=4)) == ["A\n", "C\n"]
