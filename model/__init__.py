"""Hone's diffusion engine: tokenizer, network, sampler, checkpoints, training and evaluation."""

import os
from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"


def cache_home() -> Path:
    """Hone's cache folder (compiled steps, adapted models): $HONE_CACHE, else the user's (~/.cache/hone)."""
    base = os.environ.get("HONE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hone"
    return Path(base)
