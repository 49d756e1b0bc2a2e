"""The canvas trained as a drafter (issue #24): draft rows' layout, what their canvas may see, and the
self-distillation loss on a tiny network."""

from __future__ import annotations

import random

import torch

from model.config import ModelConfig
from model.network import Denoiser
from model.testing import sample_texts
from model.training.data import DRAFT_SLOTS, Budgets, infill_batch, mask_canvas
from model.training.losses import batch_attention_mask, infill_losses

B = Budgets(prefix=48, middle=16, suffix=16)


def _model(tok, seed: int = 0) -> Denoiser:
    torch.manual_seed(seed)
    return Denoiser(ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=2, d_ff=64, layout="spm",
                                shifted=True, pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id,
                                mask_id=tok.mask_id, null_id=tok.null_id))


def test_draft_rows_continue_the_stream_into_the_middle(tok):
    batch = infill_batch(tok, sample_texts(), random.Random(3), B, 8, "spm", draft_share=1.0)
    rows = batch.draft_rows  # every row whose middle has two tokens or more
    assert rows is not None and rows.sum() >= 6
    for i in rows.nonzero().flatten().tolist():
        s, k = int(batch.start[i]), int(batch.canvas[i].sum())
        assert 2 <= k <= DRAFT_SLOTS and int(batch.teacher[i].sum()) == k
        # the canvas holds the teacher tokens, which end the stream, and sits at their positions
        assert batch.teacher[i, s - k : s].all() and torch.equal(batch.ids[i, s - k : s], batch.ids[i, s : s + k])
        assert torch.equal(batch.positions[i, s : s + k], torch.arange(s - k, s))
        assert tok.null_id not in batch.ids[i, s : s + k].tolist()
    noisy, masked = mask_canvas(batch, tok.mask_id, torch.Generator().manual_seed(0))
    assert torch.equal(masked[rows], batch.canvas[rows])  # fully masked: the drafting regime
    plain = infill_batch(tok, sample_texts(), random.Random(3), B, 8, "spm")
    assert plain.draft_rows is None and plain.positions is None


def test_the_canvas_never_sees_its_teacher_tokens(tok):
    """A draft row's canvas outputs do not change when its teacher tokens do (they are hidden from the canvas),
    while the teacher's own outputs do."""
    model = _model(tok).eval()
    batch = infill_batch(tok, sample_texts(), random.Random(4), B, 2, "spm", draft_share=1.0)
    noisy, _ = mask_canvas(batch, tok.mask_id, torch.Generator().manual_seed(0))
    mask = batch_attention_mask(model, batch)  # the mask training uses
    other = noisy.clone()
    other[batch.teacher] = (other[batch.teacher] + 7) % 200 + 10
    with torch.no_grad():
        h1, _ = model.hidden(noisy, positions=batch.positions, attn_mask=mask)
        h2, _ = model.hidden(other, positions=batch.positions, attn_mask=mask)
    assert torch.allclose(h1[batch.canvas], h2[batch.canvas], atol=1e-5)
    assert not torch.allclose(h1[batch.teacher], h2[batch.teacher], atol=1e-3)


def test_distillation_is_finite_and_falls(tok):
    model = _model(tok, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    texts = sample_texts()
    fixed = infill_batch(tok, texts, random.Random(9), B, 8, "spm", draft_share=0.5)
    gen_state = torch.Generator().manual_seed(2).get_state()

    def held() -> float:
        with torch.no_grad():
            return float(infill_losses(model.eval(), fixed, tok.mask_id, torch.Generator().set_state(gen_state)).draft_kl)

    before = held()
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    distilled = 0
    for _ in range(60):
        model.train()
        res = infill_losses(model, infill_batch(tok, texts, rng, B, 8, "spm", draft_share=0.5), tok.mask_id, gen)
        assert torch.isfinite(res.loss)
        if res.draft_kl is not None:  # (a batch may draw no row whose middle has two tokens)
            distilled += 1
            assert torch.isfinite(res.draft_kl) and 0 <= float(res.draft_agree) <= 1
        opt.zero_grad()
        res.loss.backward()
        opt.step()
    after = held()
    assert distilled > 40 and after < before, (distilled, before, after)
