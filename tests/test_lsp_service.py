"""The completion service with a fake engine: caches, supersession, cancellation, debounce, status, commands."""

import asyncio

import pytest

from conftest import CompilingBackend

URI = "file:///t.py"


async def ready(h):
    await asyncio.wrap_future(h.service.models.future)
    return h.service


async def test_unknown_document_and_disabled(lsp_service_factory, lsp_fake_engine):
    h = lsp_service_factory(lsp_fake_engine(), debounceMs=0)
    svc = await ready(h)
    assert await svc.complete("file:///nope.py", 0, 0) is None
    svc.documents.open(URI, "x = ")
    svc.configure({"enabled": False}, initial=False)
    assert await svc.complete(URI, 0, 4) is None
    assert svc.status()["message"].startswith("completions are off")


async def test_model_then_typed_through_then_cache(lsp_service_factory, lsp_fake_engine):
    engine = lsp_fake_engine("foo(a)")
    h = lsp_service_factory(engine, debounceMs=0)
    svc = await ready(h)
    doc = svc.documents.open(URI, "x = \n")
    c = await svc.complete(URI, 0, 4)
    assert (c.text, c.position, c.source) == ("foo(a)", (0, 4), "model")
    doc.apply("fo", (0, 4), (0, 4))  # the user types the start of the suggestion
    c = await svc.complete(URI, 0, 6)
    assert (c.text, c.source) == ("o(a)", "typed")
    doc.apply("", (0, 4), (0, 6))  # and deletes it again: the first context is cached
    c = await svc.complete(URI, 0, 4)
    assert c.source in ("typed", "cache") and c.text == "foo(a)"
    assert len(engine.calls) == 1
    assert svc.counters.model_runs == 1 and svc.counters.typed_through + svc.counters.cache_hits == 2
    st = svc.status()
    assert st["state"] == "ready" and st["tokensPerForward"] == 2.0 and st["lastLatencyMs"] is not None


async def test_newer_request_cancels_the_running_one(lsp_service_factory, lsp_fake_engine):
    engine = lsp_fake_engine("abc", hold=True)
    h = lsp_service_factory(engine, debounceMs=0)
    svc = await ready(h)
    doc = svc.documents.open(URI, "x = \n")
    first = asyncio.create_task(svc.complete(URI, 0, 4))
    await asyncio.to_thread(engine.started.wait)
    assert svc.status()["state"] == "busy"
    doc.apply("1", (0, 4), (0, 4))
    second = asyncio.create_task(svc.complete(URI, 0, 5))
    assert await first is None  # stopped between steps, not run to the end
    engine.release.set()
    assert (await second).text == "abc"
    assert engine.cancelled == 1 and svc.counters.superseded == 1
    assert any(s["state"] == "busy" for s in h.statuses) and h.statuses[-1]["state"] == "ready"


async def test_client_cancellation_stops_the_model(lsp_service_factory, lsp_fake_engine):
    engine = lsp_fake_engine("abc", hold=True)
    h = lsp_service_factory(engine, debounceMs=0)
    svc = await ready(h)
    svc.documents.open(URI, "x = \n")
    task = asyncio.create_task(svc.complete(URI, 0, 4))
    await asyncio.to_thread(engine.started.wait)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the worker sees the event at its next step; a new request then runs normally
    engine.hold = False
    assert (await svc.complete(URI, 0, 3)).text == "abc"
    assert engine.cancelled == 1 and svc.counters.cancelled == 1


async def test_burst_of_typing_reaches_the_model_once(lsp_service_factory, lsp_fake_engine):
    engine = lsp_fake_engine("zz")
    h = lsp_service_factory(engine, debounceMs=50)
    svc = await ready(h)
    doc = svc.documents.open(URI, "")
    tasks = []
    for i, ch in enumerate("import os"):
        doc.apply(ch, (0, i), (0, i))
        tasks.append(asyncio.create_task(svc.complete(URI, 0, i + 1)))
        await asyncio.sleep(0)  # let the request start: each keystroke is its own message
    results = await asyncio.gather(*tasks)
    assert results[:-1] == [None] * 8 and results[-1].text == "zz"
    assert len(engine.calls) == 1 and svc.counters.superseded == 8


async def test_model_error_keeps_serving_nothing(lsp_service_factory):
    from model.checkpoint import CheckpointError

    h = lsp_service_factory(error=CheckpointError("/no/such/model", "model folder does not exist"))
    svc = h.service
    await asyncio.wrap_future(svc.models.future)
    svc.documents.open(URI, "x = ")
    assert await svc.complete(URI, 0, 4) is None
    st = svc.status()
    assert st["state"] == "error" and "does not exist" in st["message"]
    assert h.statuses[-1]["state"] == "error"
    res = await svc.fill_holes(URI)
    assert res.edits == [] and "no model" in res.message


async def test_reload_on_model_change(lsp_service_factory, lsp_fake_engine):
    h = lsp_service_factory(lsp_fake_engine())
    svc = await ready(h)
    first = svc.models.future
    svc.configure({"maxTokens": 8}, initial=False)
    assert svc.models.future is first  # no reload for sampling settings
    svc.configure({"settings": {"hone": {"model": "/elsewhere"}}}, initial=False)
    assert svc.models.future is not first and svc.models.target.model == "/elsewhere"
    await asyncio.wrap_future(svc.models.future)
    assert svc.status()["state"] == "ready"


async def test_fill_holes_and_rewrite(lsp_service_factory, lsp_fake_engine):
    engine = lsp_fake_engine("X")
    h = lsp_service_factory(engine, maxTokens=4)
    svc = await ready(h)
    svc.documents.open(URI, "a = ???\r\nb = '😀' + ???\r\n")
    res = await svc.fill_holes(URI)
    assert res.edits == [((0, 4), (0, 7), "X0"), ((1, 11), (1, 14), "X1")]  # UTF-16 columns after the emoji
    kind, pieces, opts = engine.calls[-1]
    assert kind == "fill" and pieces == ["a = ", "\nb = '😀' + ", "\n"] and opts.max_tokens == 4
    res = await svc.rewrite(URI, (1, 4), (1, 8))
    assert res.edits == [((1, 4), (1, 8), "X0")]
    assert engine.calls[-1][2].initial_slots == 1
    svc.documents.open("file:///none.py", "nothing here")
    assert (await svc.fill_holes("file:///none.py")).message.startswith("no ??? holes")
    svc.documents.open("file:///many.py", "???" * 40)
    assert "at most" in (await svc.fill_holes("file:///many.py")).message
    assert (await svc.rewrite("file:///gone.py", (0, 0), (0, 1))).message.startswith("unknown document")


async def test_memory_stays_bounded_over_thousands_of_requests(lsp_service_factory, lsp_fake_engine):
    h = lsp_service_factory(lsp_fake_engine("x"), debounceMs=0)
    svc = await ready(h)
    for i in range(3000):
        uri = f"file:///many/{i % 700}.py"
        doc = svc.documents.get(uri) or svc.documents.open(uri, "v = 0\n")
        doc.apply(str(i), (0, 4), (0, 5 + len(str(i - 700)) if i >= 700 else 5))
        await svc.complete(uri, 0, 4)
    assert svc.counters.requests == 3000
    assert len(svc.recent) <= svc.recent.maxsize and len(svc.typed._shown) <= 64
    assert len(svc.debouncer._seen) <= 256 and not svc._live


def test_model_manager_newest_load_wins():
    import threading

    from lsp_server.models import ModelManager, Target

    gates = {"old": threading.Event(), "new": threading.Event()}

    def loader(target):
        gates[target.model].wait(30)
        return f"engine-{target.model}"

    m = ModelManager(loader=loader)
    assert m.request(Target("old", "cpu", False))
    assert not m.request(Target("old", "cpu", False))  # already loading: no second load
    old_future = m.future
    assert m.request(Target("new", "cpu", False))
    gates["new"].set()
    assert m.future.result(30) == "engine-new" and m.state == "ready"
    gates["old"].set()
    old_future.result(30)  # the older load finishes later and is discarded
    assert m.engine == "engine-new" and m.target.model == "new"


def test_model_manager_compiles_steps_after_loading():
    """A loaded engine answers at once; its steps compile afterwards and the status reads the outcome (or the failure)
    from the engine."""
    import threading
    import time

    import torch

    from lsp_server.models import ModelManager, Target
    from model.engine import Engine

    def settled(m, timeout=30):
        end = time.monotonic() + timeout
        while m.steps == "compiling" and time.monotonic() < end:
            time.sleep(0.02)

    Compiles = CompilingBackend

    backends = {"ok": Compiles("compiled"), "bad": Compiles(RuntimeError("no compiler")), "off": Compiles("compiled")}
    changes = []
    m = ModelManager(on_change=lambda: changes.append(m.steps),
                     loader=lambda t: Engine(backends[t.model], t.model, torch.device("cpu")))
    m.request(Target("ok", "cpu", False, compile=True))
    m.future.result(30)
    assert m.state == "ready" and m.steps == "compiling"  # serving (eagerly) while it compiles
    backends["ok"].release.set()
    settled(m)
    assert m.steps == "compiled" and changes[-1] == "compiled"  # the status was told
    m.request(Target("bad", "cpu", False, compile=True))
    backends["bad"].release.set()
    m.future.result(30)
    settled(m)
    assert m.steps == "eager (compiling failed: RuntimeError)" and m.state == "ready"
    m.request(Target("off", "cpu", False))  # compiling is opt-in
    m.future.result(30)
    assert m.steps == "eager"


async def test_a_placed_cursor_gets_its_completion_computed_ahead(lsp_service_factory, lsp_fake_engine, monkeypatch):
    """hone/cursor: once the cursor rests, the completion there runs without a request; the request that follows
    is answered from it (cache) without another model run, and the next keystroke types through it."""
    import lsp_server.service as service

    monkeypatch.setattr(service, "PREFETCH_REST_S", 0.01)
    engine = lsp_fake_engine("foo(a)")
    h = lsp_service_factory(engine, debounceMs=0)
    svc = await ready(h)
    doc = svc.documents.open(URI, "x = \n")
    svc.cursor(URI, 0, 4)
    await svc._prefetch
    assert len(engine.calls) == 1 and svc.counters.prefetched == 1 and svc.counters.requests == 0
    c = await svc.complete(URI, 0, 4)
    assert c.text == "foo(a)" and c.source in ("typed", "cache") and len(engine.calls) == 1
    assert c.shown_id is not None  # computed unseen, counted as shown when it is first shown
    doc.apply("f", (0, 4), (0, 4))
    assert (await svc.complete(URI, 0, 5)).text == "oo(a)" and len(engine.calls) == 1
    doc.apply("", (0, 4), (0, 5))
    svc.cursor(URI, 0, 4)  # a context already answered is not computed again
    await svc._prefetch
    assert len(engine.calls) == 1 and svc.counters.prefetched == 1


async def test_a_request_stops_the_completion_computed_ahead(lsp_service_factory, lsp_fake_engine, monkeypatch):
    """A request cancels a prefetch that is waiting for the cursor to rest, and one already running (between its
    steps); a cursor in an unknown document or while a request runs does nothing."""
    import lsp_server.service as service

    monkeypatch.setattr(service, "PREFETCH_REST_S", 0.05)
    engine = lsp_fake_engine("abc", hold=True)
    h = lsp_service_factory(engine, debounceMs=0)
    svc = await ready(h)
    svc.documents.open(URI, "x = \ny = \n")
    svc.cursor(URI, 0, 4)
    waiting = svc._prefetch
    engine.hold = False
    assert (await svc.complete(URI, 1, 4)).text == "abc"  # the request came before the cursor had rested
    assert waiting.cancelled() and len(engine.calls) == 1
    engine.hold, engine.started = True, __import__("threading").Event()
    svc.cursor(URI, 0, 4)
    await asyncio.to_thread(engine.started.wait)  # now running on the worker
    engine.hold = False
    doc_request = asyncio.create_task(svc.complete(URI, 1, 3))
    await svc._prefetch
    assert (await doc_request).text == "abc"
    assert engine.cancelled == 1 and svc.counters.prefetched == 0
    svc.cursor("file:///unknown.py", 0, 0)
    await svc._prefetch
    assert svc.counters.prefetched == 0
    svc.configure({"remote": "http://127.0.0.1:9"}, initial=True)  # a team's service is not asked on speculation
    await ready(h)
    assert svc.models.target.remote
    calls = len(engine.calls)
    svc.cursor(URI, 0, 2)
    await svc._prefetch
    assert svc.counters.prefetched == 0 and len(engine.calls) == calls


async def test_memory_goes_back_once_the_server_is_quiet(lsp_service_factory, lsp_fake_engine, monkeypatch):
    """After model runs, one trim once no model has run for QUIET_TRIM_S; a run meanwhile moves it later. Runs that
    follow each other trim at most every TRIM_EVERY_S; the first run after a quiet spell does not trim again."""
    from lsp_server import memory

    monkeypatch.setattr(memory, "QUIET_TRIM_S", 0.5)
    trims = []
    monkeypatch.setattr(memory, "trim", lambda: trims.append(1))
    svc = await ready(lsp_service_factory(lsp_fake_engine("foo(a)"), debounceMs=0))
    svc.trimmer.every_s = 0.0  # while busy, a trim after every run
    doc = svc.documents.open(URI, "x = \n")
    assert (await svc.complete(URI, 0, 4)).source == "model"
    assert svc.trimmer.trims == 0  # the first run: no busy spell yet
    await asyncio.sleep(0.1)
    doc.apply("y", (0, 4), (0, 4))
    assert (await svc.complete(URI, 0, 5)).source == "model"  # a second run re-arms the quiet trim
    assert svc.trimmer.trims == 1  # runs following each other: the busy-time trim
    await asyncio.sleep(0.25)
    assert svc.trimmer.trims == 1  # 0.35 s since the first run, 0.25 since the second: not quiet yet
    await asyncio.sleep(0.5)
    assert svc.trimmer.trims == 2 and len(trims) == svc.trimmer.trims
    await asyncio.sleep(0.6)
    assert svc.trimmer.trims == 2  # once per quiet spell, not on a timer
    doc.apply("z", (0, 5), (0, 5))
    assert (await svc.complete(URI, 0, 6)).source == "model"
    assert svc.trimmer.trims == 2  # the first run after a quiet spell: trimmed already
