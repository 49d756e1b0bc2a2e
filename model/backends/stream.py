"""Hone's causal context stream (the spm layout's [BOS] suffix [EOS?] [BOS] prefix), kept across requests."""

from __future__ import annotations

import contextlib
import threading

import torch

from ..network import Denoiser, KVCache

SAVED_STREAMS = 3  # streams kept aside besides the one in use, cut to their length (a stream of 300 tokens: 5 MB of
# keys, values and hidden states for the default model)
MIN_ROWS = 256  # the buffers' first capacity in tokens; they double from there up to the model's max_seq_len
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
        self.extend = model.extend_stream  # HoneBackend.compile may swap in compiled copies of these two
        self.encode = lambda ids, pos: model.hidden(ids, pos, causal=True, keep_kv=True)  # a stream afresh
        self.saved: list[tuple[list[int], list[torch.Tensor], list[torch.Tensor], torch.Tensor]] = []  # streams set
        # aside when another one took over (a jump to another file or place), most recent first: going back to
        # one resumes it instead of encoding it afresh

    def _switch(self, ids: list[int], keep: int) -> int:
        """Before encoding more than a few tokens: resume the saved stream sharing most with `ids` when it shares
        more than the current one and at least SWITCH_SHARED tokens (the current one is set aside); or set the
        current one aside and start anew when it shares little. Returns how many tokens the stream now in use
        shares with `ids`: 0 (encode afresh) rather than a few (resuming a stream for its [BOS] and a line break
        ran the whole new stream as one long extension, past what a compiled step takes: 50-58 ms instead of
        the fresh encode's 37-45 on 8 of 60 cold files)."""
        shares = [_shared(ids, saved[0]) for saved in self.saved]
        shared = max(shares, default=-1)
        if shared > keep and shared >= SWITCH_SHARED:
            best = shares.index(shared)
            current = self._aside()
            self.ids, self._k, self._v, self._h = self.saved.pop(best)
            if current is not None:
                self.saved.insert(0, current)
            return shared
        if self._h is not None and keep < SWITCH_SHARED:  # an unrelated stream: keep this one for a return
            self.saved.insert(0, self._aside())
            del self.saved[SAVED_STREAMS:]
            self.ids, self._k, self._v, self._h = [], [], [], None
            return 0
        return keep

    def _aside(self) -> tuple[list[int], list[torch.Tensor], list[torch.Tensor], torch.Tensor] | None:
        """The stream in use with its buffers cut to its length (room to grow is only worth it for the one in use:
        set-aside streams kept at their capacity held up to 8x their tokens' worth)."""
        if self._h is None:
            return None
        n = len(self.ids)
        return (self.ids, [k[:, :, :n].clone() for k in self._k], [v[:, :, :n].clone() for v in self._v],
                self._h[:, :n].clone())

    def nbytes(self) -> int:
        """Bytes held in keys, values and hidden states: the stream in use and those set aside."""
        streams = [(self._k, self._v, self._h)] + [s[1:] for s in self.saved]
        return sum(sum(t.nbytes for t in k) + sum(t.nbytes for t in v) + (0 if h is None else h.nbytes)
                   for k, v, h in streams)

    def max_nbytes(self) -> int:
        """The most nbytes() can reach: each of the 1 + SAVED_STREAMS streams at the model's full length (the buffers
        never grow past it), keys and values of every layer and the hidden states, in the weights' dtype."""
        cfg = self.model.cfg
        per_token = (2 * cfg.n_layers + 1) * cfg.d_model * self.model.embed.weight.element_size()
        return (1 + SAVED_STREAMS) * cfg.max_seq_len * per_token

    def stats(self) -> dict:
        """Streams and bytes held, against their bounds (hone/stats' figures, as lsp_server.cache.LRU.stats)."""
        return {"entries": (self._h is not None) + len(self.saved), "bytes": self.nbytes(),
                "maxEntries": 1 + SAVED_STREAMS, "maxBytes": self.max_nbytes()}

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
                h, kv = self.encode(new, pos)
        else:
            h, kv = self.extend(new, pos, self.views(keep))
        self._store(keep, h, kv)
        self.ids, self.last_encoded = list(ids), len(ids) - keep

    def _store(self, at: int, h: torch.Tensor, kv: KVCache) -> None:
        """Write the rows of tokens at..at+n (h (1, n, D), kv per layer (1, H, n, Dh)), growing the buffers if needed."""
        end = at + h.shape[1]
        if self._h is None or end > self._h.shape[1]:
            # doubling: a long stream grows its buffers a few times, not per token; never past the model's length
            cap = max(end, min(max(MIN_ROWS, 2 * end), self.model.cfg.max_seq_len))
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
