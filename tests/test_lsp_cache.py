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


def test_lru_evicts_at_its_byte_bound():
    from lsp_server.cache import ENTRY_OVERHEAD, LRU, text_bytes

    lru = LRU(100, max_bytes=3 * (ENTRY_OVERHEAD + 10), size=lambda k, v: text_bytes(v))
    for i in range(5):
        lru.put(i, "x" * 10)
    assert len(lru) == 3 and lru.get(0) is None and lru.get(4) == "x" * 10
    assert lru.nbytes == 3 * (ENTRY_OVERHEAD + 10) and lru.stats()["evicted"] == 2
    lru.put(9, "y" * 10_000)  # one entry over the bound alone is kept (the newest), the rest go
    assert len(lru) == 1 and lru.nbytes == ENTRY_OVERHEAD + 10_000
    lru.pop(9)
    assert lru.nbytes == 0 and len(lru) == 0


def test_lru_replacing_a_key_recounts_its_bytes():
    from lsp_server.cache import LRU, text_bytes

    lru = LRU(4, max_bytes=10_000, size=lambda k, v: text_bytes(v))
    lru.put("a", "x" * 100)
    lru.put("a", "x" * 10)
    assert len(lru) == 1 and lru.nbytes == text_bytes("x" * 10)


def test_typed_through_is_bounded_in_bytes():
    from lsp_server.cache import TypedThrough

    typed = TypedThrough(max_docs=64, max_bytes=20_000)
    for i in range(64):
        typed.remember(f"file:///{i}.py", "a" * 2000, 1000, "suggestion")
    st = typed.stats()
    assert st["bytes"] <= 20_000 and st["entries"] < 64 and st["evicted"] > 0
