"""Attention layouts of the network."""

from __future__ import annotations


import torch

from model.network import spm_attention_mask


def test_spm_attention_mask_follows_the_layout():
    # one row: 5 context tokens, 3 canvas slots, 2 pads
    canvas = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1, 0, 0]], dtype=torch.bool)
    valid = torch.tensor([[1] * 8 + [0, 0]], dtype=torch.bool)
    m = spm_attention_mask(canvas, valid)[0, 0]
    ctx = torch.arange(5)
    assert torch.equal(m[:5, :5], torch.ones(5, 5, dtype=torch.bool).tril())  # the context is one causal stream
    assert not m[:5, 5:].any()  # and never sees the canvas (or padding)
    assert m[5:8, :8].all() and not m[5:8, 8:].any()  # the canvas sees every real position
    assert m[ctx, ctx].all()
