"""Several requests in one engine call (spm models): each request samples in its own thread, with its own
context stream, exactly as it would alone; their model steps (canvas steps, and the stream extensions of
autoregressive decoding and verified drafts) meet at a rendezvous and each kind runs as one padded forward. On a
CPU a step of a few tokens is bound by overheads and weight reads, not arithmetic, so a step for four requests
costs little more than a step for one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from .network import Denoiser, KVCache

GATHER_S = 0.002  # how long a ready step waits for the other requests' steps before running without them
KINDS = ("canvas", "stream")  # a canvas step (Denoiser.canvas_logits), a stream extension (Denoiser.extend_stream)


class _Step:
    """One request's step, waiting for its batch."""

    def __init__(self, kind: str, args: tuple):
        self.kind, self.args = kind, args
        self.out = None
        self.error: BaseException | None = None
        self.done = False


class StepBatcher:
    """The rendezvous. `canvas_logits` and `extend_stream` have the signatures of the Denoiser methods of those
    names and block until a batch holding their step has run: the first waiting request leads a batch once every
    active request is waiting, or after `gather_s`; the batch runs one forward per kind of step. `single` maps
    each kind to the backend's own step (compiled or not) for a batch of one."""

    def __init__(self, model: Denoiser, mask_id: int, requests: int, single: dict[str, Callable],
                 gather_s: float | None = None):
        self.model, self.mask_id, self.single = model, mask_id, single
        self.gather_s = GATHER_S if gather_s is None else gather_s
        self.cond = threading.Condition()
        self.active = requests  # requests still sampling
        self.pending: list[_Step] = []
        self.running = False

    def leave(self) -> None:
        """A request has finished: the others no longer wait for its steps."""
        with self.cond:
            self.active -= 1
            self.cond.notify_all()

    def canvas_logits(self, ids, positions, cache: KVCache, last) -> torch.Tensor:
        return self._run(_Step("canvas", (ids, positions, cache, last)))

    def extend_stream(self, ids, positions, past: KVCache):
        return self._run(_Step("stream", (ids, positions, past)))

    def _run(self, step: _Step):
        with self.cond:
            self.pending.append(step)
            self.cond.notify_all()
            until = time.monotonic() + self.gather_s
            batch: list[_Step] = []
            while not step.done:
                now = time.monotonic()
                if not self.running and step in self.pending and (len(self.pending) >= self.active or now >= until):
                    batch, self.pending, self.running = self.pending, [], True
                    break
                self.cond.wait(until - now if now < until else 0.005)
        if batch:  # this thread leads the batch
            try:
                outs, error = self._forward(batch), None
            except BaseException as e:  # every request of the batch sees the failure
                outs, error = [None] * len(batch), e
            with self.cond:
                for s, out in zip(batch, outs):
                    s.out, s.error, s.done = out, error, True
                self.running = False
                self.cond.notify_all()
        if step.error is not None:
            raise step.error
        return step.out

    @torch.no_grad()
    def _forward(self, batch: list[_Step]) -> list:
        outs: list = [None] * len(batch)
        for kind in KINDS:
            idx = [i for i, s in enumerate(batch) if s.kind == kind]
            if not idx:
                continue
            args = [batch[i].args for i in idx]
            if len(args) == 1:
                got = [self.single[kind](*args[0])]
            elif kind == "canvas":
                got = batched_canvas_logits(self.model, self.mask_id, args)
            else:
                got = batched_extend(self.model, args)
            for i, out in zip(idx, got):
                outs[i] = out
        return outs


def _padded(caches: list[KVCache]) -> tuple[KVCache, list[int], int]:
    """Several requests' cached contexts as one zero-padded KVCache (b, H, ctx, Dh) per layer, each context's
    length, and ctx."""
    lengths = [cache[0][0].shape[2] for cache in caches]
    b, ctx = len(caches), max(lengths)
    past: KVCache = []
    for layer in range(len(caches[0])):
        k0 = caches[0][layer][0]
        k = k0.new_zeros((b, k0.shape[1], ctx, k0.shape[3]))
        v = torch.zeros_like(k)
        for i, cache in enumerate(caches):
            k[i, :, : lengths[i]], v[i, :, : lengths[i]] = cache[layer][0][0], cache[layer][1][0]
        past.append((k, v))
    return past, lengths, ctx


def _padded_rows(rows: list[tuple[torch.Tensor, torch.Tensor]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(ids (1, n_i), positions (n_i,)) each -> ids (b, n) padded with `pad_id`, positions (b, n) padded with each
    row's last position, and the sizes n_i."""
    sizes = [ids.shape[1] for ids, _ in rows]
    b, n = len(rows), max(sizes)
    dev = rows[0][0].device
    ids = torch.full((b, n), pad_id, dtype=torch.long, device=dev)
    pos = torch.zeros((b, n), dtype=torch.long, device=dev)
    for i, (row_ids, row_pos) in enumerate(rows):
        ids[i, : sizes[i]], pos[i, : sizes[i]], pos[i, sizes[i] :] = row_ids[0], row_pos, row_pos[-1]
    return ids, pos, sizes


def batched_canvas_logits(model: Denoiser, mask_id: int, steps: list[tuple]) -> list[torch.Tensor]:
    """Denoiser.canvas_logits for several requests in one forward: contexts and canvases of different lengths
    are padded (keys/values with zeros, canvases with masks) and the padding is never attended to.
    steps: (ids (1, n_i), positions (n_i,), cache, last (1, D)) -> logits (n_i, V) each."""
    ids, pos, sizes = _padded_rows([(s[0], s[1]) for s in steps], mask_id)
    past, lengths, ctx = _padded([s[2] for s in steps])
    b, n = ids.shape
    allowed = torch.zeros((b, 1, n, ctx + n), dtype=torch.bool, device=ids.device)
    for i in range(b):
        allowed[i, :, :, : lengths[i]] = True  # its own context
        allowed[i, :, :, ctx : ctx + sizes[i]] = True  # its own canvas
    h, _ = model.hidden(ids, pos, attn_mask=allowed, past=past)  # (b, n, D)
    rows = torch.cat([torch.cat((last, h[i, : sizes[i] - 1])) for i, (_, _, _, last) in enumerate(steps)])
    return list(model.head(rows).float().split(sizes))


def batched_extend(model: Denoiser, steps: list[tuple]) -> list[tuple[torch.Tensor, KVCache]]:
    """Denoiser.extend_stream for several requests in one forward: each request's new tokens see its own cached
    stream and each other causally; padding is never attended to by a real token.
    steps: (ids (1, n_i), positions (n_i,), past) -> (hidden (1, n_i, D), per layer (k, v) (1, H, n_i, Dh)) each."""
    ids, pos, sizes = _padded_rows([(s[0], s[1]) for s in steps], model.cfg.pad_id)
    past, lengths, ctx = _padded([s[2] for s in steps])
    b, n = ids.shape
    causal = torch.ones(n, n, dtype=torch.bool, device=ids.device).tril()
    allowed = torch.zeros((b, 1, n, ctx + n), dtype=torch.bool, device=ids.device)
    for i in range(b):
        allowed[i, :, :, : lengths[i]] = True  # its own stream
        allowed[i, 0, :, ctx:] = causal  # its new tokens, causally: a real token never sees the padding after it
    h, kv = model.hidden(ids, pos, attn_mask=allowed, past=past, keep_kv=True)  # (b, n, D), (b, H, n, Dh)
    return [(h[i : i + 1, : sizes[i]], [(k[i : i + 1, :, : sizes[i]], v[i : i + 1, :, : sizes[i]]) for k, v in kv])
            for i in range(b)]


def run_together(backend, calls: list[tuple], sample: Callable) -> list:
    """Run `sample(view, *call)` for each call in its own thread, every view sharing one StepBatcher, and
    return each call's result or the exception it raised. `backend` is an spm HoneBackend; the views keep
    their own context streams, whose first encodes run one at a time under a shared lock (no two long forwards
    compete for the cores)."""
    batcher = StepBatcher(backend.model, backend.mask_id, len(calls),
                          {"canvas": backend.canvas_logits, "stream": backend.context.extend})
    encode_lock = threading.Lock()
    views = [backend.job_view(batcher, encode_lock) for _ in calls]

    def run(view, call):
        try:
            return sample(view, *call)
        except Exception as e:  # noqa: BLE001 - the caller decides what each request's failure means
            return e
        finally:
            batcher.leave()

    with ThreadPoolExecutor(len(calls), thread_name_prefix="hone-batch") as pool:
        futures = [pool.submit(run, v, c) for v, c in zip(views, calls)]
    return [f.result() for f in futures]
