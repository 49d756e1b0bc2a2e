"""Editor-shaped examples in both layouts, and canvas masks that are the same whatever the layout."""

from __future__ import annotations

import random

import pytest
import torch

from model.testing import sample_texts
from model.training.data import Budgets, build_example, choose_middle, infill_batch, layout_ids, mask_canvas


@pytest.mark.parametrize("layout", ["infill", "spm"])
def test_examples_have_editor_shape(tok, layout):
    rng = random.Random(0)
    b = Budgets(prefix=64, middle=24, suffix=24)
    text = sample_texts()[0]
    for _ in range(200):
        ex = build_example(tok, text, rng, b)
        ids, start = layout_ids(tok, ex, layout)
        n = len(ex.canvas)
        assert len(ids) <= b.seq_len and ids[0] == tok.bos_id and 1 <= n <= b.middle
        assert ids[start : start + n] == ex.canvas and len(ex.prefix) <= b.prefix and len(ex.suffix) <= b.suffix
        if layout == "spm":  # [BOS] suffix [EOS?] [BOS] prefix [canvas]
            assert ids == [tok.bos_id] + ex.suffix + [tok.eos_id] * ex.doc_end + [tok.bos_id] + ex.prefix + ex.canvas
        # nulls only at the end of the canvas (content is left-aligned)
        k = next((i for i, t in enumerate(ex.canvas) if t == tok.null_id), n)
        assert all(t == tok.null_id for t in ex.canvas[k:])
        assert tok.mask_id not in ids


def test_rest_of_line_middles_end_at_newline():
    rng = random.Random(1)
    text = "a = 1\nbb = 22\nccc = 333\n"
    for _ in range(50):
        c, e = choose_middle(text, rng, "rest_of_line")
        assert "\n" not in text[c:e] and (e == len(text) or text[e] == "\n")


def test_masks_are_the_same_in_every_layout_and_complementary_pairs_cover_the_canvas(tok):
    b = Budgets(prefix=48, middle=16, suffix=16)
    batches = {lay: infill_batch(tok, sample_texts(), random.Random(3), b, 8, lay, pairs=True) for lay in ("infill", "spm")}
    masked_targets = {}
    for lay, batch in batches.items():
        noisy, m = mask_canvas(batch, tok.mask_id, torch.Generator().manual_seed(0), "clipped", complementary=True)
        assert (m <= batch.canvas).all() and m.any(1).all() and ((noisy == tok.mask_id) == m).all()
        masked_targets[lay] = [batch.ids[i][m[i]].tolist() for i in range(8)]
        for i in range(0, 8, 2):  # each pair: one example, masks that split its canvas between the two rows
            both = m[i] & m[i + 1]
            either = m[i] | m[i + 1]
            assert torch.equal(batch.ids[i], batch.ids[i + 1])
            assert not both.any() or int(both.sum()) == 1  # only the at-least-one-slot rule may overlap
            assert (either == batch.canvas[i]).all() or int(m[i + 1].sum()) == 1
    assert masked_targets["infill"] == masked_targets["spm"]
