"""Logit conventions of diffusion LM families: which sequence position's output predicts a canvas slot."""

from __future__ import annotations

STYLES = ("auto", "llada", "dream")


def shift_sources(slot_pos: list[int], shifted: bool) -> list[int]:
    """Sequence position whose output predicts each slot (j, or j-1 for shifted models)."""
    if not shifted:
        return list(slot_pos)
    if min(slot_pos) < 1:
        raise ValueError("a shifted model needs a token before the first slot")
    return [p - 1 for p in slot_pos]


def detect_style(cfg: dict) -> str:
    """'llada' (logits unshifted) or 'dream' (Qwen2-based, shifted) from a config.json dict."""
    kind = (str(cfg.get("model_type", "")) + " " + " ".join(cfg.get("architectures") or [])).lower()
    if "llada" in kind:
        return "llada"
    if any(k in kind for k in ("dream", "qwen", "diffucoder", "dcoder")):
        return "dream"
    raise ValueError(f"cannot tell the logit convention of model_type {cfg.get('model_type')!r}; pass style='llada' or 'dream'")
