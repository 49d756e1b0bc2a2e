"""The adaptive debounce."""

from lsp_server.debounce import MAX_DELAY_S, Debouncer


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


def test_a_model_that_keeps_up_answers_while_the_user_types():
    d = Debouncer()
    now = 0.0
    d.delay("u", 0.01, now)
    d.ran(0.2)  # slower than the 100 ms between keys: fast typing waits for a pause
    for _ in range(4):
        now += 0.1
        delay = d.delay("u", 0.01, now)
    assert delay > 0.1
    for _ in range(3):
        d.ran(0.03)  # now it answers well within one gap: only the base
    now += 0.1
    assert d.delay("u", 0.01, now) == 0.01
    d.ran(0.5)  # one slow run (a block, a cold context) does not switch waiting back on
    now += 0.1
    assert d.delay("u", 0.01, now) == 0.01


def test_the_per_document_times_are_bounded_in_bytes_too():
    """URIs are the client's and of any length: documents with long names are forgotten at the byte bound, least
    recently seen first, before the entry bound is reached."""
    d = Debouncer(max_docs=256, max_bytes=10_000)
    for i in range(40):
        d.delay(f"file:///{i:03d}" + "x" * 1000, 0.03, now=float(i))
    st = d.stats()
    assert st["bytes"] <= st["maxBytes"] == 10_000 and 0 < st["entries"] < 40 and st["evicted"] > 0
