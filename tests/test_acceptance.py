"""The acceptance counters: each outcome of a shown suggestion, per language, bounded; and through the service."""

import asyncio

from lsp_server.acceptance import Acceptance


def test_each_outcome_is_counted_per_language():
    a = Acceptance()
    a.language("file:///a.py", "python")
    a.language("file:///b.lua", "lua")
    first = a.shown("file:///a.py", "foo(a)")
    assert a.accepted(first) and not a.accepted(first)  # the editor's command, once
    second = a.shown("file:///a.py", "bar(b)")
    assert a.typed("file:///a.py", "(b)") == second  # typed "bar": the rest is the same suggestion
    a.shown("file:///a.py", "baz(c)")  # settles the second: partly taken
    a.typed("file:///a.py", "")  # ... the third typed to its end
    a.shown("file:///b.lua", "x = 1")
    a.shown("file:///b.lua", "y = 2")  # the first lua one left untouched: dismissed
    a.closed("file:///a.py")
    st = a.stats()
    assert st["python"] == {"shown": 3, "accepted": 1, "typed": 1, "partial": 1, "dismissed": 0, "showing": 0,
                            "acceptedRate": round(2 / 3, 4), "partialRate": round(1 / 3, 4)}
    assert st["lua"]["dismissed"] == 1 and st["lua"]["showing"] == 1 and st["lua"]["acceptedRate"] == 0
    assert a.typed("file:///c.py", "x") is None  # nothing showing there


def test_open_suggestions_are_bounded():
    a = Acceptance(max_docs=4)
    for i in range(10):
        a.shown(f"file:///{i}.py", "x")
    st = a.stats()["unknown"]
    assert st["showing"] == 4 and st["dismissed"] == 6


async def test_the_service_names_each_suggestion_for_the_accept_command(lsp_service_factory, lsp_fake_engine):
    h = lsp_service_factory(lsp_fake_engine("foo(a)"), debounceMs=0)
    svc = h.service
    await asyncio.wrap_future(svc.models.future)
    uri = "file:///t.py"
    svc.acceptance.language(uri, "python")
    doc = svc.documents.open(uri, "x = \n")
    c = await svc.complete(uri, 0, 4)
    assert c.shown_id is not None
    doc.apply("fo", (0, 4), (0, 4))
    typed = await svc.complete(uri, 0, 6)
    assert (typed.text, typed.source, typed.shown_id) == ("o(a)", "typed", c.shown_id)
    assert svc.acceptance.accepted(typed.shown_id)
    assert svc.acceptance.stats()["python"]["accepted"] == 1


async def test_the_confidence_gate_hides_what_the_model_is_unsure_of(lsp_service_factory, lsp_fake_engine):
    import math

    engine = lsp_fake_engine("foo(a)")
    engine.log_prob = math.log(0.05)  # the model gives its answer 5 %
    h = lsp_service_factory(engine, debounceMs=0, minConfidence=0.1)
    svc = h.service
    await asyncio.wrap_future(svc.models.future)
    svc.documents.open("file:///t.py", "x = \n")
    assert await svc.complete("file:///t.py", 0, 4) is None and svc.counters.gated == 1
    svc.configure({"minConfidence": 0.01}, initial=False)
    assert (await svc.complete("file:///t.py", 0, 4)).text == "foo(a)"
