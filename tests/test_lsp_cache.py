"""Bounded caches and the adaptive debounce."""

from lsp_server.cache import LRU, TypedThrough, context_key
from lsp_server.debounce import MAX_DELAY_S, Debouncer


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


def test_debounce_adapts_to_typing_speed():
    d = Debouncer()
    assert d.delay("u", 0.03, now=0.0) == 0.03  # first request: the base
    now = 0.0
    for _ in range(5):  # 100 ms between keys: fast typing waits a bit longer than one gap
        now += 0.1
        delay = d.delay("u", 0.03, now)
    assert 0.1 < delay <= MAX_DELAY_S
    assert d.delay("u", 0.03, now + 5.0) == 0.03  # after a pause: the base again
    assert d.delay("u", 0.0, now + 5.1) == 0.0  # base 0 turns it off
    assert d.delay("v", 0.03, now + 5.1) == 0.03  # per document
