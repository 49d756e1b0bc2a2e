"""The training objectives: masked-diffusion loss on the canvas (plus next-token loss over the causal context
in the spm layout), and plain next-token loss for the AR phase of the ar-diffusion route."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..network import Denoiser, infill_attention_mask, spm_attention_mask
from .data import InfillBatch, mask_canvas


def infill_losses(model: Denoiser, batch: InfillBatch, mask_id: int, gen: torch.Generator, schedule: str = "uniform",
                  complementary: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
    """One forward in the model's layout -> (loss, masked-canvas CE, next-token CE over the context or None,
    supervised positions). The masked-canvas CE is the mean over masked slots (comparable across layouts);
    the spm layout adds next-token CE at every position of the file's stream (the last one predicts the first slot)."""
    noisy, masked = mask_canvas(batch, mask_id, gen, schedule, complementary)
    spm = model.cfg.layout == "spm"
    mask = spm_attention_mask(batch.canvas, batch.valid) if spm else infill_attention_mask(~batch.canvas)
    h, _ = model.hidden(noisy, attn_mask=mask)  # (B, T, D)
    tgt, on_canvas = batch.ids, masked
    if model.cfg.shifted:  # the output at j-1 predicts slot j
        h, tgt, on_canvas = h[:, :-1], tgt[:, 1:], masked[:, 1:]
    # the stream's next tokens: the file's, not the cross-file context's (it is read, never written)
    on_context = (batch.is_context[:, :-1] & batch.valid[:, 1:] & ~batch.cross[:, 1:]) if spm else torch.zeros_like(on_canvas)
    sel = on_canvas | on_context
    logits = model.head(h[sel])  # (N, V): the head only where there is a target
    # training takes the CE in the autocast dtype: the fp32 copy of (N, V) logits was a quarter of an spm step
    ce = F.cross_entropy(logits if model.training else logits.float(), tgt[sel], reduction="none")
    canvas_ce = ce[on_canvas[sel]].mean()
    if not spm:
        return canvas_ce, canvas_ce, None, int(sel.sum())
    context_ce = ce[on_context[sel]].mean()
    return canvas_ce + context_ce, canvas_ce, context_ce, int(sel.sum())


def ar_loss(model: Denoiser, ids, pad_id: int):
    h, _ = model.hidden(ids[:, :-1], causal=True)
    tgt = ids[:, 1:]
    sel = tgt != pad_id
    return F.cross_entropy(model.head(h[sel]).float(), tgt[sel])


class LossModule(torch.nn.Module):
    """Every objective behind one forward, so DistributedDataParallel sees (and syncs) every step.
    -> (loss, masked-canvas CE or None, next-token CE or None, supervised positions)."""

    def __init__(self, model: Denoiser, pad_id: int, mask_id: int, schedule: str = "uniform", complementary: bool = False):
        super().__init__()
        self.model, self.pad_id, self.mask_id = model, pad_id, mask_id
        self.schedule, self.complementary = schedule, complementary

    def forward(self, ids=None, batch: InfillBatch | None = None, gen: torch.Generator | None = None):
        if batch is None:
            loss = ar_loss(self.model, ids, self.pad_id)
            return loss, None, loss, int((ids[:, 1:] != self.pad_id).sum())
        return infill_losses(self.model, batch, self.mask_id, gen, self.schedule, self.complementary)
