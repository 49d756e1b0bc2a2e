"""Hone's diffusion engine: tokenizer, network, sampler, checkpoints, training and evaluation."""

from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"
