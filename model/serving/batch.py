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
    cancel: threading.Event = field(default_factory=threading.Event)
    arrived: float = field(default_factory=time.monotonic)


@dataclass
class Outcome:
    result: Result | None = None  # set when status is OK
    status: int = OK
    error: str = ""  # why, when status is not OK
    queue_ms: float = 0.0  # from arrival to the engine starting on it


def run_batch(engine: Engine, jobs: list[Job], clock: Callable[[], float] = time.monotonic) -> list[Outcome]:
    """One outcome per job, in order.

    The jobs run one after another: the engine samples one request at a time (it holds a lock). An engine
    that denoises several requests' canvases in one forward replaces this loop with one call taking every
    job's pieces, options and cancel event; the deployment around it stays as it is.
    """
    return [run_one(engine, job, clock) for job in jobs]


def run_one(engine: Engine, job: Job, clock: Callable[[], float] = time.monotonic) -> Outcome:
    start = clock()
    waited = start - job.arrived
    queue_ms = round(waited * 1000, 1)
    if job.cancel.is_set():
        return Outcome(status=CLIENT_GONE, error="cancelled before the engine started", queue_ms=queue_ms)
    opts = job.opts
    if opts.deadline_s is not None:
        left = opts.deadline_s - waited
        if left <= 0:
            return Outcome(status=DEADLINE_PASSED, queue_ms=queue_ms,
                           error=f"the deadline ({opts.deadline_s * 1000:.0f} ms) passed while the request waited "
                                 f"{queue_ms:.0f} ms for the engine")
        opts = msgspec.structs.replace(opts, deadline_s=left)
    try:
        result = engine.fill(job.pieces, opts, job.cancel, job.seed)
    except Cancelled:
        return Outcome(status=CLIENT_GONE, error="cancelled", queue_ms=queue_ms)
    except ValueError as e:  # options the engine cannot serve (e.g. rule 'ar' on a model without the spm layout)
        return Outcome(status=BAD_REQUEST, error=str(e), queue_ms=queue_ms)
    except Exception as e:  # one request's failure is its own; the replica keeps serving
        log.exception("the engine failed on a request with %d holes", len(job.pieces) - 1)
        return Outcome(status=500, error=f"{type(e).__name__}: {e}", queue_ms=queue_ms)
    return Outcome(result, OK, "", queue_ms)
