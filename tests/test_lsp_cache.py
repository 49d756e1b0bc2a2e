"""Bounded caches: the LRU, context keys, typed-through suggestions."""

from lsp_server.cache import LRU, TypedThrough, context_key


def test_lru_is_bounded_and_recency_ordered():
    c = LRU(3)
    for i in range(10):
        c.put(i, str(i))
    assert len(c) == 3 and c.get(0) is None
    c.get(7)
    c.put(10, "10")
    assert c.get(7) == "7" and c.get(8) is None


def test_context_key_is_short_and_stable():
    assert context_key("a" * 10_000, 1) == context_key("a" * 10_000, 1) != context_key("a" * 10_000, 2)
    assert len(context_key("\ud800")) == 16  # lone surrogates hash too


def test_typed_through():
    t = TypedThrough()
    doc = "x = foo(\n"
    t.remember("u", doc, 8, "a, b)")
    assert t.lookup("u", doc, 8) == "a, b)"  # same place: the whole suggestion again
    typed = "x = foo(a,\n"
    assert t.lookup("u", typed, 10) == " b)"
    assert t.lookup("u", "x = foo(z\n", 9) is None  # typed something else
    assert t.lookup("u", "y = foo(a,\n", 10) is None  # the text before it changed
    assert t.lookup("u", "x = foo(a,\nmore", 10) is None  # the text after it changed
    assert t.lookup("u", "x = foo(a, b)\n", 13) is None  # typed it all
    assert t.lookup("other", typed, 10) is None
    t.forget("u")
    assert t.lookup("u", doc, 8) is None


def test_typed_through_is_bounded():
    t = TypedThrough(max_docs=4)
    for i in range(100):
        t.remember(f"u{i}", "abc", 3, "def")
    assert len(t._shown) == 4
