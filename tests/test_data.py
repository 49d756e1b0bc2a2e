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


def test_cross_file_lines_give_middles_that_finish_a_use_of_another_files_name():
    from model.training.repos import cross_file_spots

    files = {"store.py": "class Store:\n    def fetch_all(self, key):\n        return key\n\ndef make_store():\n    return Store()\n",
             "app.py": "import os\n\ndef run(s):\n    rows = s.fetch_all(os.sep)\n    other = make_store()\n    return rows, other\n"}
    spots = cross_file_spots(files)
    assert set(spots) == {"app.py"}  # store.py uses nothing app.py defines
    text = files["app.py"]
    assert [text[at:].split("(")[0] for _, at in spots["app.py"]] == ["fetch_all", "make_store"]
    rng = random.Random(0)
    for _ in range(40):
        c, e = choose_middle(text, rng, spots=spots["app.py"])
        assert text[e] == "\n" and any(lo <= c <= at for lo, at in spots["app.py"])
        assert text[c:e].rstrip().endswith(")")


def test_the_cross_file_context_is_read_never_a_target(tok):
    """The same examples with and without cross-file context carry a loss at the same number of positions: the
    context ([CTX], its tokens, the BOS after it) is input only."""
    from model.network import Denoiser
    from model.config import ModelConfig
    from model.training.losses import infill_losses

    b = Budgets(prefix=48, middle=16, suffix=16, context=32)
    texts = sample_texts()
    contexts = {t: (lambda doc, at: "def helper(x):\n    return x + 1\n") for t in texts}
    plain = infill_batch(tok, texts, random.Random(5), b, 4, "spm")
    ctx = infill_batch(tok, texts, random.Random(5), b, 4, "spm", contexts=contexts)
    assert ctx.cross.any() and not plain.cross.any() and ctx.cross.sum(1).min() > 3
    assert not (ctx.cross & (ctx.canvas | ~ctx.valid)).any()
    model = Denoiser(ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2, d_ff=64, layout="spm",
                                 shifted=True, pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id,
                                 mask_id=tok.mask_id, null_id=tok.null_id))
    sup = [infill_losses(model, batch, tok.mask_id, torch.Generator().manual_seed(0))[3] for batch in (plain, ctx)]
    assert sup[0] == sup[1]
