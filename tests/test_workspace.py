"""The workspace index (model.workspace): file symbols, scanning and ignore rules, and cross-file retrieval."""

from __future__ import annotations

from model.workspace import FileSymbols, file_symbols

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
