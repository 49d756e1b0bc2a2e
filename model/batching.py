"""Several requests in one engine call (spm models): each request samples in its own thread, with its own
context stream, exactly as it would alone; their canvas steps meet at a rendezvous and run as one padded
forward. On a CPU a 16-slot step is bound by overheads and weight reads, not arithmetic, so a step for four
requests costs little more than a step for one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from .network import Denoiser, KVCache

GATHER_S = 0.002  # how long a ready step waits for the other requests' steps before running without them


class _Step:
    """One request's canvas step, waiting for its batch."""

    def __init__(self, ids: torch.Tensor, positions: torch.Tensor, cache: KVCache, last: torch.Tensor):
        self.ids, self.positions, self.cache, self.last = ids, positions, cache, last
        self.out: torch.Tensor | None = None
        self.error: BaseException | None = None
        self.done = False


class CanvasBatcher:
    """The rendezvous. `canvas_logits` has the signature of `Denoiser.canvas_logits` and blocks until a batch
    holding its step has run: the first waiting request leads a batch once every active request is waiting,
    or after `gather_s`. `single` runs a batch of one (the backend's step, compiled or not)."""

    def __init__(self, model: Denoiser, mask_id: int, requests: int, single: Callable[..., torch.Tensor],
                 gather_s: float | None = None):
        self.model, self.mask_id, self.single = model, mask_id, single
        self.gather_s = GATHER_S if gather_s is None else gather_s
        self.cond = threading.Condition()
        self.active = requests  # requests still sampling
        self.pending: list[_Step] = []
        self.running = False
        self.batches = self.rows = 0  # forwards run, and the request steps they carried

    def leave(self) -> None:
        """A request has finished: the others no longer wait for its steps."""
        with self.cond:
            self.active -= 1
            self.cond.notify_all()

    def canvas_logits(self, ids, positions, cache: KVCache, last) -> torch.Tensor:
        step = _Step(ids, positions, cache, last)
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
                self.batches += 1
                self.rows += len(batch)
                self.cond.notify_all()
        if step.error is not None:
            raise step.error
        return step.out

    @torch.no_grad()
    def _forward(self, batch: list[_Step]) -> list[torch.Tensor]:
        if len(batch) == 1:
            s = batch[0]
            return [self.single(s.ids, s.positions, s.cache, s.last)]
        return batched_canvas_logits(self.model, self.mask_id, [(s.ids, s.positions, s.cache, s.last) for s in batch])


def batched_canvas_logits(model: Denoiser, mask_id: int, steps: list[tuple]) -> list[torch.Tensor]:
    """Denoiser.canvas_logits for several requests in one forward: contexts and canvases of different lengths
    are padded (keys/values with zeros, canvases with masks) and the padding is never attended to.
    steps: (ids (1, n_i), positions (n_i,), cache, last (1, D)) -> logits (n_i, V) each."""
    sizes = [ids.shape[1] for ids, *_ in steps]
    lengths = [cache[0][0].shape[2] for _, _, cache, _ in steps]
    b, n, ctx = len(steps), max(sizes), max(lengths)
    dev = steps[0][0].device
    ids = torch.full((b, n), mask_id, dtype=torch.long, device=dev)
    pos = torch.zeros((b, n), dtype=torch.long, device=dev)
    allowed = torch.zeros((b, 1, n, ctx + n), dtype=torch.bool, device=dev)
    for i, (row_ids, row_pos, _, _) in enumerate(steps):
        ids[i, : sizes[i]], pos[i, : sizes[i]], pos[i, sizes[i] :] = row_ids[0], row_pos, row_pos[-1]
        allowed[i, :, :, : lengths[i]] = True  # its own context
        allowed[i, :, :, ctx : ctx + sizes[i]] = True  # its own canvas
    past: KVCache = []
    for layer in range(len(steps[0][2])):
        k0 = steps[0][2][layer][0]
        k = k0.new_zeros((b, k0.shape[1], ctx, k0.shape[3]))
        v = torch.zeros_like(k)
        for i, (_, _, cache, _) in enumerate(steps):
            k[i, :, : lengths[i]], v[i, :, : lengths[i]] = cache[layer][0][0], cache[layer][1][0]
        past.append((k, v))
    h, _ = model.hidden(ids, pos, attn_mask=allowed, past=past)  # (b, n, D)
    rows = torch.cat([torch.cat((last, h[i, : sizes[i] - 1])) for i, (_, _, _, last) in enumerate(steps)])
    return list(model.head(rows).float().split(sizes))


def run_together(backend, calls: list[tuple], sample: Callable) -> list:
    """Run `sample(view, *call)` for each call in its own thread, every view sharing one CanvasBatcher, and
    return each call's result or the exception it raised. `backend` is an spm HoneBackend; the views keep
    their own context streams, encoded one at a time under a shared lock (no two forwards compete for the
    cores)."""
    batcher = CanvasBatcher(backend.model, backend.mask_id, len(calls), backend.canvas_logits)
    encode_lock = threading.Lock()
    views = [backend.job_view(batcher.canvas_logits, encode_lock) for _ in calls]

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
