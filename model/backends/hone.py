"""Backends the sampler drives: Hone's own denoiser (with exact context caching) and third-party
diffusion LMs loaded through transformers (LLaDA-style unshifted, Dream-style shifted logits)."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import torch

from .checkpoint import CheckpointError, read_json
from . import layout
from .compiled import AotSteps
from .drafts import NgramDrafts
from .layout import Segments, Specials
from .network import Denoiser, KVCache, infill_attention_mask, spm_attention_mask
from .tokenizer import HoneTokenizer

LLADA_MASK_ID = 126336  # LLaDA's reserved [MASK] id when its tokenizer does not name a mask token
STYLES = ("auto", "llada", "dream")


def _shift_sources(slot_pos: list[int], shifted: bool) -> list[int]:
    """Sequence position whose output predicts each slot (j, or j-1 for shifted models)."""
    if not shifted:
        return list(slot_pos)
    if min(slot_pos) < 1:
        raise ValueError("a shifted model needs a token before the first slot")
    return [p - 1 for p in slot_pos]


class _InfillSession:
    def __init__(self, model: Denoiser, ids: list[int], slot_pos: list[int], cached: bool, device):
        self.model, self.device, self.cached = model, device, cached
        n = len(ids)
        is_slot = torch.zeros(n, dtype=torch.bool)
        is_slot[slot_pos] = True
        self.ids = torch.tensor(ids, device=device)
        self.slot_pos = torch.tensor(slot_pos, device=device)
        src = torch.tensor(_shift_sources(slot_pos, model.cfg.shifted))
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


SAVED_STREAMS = 3  # streams kept aside besides the one in use (~9 MB of buffers each for the default model)
SWITCH_SHARED = 32  # an update that would encode more than this many tokens looks for a saved stream; the current
# one is set aside when it shares fewer than this many tokens with the new one (a slid prefix window re-encodes
# ~190 tokens of the same place but shares the suffix: it stays in place)


def _shared(a: list[int], b: list[int]) -> int:
    """How many tokens a and b share from the start."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class ContextStream:
    """The spm layout's causal context stream ([BOS] suffix [EOS?] [BOS] prefix) kept across requests: a new
    stream reuses the keys/values of the longest run of tokens it shares with the last one from the start, so
    typing at the end of the prefix encodes only the new tokens (an exact cache: causal tokens never see later ones).
    Keys, values and hidden states live in buffers with room to grow: an update writes only its new tokens' rows
    (a copy of the whole cache per token cost about as much as the token's forward)."""

    def __init__(self, model: Denoiser, device: torch.device, lock: threading.Lock | None = None):
        self.model, self.device = model, device
        self.lock = lock or contextlib.nullcontext()  # held while encoding a stream afresh (concurrent requests'
        # streams share one); extensions are short and go through `extend` (a batcher, for requests run together)
        self.ids: list[int] = []
        self._k: list[torch.Tensor] = []  # per layer (1, H, capacity, Dh); the first len(ids) rows are the stream's
        self._v: list[torch.Tensor] = []
        self._h: torch.Tensor | None = None  # final hidden states (1, capacity, D)
        self.last_encoded = 0  # tokens the last update() had to run through the network
        self.extend = model.extend_stream  # HoneBackend.compile may swap in a compiled copy
        self.saved: list[tuple[list[int], list[torch.Tensor], list[torch.Tensor], torch.Tensor]] = []  # streams set
        # aside when another one took over (a jump to another file or place), most recent first: going back to
        # one resumes it instead of encoding it afresh

    def _switch(self, ids: list[int], keep: int) -> int:
        """Before encoding more than a few tokens: resume the saved stream sharing most with `ids` when it shares
        more than the current one (the current one is set aside); or set the current one aside and start anew
        when it shares little. Returns how many tokens the stream now in use shares with `ids`."""
        shares = [_shared(ids, saved[0]) for saved in self.saved]
        shared = max(shares, default=-1)
        if shared > keep:
            best = shares.index(shared)
            current = (self.ids, self._k, self._v, self._h)
            self.ids, self._k, self._v, self._h = self.saved.pop(best)
            if current[3] is not None:
                self.saved.insert(0, current)
            return shared
        if self._h is not None and keep < SWITCH_SHARED:  # an unrelated stream: keep this one for a return
            self.saved.insert(0, (self.ids, self._k, self._v, self._h))
            del self.saved[SAVED_STREAMS:]
            self.ids, self._k, self._v, self._h = [], [], [], None
            return 0
        return keep

    def views(self, n: int) -> KVCache:
        """Per layer (k, v) of the stream's first n tokens (1, H, n, Dh): views, valid until the next update."""
        return [(k[:, :, :n], v[:, :, :n]) for k, v in zip(self._k, self._v)]

    @property
    def kv(self) -> KVCache:
        return self.views(len(self.ids))

    @property
    def h(self) -> torch.Tensor:
        """Final hidden states of the stream (1, T, D): a view, valid until the next update."""
        return self._h[:, : len(self.ids)]

    @torch.no_grad()
    def update(self, ids: list[int]) -> None:
        keep = _shared(ids, self.ids)
        if len(ids) - keep > SWITCH_SHARED:  # a jump, not typing: maybe back to a stream set aside
            keep = self._switch(ids, keep)
        if keep == len(ids):  # the last stream or a prefix of it (a rejected draft, a deletion): causal, so just cut
            self.ids, self.last_encoded = self.ids[:keep], 0
            return
        new = torch.tensor([ids[keep:]], device=self.device)
        pos = torch.arange(keep, len(ids), device=self.device)
        if keep == 0:
            with self.lock:
                h, kv = self.model.hidden(new, pos, causal=True, keep_kv=True)
        else:
            h, kv = self.extend(new, pos, self.views(keep))
        self._store(keep, h, kv)
        self.ids, self.last_encoded = list(ids), len(ids) - keep

    def _store(self, at: int, h: torch.Tensor, kv: KVCache) -> None:
        """Write the rows of tokens at..at+n (h (1, n, D), kv per layer (1, H, n, Dh)), growing the buffers if needed."""
        end = at + h.shape[1]
        if self._h is None or end > self._h.shape[1]:
            cap = max(256, 2 * end)  # doubling: a long stream grows its buffers a few times, not per token
            old_k, old_v, old_h = self._k, self._v, self._h
            self._h = h.new_empty((1, cap, h.shape[2]))
            self._k = [k.new_empty((*k.shape[:2], cap, k.shape[3])) for k, _ in kv]
            self._v = [torch.empty_like(k) for k in self._k]
            if old_h is not None and at:
                self._h[:, :at] = old_h[:, :at]
                for new_k, new_v, k, v in zip(self._k, self._v, old_k, old_v):
                    new_k[:, :, :at], new_v[:, :, :at] = k[:, :, :at], v[:, :, :at]
        self._h[:, at:end] = h
        for buf_k, buf_v, (k, v) in zip(self._k, self._v, kv):
            buf_k[:, :, at:end], buf_v[:, :, at:end] = k, v


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
    tolerance."""
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-2)


class HoneBackend:
    """Hone's own denoiser and tokenizer."""

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
        self.context = ContextStream(model, device)
        self.canvas_logits = model.canvas_logits  # one spm denoising step; compile() may swap in a compiled copy
        self.head = lambda h: model.head(h).float()  # (m, D) -> float logits (m, V); compile() may swap it too

    def compile(self) -> str:
        """Switch the spm model's hot steps (a canvas step; a stream extension: typing, autoregressive tokens,
        verified drafts; the head on the stream's last states) to ahead-of-time compiled copies (model.compiled),
        checked against the eager steps on a sample stream; returns what happened. The first time for a model a
        minute of CPU (then cached on disk): call it off the request path, requests run eagerly meanwhile. Any
        failure (no C++ compiler, a mismatch) leaves the eager steps in place."""
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
        except Exception as e:  # noqa: BLE001 - whatever broke, the eager steps keep serving
            return f"eager (compiling failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
        self.canvas_logits, self.context.extend, self.head = steps.canvas_logits, steps.extend_stream, steps.head
        return "compiled"

    def job_view(self, batcher, encode_lock: threading.Lock) -> HoneBackend:
        """A backend for one of several requests run together (model.batching): the same network, its own context
        stream (first encoded under `encode_lock`), canvas steps and stream extensions through `batcher`."""
        view = HoneBackend(self.model, self.tokenizer, self.device, self.drafts)
        view.context = ContextStream(self.model, self.device, encode_lock)
        view.context.extend = batcher.extend_stream
        view.canvas_logits = batcher.canvas_logits
        view.head = self.head
        return view

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


class _HFSession:
    encoded = 0  # no context cache: the whole sequence runs in every step

    def __init__(self, backend: HFBackend, ids: list[int], slot_pos: list[int]):
        self.b = backend
        self.ids = torch.tensor(ids, device=backend.device)
        self.slot_pos = torch.tensor(slot_pos, device=backend.device)
        self.src = torch.tensor(_shift_sources(slot_pos, backend.shifted), device=backend.device)

    @torch.no_grad()
    def predict(self, canvas: torch.Tensor) -> torch.Tensor:
        ids = self.ids.clone()
        ids[self.slot_pos] = canvas.to(self.b.device)
        out = self.b.model(input_ids=ids[None])
        logits = out.logits if hasattr(out, "logits") else out[0]
        return logits[0, self.src].float().cpu()


class HFBackend:
    """A third-party diffusion LM from a local folder (no full-attention cache: every step runs all)."""

    max_holes = None  # any number of holes in one canvas

    def __init__(self, folder: str | Path, device: torch.device, trust_remote_code: bool = False, style: str = "auto"):
        if style not in STYLES:
            raise ValueError(f"unknown model style {style!r}; choose one of {list(STYLES)}")
        folder = Path(folder)
        cfg = read_json(folder / "config.json")
        self.style = style if style != "auto" else detect_style(cfg)
        self.shifted = self.style == "dream"
        needs_remote = "auto_map" in cfg
        if needs_remote and not trust_remote_code:
            raise CheckpointError(
                folder / "config.json",
                "this model ships its own Python code (auto_map); loading it needs the user-level "
                "opt-in trustRemoteCode / --trust-remote-code",
            )
        import transformers  # heavy: only when a third-party model is asked for

        try:
            self.tok = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=trust_remote_code)
            loader = transformers.AutoModel if self.style == "llada" and needs_remote else transformers.AutoModelForCausalLM
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
            self.model = loader.from_pretrained(str(folder), local_files_only=True, trust_remote_code=trust_remote_code, dtype=dtype)
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(folder, f"transformers could not load this model: {e}") from e
        self.model.to(device).eval()
        self.device = device
        mask_id = self.tok.mask_token_id if self.tok.mask_token_id is not None else cfg.get("mask_token_id")
        if mask_id is None and self.style == "llada":
            mask_id = LLADA_MASK_ID
        if mask_id is None:
            raise CheckpointError(folder, "no mask token: the tokenizer has no mask_token and config.json no mask_token_id")
        self.mask_id = int(mask_id)
        self.bos_id = self.tok.bos_token_id
        self.eos_id = None  # third-party models were not trained with our end-of-document marker
        self.newline_ids: frozenset[int] = frozenset()  # (cross-file context is then cut at its token budget)
        nulls = {i for i in (self.tok.eos_token_id, self.tok.pad_token_id) if i is not None}
        self.null_ids = frozenset(nulls)
        if self.shifted and self.bos_id is None:
            self.bos_id = self.tok.eos_token_id if self.tok.eos_token_id is not None else self.tok.pad_token_id

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode([i for i in ids if i not in self.null_ids and i != self.mask_id], skip_special_tokens=False)

    def session(self, seg: Segments, cached: bool) -> _HFSession:
        """The infill layout without our context markers, which these models never saw: context is text before the
        prefix."""
        if seg.context:
            seg = Segments([seg.context + seg.pieces[0], *seg.pieces[1:]], seg.holes, seg.doc_end)
        ids, slot_pos = layout.sequence("infill", seg, Specials(self.bos_id, self.eos_id))
        return _HFSession(self, ids, slot_pos)


def detect_style(cfg: dict) -> str:
    """'llada' (logits unshifted) or 'dream' (Qwen2-based, shifted) from a config.json dict."""
    kind = (str(cfg.get("model_type", "")) + " " + " ".join(cfg.get("architectures") or [])).lower()
    if "llada" in kind:
        return "llada"
    if any(k in kind for k in ("dream", "qwen", "diffucoder", "dcoder")):
        return "dream"
    raise ValueError(f"cannot tell the logit convention of model_type {cfg.get('model_type')!r}; pass style='llada' or 'dream'")
