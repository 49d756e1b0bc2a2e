"""Network configuration, saved as config.json beside the weights so a checkpoint rebuilds itself."""

from __future__ import annotations

import msgspec

LAYOUTS = ("infill", "spm")
VOCAB_SIZE = 8192  # the tokenizer we train and the networks built on it: special tokens included

class ModelConfig(msgspec.Struct, forbid_unknown_fields=False, kw_only=True):
    model_type: str = "hone-diffusion"  # marks the folder as ours (third-party folders say llada, Dream, ...)
    vocab_size: int = VOCAB_SIZE  # tokenizer size, special tokens included
    d_model: int = 320  # residual width
    n_layers: int = 6  # transformer blocks
    n_heads: int = 5  # attention heads; d_model must divide evenly
    d_ff: int = 864  # hidden width of the SwiGLU feed-forward (~8/3 d_model, rounded)
    max_seq_len: int = 1024  # longest canvas + context the rotary table covers
    rope_theta: float = 10000.0  # rotary base frequency
    norm_eps: float = 1e-5  # RMSNorm epsilon
    tie_embeddings: bool = True  # share the input embedding with the output head
    shifted: bool = False  # True: the prediction for position j is read at j-1 (AR-initialised, Dream-style)
    # how a request is laid out and who attends to whom (folders written before this field are "infill"):
    #   infill: bidirectional context, canvas in place; spm: one causal stream (suffix, then prefix) trained with
    #   next-token loss at every position, the canvas a bidirectional block after it (model.layout draws both)
    layout: str = "infill"
    prefix_tokens: int = 192  # the token budgets it was trained with, which the engine serves it with:
    suffix_tokens: int = 64  # prefix tokens kept (from the cursor back), suffix tokens kept (from the cursor on),
    middle_tokens: int = 64  # and canvas slots per training example
    context_tokens: int = 0  # cross-file context tokens it was trained with (model.layout; 0: none, older folders)
    pad_id: int = 0  # special token ids, copied from the tokenizer and checked against it on load
    bos_id: int = 1
    eos_id: int = 2
    mask_id: int = 3
    null_id: int = 4

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError("head dimension must be even for rotary embeddings")
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; choose one of {list(LAYOUTS)}")
        if self.layout == "spm" and not self.shifted:
            raise ValueError("layout 'spm' reads the first canvas slot off the last context token: it needs shifted logits")
        for name in ("pad_id", "bos_id", "eos_id", "mask_id", "null_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(f"{name} {getattr(self, name)} is outside the vocabulary")


PRESETS: dict[str, dict] = {
    # randomly initialised networks for tests: fast, quality irrelevant
    "tiny": dict(d_model=64, n_layers=2, n_heads=2, d_ff=128, max_seq_len=512),
    # the shipped default: ~10M parameters with an 8k vocabulary
    "small": dict(d_model=320, n_layers=6, n_heads=5, d_ff=864, max_seq_len=1024),
    # for the gpu preset
    "base": dict(d_model=512, n_layers=8, n_heads=8, d_ff=1376, max_seq_len=1024),
}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})
