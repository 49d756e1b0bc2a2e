"""Requests through the engine, a batch at a time: what one replica does with what `@serve.batch` gathered.

Torch- and Ray-free (typed against model.types.Engine), so it is tested without a cluster.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import msgspec

from ..types import Cancelled, Engine, Result, SampleOptions

log = logging.getLogger(__name__)

OK = 200
BAD_REQUEST = 400
CLIENT_GONE = 499  # nginx's code for "the client closed the request": nobody reads the answer
DEADLINE_PASSED = 504


@dataclass(eq=False)
class Job:
    """One engine call: fill the holes between `pieces`. `arrived` starts the deadline's clock, so the time a
    request waits for the replica's engine counts against it; `cancel` is set when its client goes away."""

    pieces: list[str]
    opts: SampleOptions
    seed: int | None = None
    context: str = ""  # cross-file context (the client's workspace index)
    hint: str | list[str] = ""  # copy hints (model.drafts.copy_hints)
    cancel: threading.Event = field(default_factory=threading.Event)
    arrived: float = field(default_factory=time.monotonic)


@dataclass
class Outcome:
    result: Result | None = None  # set when status is OK
    status: int = OK
    error: str = ""  # why, when status is not OK
    queue_ms: float = 0.0  # from arrival to the engine starting on it


def run_batch(engine: Engine, jobs: list[Job], clock: Callable[[], float] = time.monotonic) -> list[Outcome]:
    """One outcome per job, in order. Jobs whose client has gone or whose deadline passed in the queue are
    answered at once; the rest go to the engine together when it can run several requests in one pass
    (`fill_many`: their denoising steps share forwards), else one after another."""
    ready: list[tuple[int, Job, SampleOptions, float]] = []
    outcomes: list[Outcome | None] = []
    for i, job in enumerate(jobs):
        early, opts, queue_ms = _admit(job, clock)
        outcomes.append(early)
        if early is None:
            ready.append((i, job, opts, queue_ms))
    fill_many = getattr(engine, "fill_many", None)
    if len(ready) > 1 and fill_many is not None:
        answers = fill_many([(job.pieces, opts, job.cancel, job.seed, job.context, job.hint) for _, job, opts, _ in ready])
    else:
        answers = [_attempt(engine, job, opts) for _, job, opts, _ in ready]
    for (i, job, _, queue_ms), answer in zip(ready, answers):
        outcomes[i] = _outcome(answer, job, queue_ms)
    return outcomes


def _admit(job: Job, clock: Callable[[], float]) -> tuple[Outcome | None, SampleOptions, float]:
    """(an early answer or None, the options with the deadline left after queueing, ms spent in the queue)."""
    waited = clock() - job.arrived
    queue_ms = round(waited * 1000, 1)
    if job.cancel.is_set():
        return Outcome(status=CLIENT_GONE, error="cancelled before the engine started", queue_ms=queue_ms), job.opts, queue_ms
    opts = job.opts
    if opts.deadline_s is not None:
        left = opts.deadline_s - waited
        if left <= 0:
            return Outcome(status=DEADLINE_PASSED, queue_ms=queue_ms,
                           error=f"the deadline ({opts.deadline_s * 1000:.0f} ms) passed while the request waited "
                                 f"{queue_ms:.0f} ms for the engine"), opts, queue_ms
        opts = msgspec.structs.replace(opts, deadline_s=left)
    return None, opts, queue_ms


def _attempt(engine: Engine, job: Job, opts: SampleOptions) -> Result | Exception:
    try:
        return engine.fill(job.pieces, opts, job.cancel, job.seed, job.context, job.hint)
    except Exception as e:  # noqa: BLE001 - _outcome says what it means
        return e


def _outcome(answer: Result | Exception, job: Job, queue_ms: float) -> Outcome:
    if isinstance(answer, Cancelled):
        return Outcome(status=CLIENT_GONE, error="cancelled", queue_ms=queue_ms)
    if isinstance(answer, ValueError):  # options the engine cannot serve (e.g. rule 'ar' on a model without spm)
        return Outcome(status=BAD_REQUEST, error=str(answer), queue_ms=queue_ms)
    if isinstance(answer, Exception):  # one request's failure is its own; the replica keeps serving
        log.error("the engine failed on a request with %d holes: %s", len(job.pieces) - 1,
                  f"{type(answer).__name__}: {answer}", exc_info=answer)
        return Outcome(status=500, error=f"{type(answer).__name__}: {answer}", queue_ms=queue_ms)
    return Outcome(answer, OK, "", queue_ms)
