"""Transformer denoiser: pre-norm RMSNorm, rotary positions, SDPA attention, no time input.

In both attention layouts (config.layout) the context never attends to the canvas, so its keys and
values are computed once per request and each denoising step runs only the canvas (an exact cache):
- infill: context tokens (prefix, suffix, the text between holes) attend to all context tokens;
- spm: the context is one causal stream, suffix then prefix, so a keystroke that extends the prefix
  only encodes the new tokens. Canvas tokens attend to everything in both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

KVCache = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: k, v each (B, H, Tc, Dh)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rotary_tables(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables (max_seq_len, Dh/2)."""
    dh = cfg.d_model // cfg.n_heads
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, dh, 2, dtype=torch.float32) / dh))
    ang = torch.outer(torch.arange(cfg.max_seq_len, dtype=torch.float32), inv)
    return ang.cos(), ang.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, Dh); cos/sin (B, 1, T, Dh/2) -> rotated x, same shape and dtype."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x, cos, sin, attn_mask=None, causal=False, past=None):
        """x (B, T, D) -> (B, T, D) and this call's (k, v) (B, H, T, Dh).

        past: cached context (k, v) that these tokens attend to as well (no mask needed)."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        kk, vv = k, v
        if past is not None:
            kk = torch.cat((past[0].to(k.dtype), k), dim=2)
            vv = torch.cat((past[1].to(v.dtype), v), dim=2)
        y = F.scaled_dot_product_attention(q, kk, vv, attn_mask=attn_mask, is_causal=causal and attn_mask is None)
        return self.out(y.transpose(1, 2).reshape(b, t, d)), (k, v)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.norm2 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.gate_up = nn.Linear(cfg.d_model, 2 * cfg.d_ff, bias=False)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x, cos, sin, attn_mask=None, causal=False, past=None):
        a, kv = self.attn(self.norm1(x), cos, sin, attn_mask, causal, past)
        x = x + a
        gate, up = self.gate_up(self.norm2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up), kv


class Denoiser(nn.Module):
    """Token ids -> logits over the vocabulary, one per position (B, T) -> (B, T, V)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        cos, sin = rotary_tables(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        for blk in self.blocks:  # scale residual writes by depth (GPT-2 style)
            nn.init.normal_(blk.attn.out.weight, std=0.02 / (2 * cfg.n_layers) ** 0.5)
            nn.init.normal_(blk.down.weight, std=0.02 / (2 * cfg.n_layers) ** 0.5)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _rope(self, positions: torch.Tensor):
        """positions (B, T) or (T,) -> cos, sin (B|1, 1, T, Dh/2)."""
        if positions.dim() == 1:
            positions = positions.unsqueeze(0)
        if not torch.compiler.is_compiling() and int(positions.max()) >= self.cfg.max_seq_len:  # (a graph break)
            raise ValueError(f"position {int(positions.max())} exceeds max_seq_len {self.cfg.max_seq_len}")
        return self.rope_cos[positions].unsqueeze(1), self.rope_sin[positions].unsqueeze(1)

    def hidden(self, ids, positions=None, attn_mask=None, causal=False, past: KVCache | None = None, keep_kv=False):
        """ids (B, T) -> final normed hidden states (B, T, D) and, if keep_kv, each layer's (k, v).

        attn_mask: bool (B, 1, T, T) or (T, T), True where attention is allowed."""
        if positions is None:
            positions = torch.arange(ids.shape[1], device=ids.device)
        cos, sin = self._rope(positions)
        x = self.embed(ids)  # (B, T, D)
        kvs: KVCache = []
        for i, blk in enumerate(self.blocks):
            x, kv = blk(x, cos, sin, attn_mask, causal, None if past is None else past[i])
            if keep_kv:
                kvs.append(kv)
        return self.norm(x), kvs

    def forward(self, ids, positions=None, attn_mask=None, causal=False):
        """ids (B, T) -> logits (B, T, V)."""
        h, _ = self.hidden(ids, positions, attn_mask, causal)
        return self.head(h)

    def encode_context(self, ids, positions):
        """Run the context alone (it never attends to the canvas): ids (B, Tc) -> (hidden (B, Tc, D), cache)."""
        return self.hidden(ids, positions, keep_kv=True)

    def forward_canvas(self, ids, positions, cache: KVCache):
        """Canvas tokens attending to the cached context and to each other: ids (B, Tn) -> hidden (B, Tn, D)."""
        h, _ = self.hidden(ids, positions, past=cache)
        return h

    def extend_stream(self, ids, positions, past: KVCache):
        """New tokens at the end of a cached causal stream (spm): ids (1, n) -> their hidden states (1, n, D) and
        (k, v). They see the whole past and each other causally. The engine may run a compiled copy of this."""
        mask = append_attention_mask(past[0][0].shape[2], ids.shape[1], ids.device)
        return self.hidden(ids, positions, attn_mask=mask, past=past, keep_kv=True)

    def canvas_logits(self, ids, positions, cache: KVCache, last: torch.Tensor) -> torch.Tensor:
        """One spm denoising step: canvas ids (1, n) after a cached stream whose final hidden state is `last`
        (1, D) -> float logits (n, V), slot 0 read off `last`, slot j off canvas position j-1 (shifted logits).
        The engine may run a compiled copy of this (HoneBackend.compile)."""
        h = self.forward_canvas(ids, positions, cache)[0]  # (n, D)
        return self.head(torch.cat((last, h))[: ids.shape[1]]).float()  # (not h[:-1]: exports for any n >= 1)


def spm_attention_mask(canvas: torch.Tensor, valid: torch.Tensor, seen: torch.Tensor | None = None) -> torch.Tensor:
    """canvas/valid bool (B, T) -> attention mask (B, 1, T, T) of the spm layout: non-canvas rows attend
    causally to non-canvas columns (padding, after the canvas, is never attended to by real rows); canvas
    rows attend to every real position, or only to those `seen` (training's draft rows hide teacher tokens)."""
    T = canvas.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=canvas.device).tril()
    ctx_rows = ~canvas.unsqueeze(2) & ~canvas.unsqueeze(1) & causal  # (B, T, T)
    canvas_rows = canvas.unsqueeze(2) & (valid if seen is None else seen).unsqueeze(1)
    return (ctx_rows | canvas_rows).unsqueeze(1)


def append_attention_mask(n_past: int, n_new: int, device=None) -> torch.Tensor:
    """(n_new, n_past + n_new) bool: new stream tokens see the whole past and each other causally."""
    return torch.ones(n_new, n_past + n_new, dtype=torch.bool, device=device).tril(n_past)


def infill_attention_mask(is_context: torch.Tensor) -> torch.Tensor:
    """is_context bool (B, T) -> attention mask (B, 1, T, T): context rows see context only, canvas rows see all."""
    rows_ctx = is_context.unsqueeze(2)  # (B, T, 1)
    cols_ctx = is_context.unsqueeze(1)  # (B, 1, T)
    return (~rows_ctx | cols_ctx).unsqueeze(1)
