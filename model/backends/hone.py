"""Hone's own denoiser and tokenizer as a backend: exact context caching in both layouts, and for the spm layout
the causal context stream that rule ar decodes through (a StreamBackend, model.backends.protocols)."""

from __future__ import annotations

import threading

import torch

from .. import layout
from ..compiled import AotSteps
from ..drafts import NgramDrafts
from ..layout import Segments, Specials
from ..network import Denoiser, infill_attention_mask, spm_attention_mask
from ..tokenizer import HoneTokenizer
from ..types import SampleOptions
from .protocols import Network
from .stream import ContextStream
from .style import shift_sources


class _InfillSession:
    def __init__(self, model: Denoiser, ids: list[int], slot_pos: list[int], cached: bool, device):
        self.model, self.device, self.cached = model, device, cached
        n = len(ids)
        is_slot = torch.zeros(n, dtype=torch.bool)
        is_slot[slot_pos] = True
        self.ids = torch.tensor(ids, device=device)
        self.slot_pos = torch.tensor(slot_pos, device=device)
        src = torch.tensor(shift_sources(slot_pos, model.cfg.shifted))
        if cached:
            ctx_pos = (~is_slot).nonzero().squeeze(1)
            # index of every sequence position in the [context hidden; canvas hidden] concatenation
            where = torch.empty(n, dtype=torch.long)
            where[ctx_pos] = torch.arange(len(ctx_pos))
            where[slot_pos] = len(ctx_pos) + torch.arange(len(slot_pos))
            self.gather = where[src].to(device)
            with torch.no_grad():
                self.ctx_h, self.cache = model.encode_context(self.ids[ctx_pos.to(device)][None], ctx_pos.to(device))
            self.encoded = len(ctx_pos)
        else:
            self.encoded = 0  # the context runs again in every step
            self.gather = src.to(device)
            self.mask = infill_attention_mask((~is_slot)[None]).to(device)  # (1, 1, T, T)

    @torch.no_grad()
    def predict(self, canvas: torch.Tensor) -> torch.Tensor:
        canvas = canvas.to(self.device)
        if self.cached:
            h = self.model.forward_canvas(canvas[None], self.slot_pos, self.cache)  # (1, n, D)
            h = torch.cat((self.ctx_h, h), dim=1)
        else:
            ids = self.ids.clone()
            ids[self.slot_pos] = canvas
            h, _ = self.model.hidden(ids[None], attn_mask=self.mask)  # (1, T, D)
        return self.model.head(h[0, self.gather]).float().cpu()  # (n, V)


class _SpmSession:
    """One hole in the spm layout: the causal context stream (model.layout.stream) and the canvas after it. Slot 0
    is read off the stream's last token, slot j off canvas position j-1 (shifted logits)."""

    def __init__(self, backend: HoneBackend, seg: Segments, cached: bool):
        b = backend
        self.model, self.device, self.cached = b.model, b.device, cached
        self.stream = b.stream(seg)
        if cached:
            b.context.update(self.stream)
            self.cache, self.last = b.context.kv, b.context.h[0, -1:]  # (1, D)
            self.canvas_logits = b.canvas_logits
            self.encoded = b.context.last_encoded
        else:
            self.encoded = len(self.stream)

    @torch.no_grad()
    def predict(self, canvas: torch.Tensor) -> torch.Tensor:
        canvas = canvas.to(self.device)
        L, n = len(self.stream), len(canvas)
        pos = torch.arange(L, L + n, device=self.device)
        if self.cached:
            return self.canvas_logits(canvas[None], pos, self.cache, self.last).cpu()  # (n, V)
        else:
            ids = torch.cat((torch.tensor(self.stream, device=self.device), canvas))[None]
            is_canvas = torch.zeros_like(ids, dtype=torch.bool)
            is_canvas[:, L:] = True
            h, _ = self.model.hidden(ids, attn_mask=spm_attention_mask(is_canvas, torch.ones_like(is_canvas)))
            h = h[0, L - 1 : L + n - 1]
        return self.model.head(h).float().cpu()  # (n, V)


def _close(got, want) -> None:
    """A compiled step's output (a tensor, or hidden states and a KV cache) equals the eager one's, within float
    tolerance. Not torch.testing.assert_close: its import (sympy and more) costs the server ~45 MB for good."""
    if isinstance(want, torch.Tensor):
        if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-3, atol=1e-2):
            diff = (got - want).abs().max().item() if got.shape == want.shape else None
            raise AssertionError(f"compiled step differs: shape {tuple(got.shape)} vs {tuple(want.shape)}, "
                                 f"max abs diff {diff}")
        return
    if len(got) != len(want):
        raise AssertionError(f"compiled step returns {len(got)} parts, the eager one {len(want)}")
    for g, w in zip(got, want):
        _close(g, w)


class HoneBackend:
    """Hone's own denoiser and tokenizer: a StreamBackend whose `streams` says whether its layout is spm."""

    def __init__(self, model: Denoiser, tokenizer: HoneTokenizer, device: torch.device, drafts: NgramDrafts | None = None):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.drafts = drafts  # the corpus n-gram table rule ar drafts from (model.drafts), when the model ships one
        self.mask_id, self.bos_id, self.eos_id = tokenizer.mask_id, tokenizer.bos_id, tokenizer.eos_id
        self.specials = Specials(self.bos_id, self.eos_id)
        self.null_ids = frozenset({tokenizer.null_id, tokenizer.pad_id})
        self.token_texts = tokenizer.token_texts  # "" for special tokens
        self.token_prefixes = tokenizer.prefixes  # rule ar heals a word the cursor cuts (sampler)
        # tokens that open a line break (where rule ar asks the canvas whether the middle ends)
        self.newline_ids = tokenizer.newline_ids
        self.spm = model.cfg.layout == "spm"
        self.max_holes = 1 if self.spm else None  # None: any number of holes in one canvas
        self.max_len = model.cfg.max_seq_len - self.spm  # the spm stream carries a second BOS
        self.streams = self.spm  # rule ar decodes through the spm layout's causal stream
        self.batches = self.spm  # requests run together share canvas steps and stream extensions (model.batching);
        # compile() turns it off
        self.network = Network(model, tokenizer)
        self.context = ContextStream(model, device)
        self.canvas_logits = model.canvas_logits  # one spm denoising step; compile() may swap in a compiled copy
        self.head = lambda h: model.head(h).float()  # (m, D) -> float logits (m, V); compile() may swap it too

    def compile(self) -> str:
        """Switch the spm model's hot steps (a canvas step; a stream extension: typing, autoregressive tokens,
        verified drafts; the head on the stream's last states; a stream encoded afresh) to ahead-of-time compiled
        copies (model.compiled), checked against the eager steps on a sample stream; returns what happened. The
        first time for a model a minute or two of CPU (then cached on disk): call it off the request path, requests
        run eagerly meanwhile. Any failure (no C++ compiler, a mismatch) leaves the eager steps in place."""
        if not self.spm:
            return "eager (only the spm layout's steps are compiled)"
        if self.device.type != "cpu":
            return f"eager (compiled steps are built for the CPU, not {self.device.type})"
        sample = self.encode("import os\n\n\ndef read(path):\n    with open(path) as f:\n        return f.read()\n")
        try:
            steps, _ = AotSteps.load_or_build(self.model)
            with torch.no_grad():
                for length, n in ((len(sample) - 5, 8), (len(sample) - 3, 1)):
                    stream = torch.tensor([[self.bos_id, self.bos_id] + sample[:length]], device=self.device)
                    h, kv = self.model.hidden(stream, causal=True, keep_kv=True)
                    canvas = torch.full((1, n), self.mask_id, device=self.device)
                    pos = torch.arange(stream.shape[1], stream.shape[1] + n, device=self.device)
                    last = h[0, -1:]
                    _close(steps.canvas_logits(canvas, pos, kv, last), self.model.canvas_logits(canvas, pos, kv, last))
                    new = torch.tensor([sample[length : length + n]], device=self.device)
                    pos = pos[: new.shape[1]]
                    _close(steps.extend_stream(new, pos, kv), self.model.extend_stream(new, pos, kv))
                    _close(steps.head(h[0, -n:]), self.model.head(h[0, -n:]).float())
                    fresh = torch.arange(stream.shape[1], device=self.device)
                    _close(steps.encode(stream, fresh), self.model.hidden(stream, fresh, causal=True, keep_kv=True))
        except Exception as e:  # noqa: BLE001 - whatever broke, the eager steps keep serving
            return f"eager (compiling failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
        self.canvas_logits, self.context.extend, self.head = steps.canvas_logits, steps.extend_stream, steps.head
        self.context.encode = steps.encode
        # requests run together (fill_many) now go one after another: model.batching's padded forwards run eagerly,
        # and a compiled step per request beat them 1.2-2.7x (2-4 requests of 1-16 new tokens after ~250-token
        # streams, 2-core EPYC); in turn, the first answers without waiting for the others' steps
        self.batches = False
        return "compiled"

    def job_view(self, batcher, encode_lock: threading.Lock) -> HoneBackend:
        """A backend for one of several requests run together (model.batching): the same network, its own context
        stream (first encoded under `encode_lock`), canvas steps and stream extensions through `batcher`."""
        view = HoneBackend(self.model, self.tokenizer, self.device, self.drafts)
        view.context = ContextStream(self.model, self.device, encode_lock)
        view.context.extend = batcher.extend_stream
        view.context.encode = self.context.encode
        view.canvas_logits = batcher.canvas_logits
        view.head = self.head
        return view

    def default_options(self) -> SampleOptions:
        """Sampling defaults with the token budgets this model was trained with (its config.json)."""
        cfg = self.model.cfg
        return SampleOptions(prefix_budget=cfg.prefix_tokens, suffix_budget=cfg.suffix_tokens,
                             context_budget=cfg.context_tokens)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def stream(self, seg: Segments) -> list[int]:
        """The spm layout's causal context stream of a one-hole request (model.layout.stream)."""
        return layout.stream(seg, self.specials)

    def stream_logits(self, stream: list[int], last: int = 1) -> tuple[torch.Tensor, int]:
        """Autoregressive decoding through the causal stream: logits (last, V) for the tokens after each of the
        stream's `last` final positions, and how many tokens had to be encoded (only what is new)."""
        if not self.spm:
            raise ValueError("autoregressive decoding (rule 'ar') needs a model with the spm layout")
        self.context.update(stream)
        with torch.no_grad():
            return self.head(self.context.h[0, -last:]).cpu(), self.context.last_encoded

    @torch.no_grad()
    def canvas_draft(self, stream: list[int], n: int) -> list[int]:
        """One canvas step after the stream: the best token of each of `n` fully masked slots."""
        self.context.update(stream)
        pos = torch.arange(len(stream), len(stream) + n, device=self.device)
        masks = torch.full((1, n), self.mask_id, device=self.device)
        logits = self.canvas_logits(masks, pos, self.context.kv, self.context.h[0, -1:])  # (n, V)
        logits[:, self.mask_id] = -float("inf")
        return logits.argmax(-1).tolist()

    @torch.no_grad()
    def canvas_null_prob(self, n_stream: int, content: list[int]) -> float:
        """p(null) for the canvas slot after `content`, laid on the canvas after the first `n_stream` tokens of the
        current context stream (which must start with them): whether the middle ends there."""
        ids = torch.tensor([content + [self.mask_id]], device=self.device)
        pos = torch.arange(n_stream, n_stream + ids.shape[1], device=self.device)
        logits = self.canvas_logits(ids, pos, self.context.views(n_stream), self.context.h[0, n_stream - 1 : n_stream])  # (n, V)
        logits[:, self.mask_id] = -float("inf")
        return float(torch.softmax(logits[-1], -1)[list(self.null_ids)].sum())

    def session(self, seg: Segments, cached: bool) -> _InfillSession | _SpmSession:
        ids, slot_pos = layout.sequence(self.model.cfg.layout, seg, self.specials)
        if len(ids) > self.model.cfg.max_seq_len:
            raise ValueError(f"canvas of {len(ids)} tokens exceeds the model's {self.model.cfg.max_seq_len}")
        if self.spm:
            return _SpmSession(self, seg, cached)
        return _InfillSession(self.model, ids, slot_pos, cached, self.device)
