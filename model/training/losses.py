"""The training objectives: masked-diffusion loss on the canvas (plus next-token loss over the causal context
in the spm layout), and plain next-token loss for the AR phase of the ar-diffusion route."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..network import Denoiser, infill_attention_mask, spm_attention_mask
from .data import InfillBatch, mask_canvas


class Losses(NamedTuple):
    loss: torch.Tensor  # what training minimises
    canvas_ce: torch.Tensor  # mean CE over masked canvas slots
    next_ce: torch.Tensor | None  # mean next-token CE over the file's stream (spm), else None
    supervised: int  # positions with a target
    draft_kl: torch.Tensor | None = None  # draft rows: mean KL(stream || canvas) over slots 1.. (None without any)
    draft_agree: torch.Tensor | None = None  # draft rows: share of those slots whose top token is the stream's


def batch_attention_mask(model: Denoiser, batch: InfillBatch) -> torch.Tensor:
    """The training batch's attention mask (B, 1, T, T) in the model's layout; draft rows' canvases never see their
    teacher tokens."""
    if model.cfg.layout != "spm":
        return infill_attention_mask(~batch.canvas)
    return spm_attention_mask(batch.canvas, batch.valid, None if batch.teacher is None else batch.valid & ~batch.teacher)


def infill_losses(model: Denoiser, batch: InfillBatch, mask_id: int, gen: torch.Generator, schedule: str = "uniform",
                  complementary: bool = False, draft_weight: float = 1.0) -> Losses:
    """One forward in the model's layout. The masked-canvas CE is the mean over masked slots (comparable across
    layouts); the spm layout adds next-token CE at every position of the file's stream (the last one predicts the
    first slot). Draft rows (data.draft_example) add self-distillation, weighted `draft_weight`: slot j >= 1 of their
    fully masked canvas learns the stream's teacher-forced next-token distribution at the same place, what greedy
    decoding verifies a draft against; their slot 0 is the stream's own (the engine reads it off the last token)."""
    noisy, masked = mask_canvas(batch, mask_id, gen, schedule, complementary)
    spm = model.cfg.layout == "spm"
    draft = batch.draft_rows
    h_all, _ = model.hidden(noisy, positions=batch.positions, attn_mask=batch_attention_mask(model, batch))  # (B, T, D)
    h, tgt, on_canvas = h_all, batch.ids, masked
    if model.cfg.shifted:  # the output at j-1 predicts slot j
        h, tgt, on_canvas = h[:, :-1], tgt[:, 1:], masked[:, 1:]
    # the stream's next tokens: the file's, not the cross-file context's (it is read, never written)
    on_context = (batch.is_context[:, :-1] & batch.valid[:, 1:] & ~batch.cross[:, 1:]) if spm else torch.zeros_like(on_canvas)
    if draft is not None:  # a draft row's last teacher token does not predict its canvas' slot 0
        on_context = on_context & ~(batch.canvas[:, 1:] & draft[:, None])
        on_canvas = on_canvas & ~(batch.canvas[:, 1:] & ~batch.canvas[:, :-1] & draft[:, None])
    sel = on_canvas | on_context
    logits = model.head(h[sel])  # (N, V): the head only where there is a target
    # training takes the CE in the autocast dtype: the fp32 copy of (N, V) logits was a quarter of an spm step
    ce = F.cross_entropy(logits if model.training else logits.float(), tgt[sel], reduction="none")
    canvas_ce = ce[on_canvas[sel]].mean()
    if not spm:
        return Losses(canvas_ce, canvas_ce, None, int(sel.sum()))
    context_ce = ce[on_context[sel]].mean()
    if draft is None:
        return Losses(canvas_ce + context_ce, canvas_ce, context_ce, int(sel.sum()))
    kl, agree = draft_distillation(model, h_all, batch)
    return Losses(canvas_ce + context_ce + draft_weight * kl, canvas_ce, context_ce, int(sel.sum()), kl, agree)


def draft_distillation(model: Denoiser, h: torch.Tensor, batch: InfillBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Draft rows' canvas slots 1.. against the stream at the same places: the canvas state at slot j-1 predicts
    slot j, the teacher token there predicts the same token having read the true ones before it (no gradient to
    the teacher). h: (B, T, D) unshifted. -> (mean KL(teacher || canvas), share of equal top tokens)."""
    nxt = lambda m: m & F.pad(m[:, 1:], (0, 1))  # noqa: E731 - positions followed by one of the same kind
    student = nxt(batch.canvas & batch.draft_rows[:, None])
    teacher = nxt(batch.teacher)  # row by row, in order, as many as the student's
    s = model.head(h[student]).float().log_softmax(-1)
    with torch.no_grad():
        t = model.head(h[teacher]).float().log_softmax(-1)
    kl = F.kl_div(s, t, log_target=True, reduction="batchmean")
    return kl, (s.argmax(-1) == t.argmax(-1)).float().mean()


def ar_loss(model: Denoiser, ids, pad_id: int):
    h, _ = model.hidden(ids[:, :-1], causal=True)
    tgt = ids[:, 1:]
    sel = tgt != pad_id
    return F.cross_entropy(model.head(h[sel]).float(), tgt[sel])


class LossModule(torch.nn.Module):
    """Every objective behind one forward, so DistributedDataParallel sees (and syncs) every step.
    -> Losses (no masked-canvas CE in the AR phase)."""

    def __init__(self, model: Denoiser, pad_id: int, mask_id: int, schedule: str = "uniform", complementary: bool = False,
                 draft_weight: float = 1.0):
        super().__init__()
        self.model, self.pad_id, self.mask_id = model, pad_id, mask_id
        self.schedule, self.complementary, self.draft_weight = schedule, complementary, draft_weight

    def forward(self, ids=None, batch: InfillBatch | None = None, gen: torch.Generator | None = None) -> Losses:
        if batch is None:
            loss = ar_loss(self.model, ids, self.pad_id)
            return Losses(loss, None, loss, int((ids[:, 1:] != self.pad_id).sum()))
        return infill_losses(self.model, batch, self.mask_id, gen, self.schedule, self.complementary, self.draft_weight)
