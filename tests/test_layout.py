"""model.layout: one source of every request's ids, read by training examples, the sampler and the backends."""

from __future__ import annotations

import random

import pytest

from model import layout
from model.layout import Budgets, Segments, Specials
from model.training.data import build_example, layout_ids
from sampling import PREFIX, SUFFIX, Recorder

SP = Specials(bos=1, eos=2)


def test_layouts_without_context_are_the_ones_models_were_trained_on():
    seg = Segments([[10, 11], [20, 21]], [[3, 3, 3]], doc_end=True)
    assert layout.sequence("infill", seg, SP) == ([1, 10, 11, 3, 3, 3, 20, 21, 2], [3, 4, 5])
    assert layout.sequence("spm", seg, SP) == ([1, 20, 21, 2, 1, 10, 11, 3, 3, 3], [7, 8, 9])
    assert layout.stream(seg, SP) == [1, 20, 21, 2, 1, 10, 11]


def test_context_opens_the_sequence_and_is_counted_in_the_overhead():
    seg = Segments([[10], [20]], [[3]], doc_end=True, context=[30, 31])
    ids, slots = layout.sequence("spm", seg, SP)
    assert ids == [1, 1, 30, 31, 1, 20, 2, 1, 10, 3] and slots == [9]
    assert len(ids) - 5 == layout.overhead(context=True) == layout.overhead() + layout.CONTEXT_SPECIALS
    ids, slots = layout.sequence("infill", Segments([[10], [11], [20]], [[3], [3, 3]], context=[30]), Specials(None, None))
    assert ids == [30, 10, 3, 11, 3, 3, 20] and slots == [2, 4, 5]  # no BOS: no context markers either


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="holes"):
        Segments([[1], [2]], [])
    with pytest.raises(ValueError, match="one hole"):
        layout.stream(Segments([[1], [2], [3]], [[4], [5]]), SP)
    with pytest.raises(ValueError, match="layout"):
        layout.sequence("lr", Segments([[1], [2]], [[3]]), SP)


def test_clip_context_keeps_whole_lines_from_the_start():
    nl = frozenset({9})
    assert layout.clip_context([5, 6, 9, 7, 8, 9, 4], 5, nl) == [5, 6, 9]
    assert layout.clip_context([5, 6, 7], 2, nl) == [5, 6]  # no line break within the budget: a hard cut
    assert layout.clip_context([5, 9], 0, nl) == [] and layout.clip_context([5, 9], 8, nl) == [5, 9]


@pytest.mark.parametrize("lay", ["infill", "spm"])
def test_training_examples_and_the_sampler_lay_out_the_same_segments(tok, lay, spm_engine, engine):
    """Training's example ids equal the layout module's for its segments; every example fits Budgets.seq_len."""
    b = Budgets(prefix=48, middle=16, suffix=16, context=24)
    rng = random.Random(0)
    text = "import os\n\n\ndef read(path):\n    with open(path) as f:\n        return f.read()\n" * 3
    for i in range(20):
        ex = build_example(tok, text, rng, b, context=(lambda doc, at: "def helper(x):\n    return x\n") if i % 2 else None)
        ids, start = layout_ids(tok, ex, lay)
        want, slots = layout.sequence(lay, ex.segments(), Specials(tok.bos_id, tok.eos_id))
        assert ids == want and start == slots[0] and len(ids) <= b.seq_len
        assert bool(ex.context) == bool(i % 2) and len(ex.context) <= b.context
    # the sampler hands the backend the same kind of segments (recorded in the infill order)
    eng = spm_engine if lay == "spm" else engine
    rec = Recorder(eng.backend)
    from model.sampler import sample
    from model.types import SampleOptions

    sample(rec, [PREFIX, SUFFIX], SampleOptions(rule="threshold", max_tokens=8, context_budget=16), context="x = 1\n")
    ids, slots = rec.sessions[0]
    be = eng.backend
    assert ids[:3] == [be.bos_id, be.bos_id, *be.encode("x = 1\n")[:1]] and slots
