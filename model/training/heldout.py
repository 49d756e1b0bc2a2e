"""Fixed held-out batches and the losses on them: the same examples and masked slots in every layout, so
runs of different recipes compare on equal terms."""

from __future__ import annotations

import random

import torch

from ..network import Denoiser
from ..tokenizer import HoneTokenizer
from ..layout import Budgets
from .data import infill_batch
from .losses import infill_losses

HELDOUT_SEED = 1234


def heldout_batches(tok: HoneTokenizer, texts: list[str], budgets: Budgets, layout: str, n: int = 8,
                    contexts: dict | None = None, spots: dict | None = None, draft_share: float = 0.0) -> list:
    """Fixed held-out batches with their mask-generator states: the same examples and masked slots in any layout,
    with or without cross-file context (`contexts`, `spots`: training.repos.RepoContexts.fixed; with spots every
    example completes a cross-file line)."""
    rng, gen = random.Random(HELDOUT_SEED), torch.Generator().manual_seed(HELDOUT_SEED)
    out = []
    for _ in range(n):
        out.append((infill_batch(tok, texts, rng, budgets, 16, layout, contexts=contexts, spots=spots,
                                 cross_share=1.0, draft_share=draft_share), gen.get_state()))
        torch.rand(16 * budgets.middle, generator=gen)  # advance so each batch draws new masks
    return out


@torch.no_grad()
def evaluate_heldout(model: Denoiser, batches: list, mask_id: int, device) -> dict:
    """Held-out masked-canvas CE (and next-token CE over the context for spm models), uniform masks; batches with
    draft rows add the canvas' agreement with the stream there (draft_kl, draft_agree)."""
    was_training = model.training
    model.eval()
    sums: dict[str, list[float]] = {}
    for batch, state in batches:
        res = infill_losses(model, batch.to(device), mask_id, torch.Generator().set_state(state))
        for name, v in (("masked_ce", res.canvas_ce), ("next_ce", res.next_ce), ("draft_kl", res.draft_kl),
                        ("draft_agree", res.draft_agree)):
            if v is not None:
                sums.setdefault(name, []).append(float(v))
    model.train(was_training)
    return {f"heldout_{name}": sum(v) / len(v) for name, v in sums.items()}
