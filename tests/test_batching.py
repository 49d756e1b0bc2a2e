"""Several requests in one engine call: batched canvas steps and stream extensions equal single ones, and
fill_many answers each call as fill would (greedy decoding: the same text), with far fewer forwards than the
calls took alone."""

from __future__ import annotations

import threading

import torch

import model.batching as batching
from model.engine import Engine
from model.layout import Segments
from model.types import Cancelled, SampleOptions
from sampling import PREFIX, SUFFIX


def _step(be, prefix: str, n: int):
    stream = be.stream(Segments([be.encode(prefix), be.encode(SUFFIX)], [[]], doc_end=True))
    with torch.no_grad():
        h, kv = be.model.hidden(torch.tensor([stream]), causal=True, keep_kv=True)
    ids = torch.tensor([[be.mask_id, 5, be.mask_id, 7, 9, be.mask_id, 4, 8][:n]])
    return ids, torch.arange(len(stream), len(stream) + n), kv, h[0, -1:]


def test_batched_canvas_step_equals_single_steps(spm_engine):
    be = spm_engine.backend
    steps = [_step(be, PREFIX, 6), _step(be, "x = 1\n", 3), _step(be, PREFIX + "a + b", 8)]
    with torch.no_grad():
        got = batching.batched_canvas_logits(be.model, be.mask_id, steps)
        for out, step in zip(got, steps):
            torch.testing.assert_close(out, be.model.canvas_logits(*step), rtol=1e-4, atol=1e-4)


def test_batched_stream_extensions_equal_single_ones(spm_engine):
    be = spm_engine.backend
    steps = []
    for prefix, new in ((PREFIX, [5, 9, 7]), ("x = 1\n", [11]), (PREFIX + "a + b", [8, 6, 4, 5, 30, 31])):
        *_, kv, _ = _step(be, prefix, 1)
        length = kv[0][0].shape[2]
        steps.append((torch.tensor([new]), torch.arange(length, length + len(new)), kv))
    with torch.no_grad():
        got = batching.batched_extend(be.model, steps)
        for (h, kv), step in zip(got, steps):
            want_h, want_kv = be.model.extend_stream(*step)
            torch.testing.assert_close(h, want_h, rtol=1e-4, atol=1e-4)
            for (k, v), (wk, wv) in zip(kv, want_kv):
                torch.testing.assert_close(k, wk, rtol=1e-4, atol=1e-4)
                torch.testing.assert_close(v, wv, rtol=1e-4, atol=1e-4)


def test_autoregressive_calls_share_their_forwards(spm_dir, monkeypatch):
    engine = Engine.load(spm_dir, "cpu", threads=1)
    calls = [([PREFIX, SUFFIX], SampleOptions(mode="line", rule="ar", max_tokens=12), None, None),
             ([PREFIX + "a + b", SUFFIX], SampleOptions(mode="line", rule="ar", max_tokens=12), None, None),
             (["import os\n", "\n"], SampleOptions(mode="free", rule="ar", max_tokens=12, draft="none"), None, None)]
    alone = [engine.fill(*c[:2]) for c in calls]
    widths = []
    real = batching.batched_extend
    monkeypatch.setattr(batching, "GATHER_S", 2.0)  # as above: no race with a loaded core
    monkeypatch.setattr(batching, "batched_extend", lambda m, steps: widths.append(len(steps)) or real(m, steps))
    results = engine.fill_many(calls)
    assert [r.texts for r in results] == [r.texts for r in alone]
    assert widths and max(widths) == 3  # the three streams' steps ran together
    assert len(widths) < sum(r.stats.forwards for r in alone)


def test_fill_many_answers_each_call_as_fill_would(spm_dir, monkeypatch):
    engine = Engine.load(spm_dir, "cpu", threads=1)
    cancelled = threading.Event()
    cancelled.set()
    calls = [([PREFIX, SUFFIX], SampleOptions(mode="line", max_tokens=16, rule="threshold"), None, None),
             (["import os\n", "\n"], SampleOptions(mode="block", max_tokens=24), None, None),
             ([PREFIX + "a + b", SUFFIX], SampleOptions(mode="block", max_tokens=24, rule="one"), None, None),
             ([PREFIX, SUFFIX], SampleOptions(mode="line", rule="ar"), None, None),
             ([PREFIX, SUFFIX], SampleOptions(), cancelled, None)]
    alone = [engine.fill(*c[:2]).texts for c in calls[:-1]]
    widths = []
    real = batching.batched_canvas_logits
    # a ready step waits for the others as long as they may need on a loaded machine (the context encodes run
    # one at a time, and 2 ms is shorter than one of them on a busy CI core): the widths no longer race
    monkeypatch.setattr(batching, "GATHER_S", 2.0)
    monkeypatch.setattr(batching, "batched_canvas_logits", lambda m, k, steps: widths.append(len(steps)) or real(m, k, steps))
    results = engine.fill_many(calls)
    assert [r.texts for r in results[:-1]] == alone
    assert isinstance(results[-1], Cancelled)
    assert widths and max(widths) >= 3  # the diffusion calls' steps ran together
    steps_alone = sum(r.stats.forwards for r in results[:3])
    assert len(widths) < steps_alone  # fewer forwards than the calls took one by one


def test_fill_many_on_other_backends_runs_calls_in_turn(engine):
    calls = [([PREFIX, SUFFIX], SampleOptions(max_tokens=8), None, None),
             ([PREFIX, SUFFIX], SampleOptions(rule="ar"), None, None)]  # rule 'ar' needs an spm model
    first, second = engine.fill_many(calls)
    assert first.texts == engine.fill(*calls[0][:2]).texts
    assert isinstance(second, ValueError)
