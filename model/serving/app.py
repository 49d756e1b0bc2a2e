"""`hone serve`: the engine as a Ray Serve deployment behind the HTTP API of `api.py`.

Each replica loads the model once. Concurrent requests are gathered by `@serve.batch` and go through
`batch.run_batch` on a worker thread, so the replica's event loop keeps reading requests and disconnects.
The bearer token is checked before a body is read; a request's deadline counts from its arrival; when its
client disconnects Ray Serve cancels the handler, which sets the request's cancel event and the sampler
stops at its next step.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import signal
import threading
import time
from typing import Any, Awaitable, Callable

import msgspec
import ray
from ray import serve
from ray.serve.metrics import Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response

from ..machine import free_cores
from . import api
from .batch import BAD_REQUEST, CLIENT_GONE, DEADLINE_PASSED, OK, Job, Outcome, run_batch

log = logging.getLogger(__name__)

APP_NAME = "hone"
DEPLOYMENT_NAME = "HoneService"
BATCH_SIZE = 8  # requests one @serve.batch call gathers at most
BATCH_WAIT_S = 0.005  # how long the first request waits for company: short beside one completion (tens of ms)
ONGOING_PER_REPLICA = 32  # requests a replica accepts at once (the rest wait in Ray's router): ≥ BATCH_SIZE
LATENCY_BOUNDS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000]
PUBLIC = {"/health"}  # the only route that answers without the token

Handler = Callable[[bytes], Awaitable[Response]]


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(obj), status_code=status, media_type="application/json", headers=headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json(api.error_answer(status, message), status, headers)


class HoneService:
    """One replica: the engine, the routes, this replica's counters and Ray metrics."""

    def __init__(self, model_dir: str | None, device: str, token: str | None, threads: int | None = None,
                 max_batch_size: int = BATCH_SIZE, batch_wait_s: float = BATCH_WAIT_S, compile: bool = False):
        from ..engine import Engine

        self.engine = Engine.load(model_dir or None, device, threads=threads)
        if compile:  # in the background: the replica answers with eager steps meanwhile (/hone/stats: steps)
            self.engine.compile_in_background()
        self._token = token.encode() if token else None
        self._run.set_max_batch_size(max_batch_size)
        self._run.set_batch_wait_timeout_s(batch_wait_s)
        self.counters = {  # this replica's, for GET /hone/stats (Ray's metrics aggregate over replicas)
            "requests": 0, "answered": 0, "refused": 0, "bad": 0, "deadline": 0, "errors": 0,
            "disconnects": 0,  # clients that went away before their answer
            "cancelled": 0,  # requests the engine stopped (or never started) because their client went away
            "batches": 0, "batched_requests": 0}
        self._requests = Counter("hone_requests", "HTTP requests by route and status", tag_keys=("route", "status"))
        self._latency = Histogram("hone_request_ms", "arrival to answer, ms", boundaries=LATENCY_BOUNDS_MS,
                                  tag_keys=("route",))
        self._queue = Histogram("hone_queue_ms", "arrival to the engine starting on the request, ms",
                                boundaries=LATENCY_BOUNDS_MS)
        self._tokens = Counter("hone_tokens", "content tokens answered")
        self.routes: dict[str, tuple[str, Handler]] = {
            "/infill": ("POST", self._infill),
            "/v1/completions": ("POST", self._completions),
            "/hone/fill": ("POST", self._fill),
            "/hone/tokens": ("POST", self._count_tokens),
            "/hone/info": ("GET", self._info),
            "/hone/stats": ("GET", self._stats),
            "/v1/models": ("GET", self._models),
        }
        log.info("replica ready: model %s on %s", self.engine.name, self.engine.device)

    # ---- HTTP ---------------------------------------------------------------------------------------------

    async def __call__(self, request: Request) -> Response:
        t0 = time.perf_counter()
        path = request.scope.get("path", "/").rstrip("/") or "/"
        status = CLIENT_GONE  # stays so when the client goes and Ray Serve cancels this task
        try:
            try:
                response = await self._dispatch(request, path)
            except Exception as e:  # a bug is this request's own: answer in JSON (Ray's plain 500 means a dead replica)
                log.exception("%s failed", path)
                self.counters["errors"] += 1
                response = _error(500, f"{type(e).__name__}: {e}")
            status = response.status_code
            return response
        finally:
            route = path if path in self.routes or path in PUBLIC else "other"
            self._requests.inc(tags={"route": route, "status": str(status)})
            self._latency.observe((time.perf_counter() - t0) * 1000, tags={"route": route})

    async def _dispatch(self, request: Request, path: str) -> Response:
        if path == "/health" and request.method == "GET":
            return _json(api.Health("ok", self.engine.name))
        route = self.routes.get(path)
        if route is None:
            return _error(404, f"no route {path}; the service has {sorted([*self.routes, *PUBLIC])}")
        method, handler = route
        if request.method != method:
            return _error(405, f"{path} takes {method}", {"Allow": method})
        self.counters["requests"] += 1
        if not self._authorized(request):
            self.counters["refused"] += 1
            return _error(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                          {"WWW-Authenticate": "Bearer"})
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > api.MAX_BODY_BYTES:
            return _error(413, f"bodies are limited to {api.MAX_BODY_BYTES} bytes")
        body = await request.body()
        if len(body) > api.MAX_BODY_BYTES:
            return _error(413, f"bodies are limited to {api.MAX_BODY_BYTES} bytes")
        try:
            return await handler(body)
        except api.BadRequest as e:
            self.counters["bad"] += 1
            return _error(400, str(e))

    def _authorized(self, request: Request) -> bool:
        if self._token is None:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token)

    # ---- routes -------------------------------------------------------------------------------------------

    async def _infill(self, body: bytes) -> Response:
        job = api.infill_job(api.decode(body, api.InfillRequest), self.engine)
        out = await self._submit(job)
        return self._answer(out, lambda: api.infill_answer(out, job, self.engine.name))

    async def _completions(self, body: bytes) -> Response:
        req = api.decode(body, api.CompletionRequest)
        job = api.completion_job(req, self.engine)
        out = await self._submit(job)
        return self._answer(out, lambda: api.completion_answer(out, job, self.engine.name, req))

    async def _fill(self, body: bytes) -> Response:
        job = api.fill_job(api.decode(body, api.FillRequest), self.engine)
        out = await self._submit(job)
        return self._answer(out, lambda: api.fill_answer(out, self.engine.name))

    async def _count_tokens(self, body: bytes) -> Response:
        return _json(api.tokens_answer(api.decode(body, api.TokensRequest), self.engine))

    async def _info(self, body: bytes) -> Response:
        return _json(api.Info.of(self.engine))

    async def _stats(self, body: bytes) -> Response:
        ctx = serve.get_replica_context()
        return _json({**self.counters, "replica": str(getattr(ctx, "replica_id", "")), "steps": self.engine.steps})

    async def _models(self, body: bytes) -> Response:
        return _json({"object": "list", "data": [{"id": self.engine.name, "object": "model", "owned_by": "hone"}]})

    def _answer(self, out: Outcome, make: Callable[[], Any]) -> Response:
        if out.status != OK:
            self.counters[{DEADLINE_PASSED: "deadline", BAD_REQUEST: "bad"}.get(out.status, "errors")] += 1
            return _error(out.status, out.error)
        self.counters["answered"] += 1
        assert out.result is not None
        if out.result.stats.tokens > 0:  # Ray's counters take positive increments only
            self._tokens.inc(out.result.stats.tokens)
        self._queue.observe(out.queue_ms)
        return _json(make())

    # ---- the engine -------------------------------------------------------------------------------------

    async def _submit(self, job: Job) -> Outcome:
        """The job's outcome. When the client disconnects, Ray Serve cancels this task: the job's cancel event
        then stops the engine (between denoising steps), or the batch skips the job if it has not started."""
        try:
            return await self._run(job)
        except asyncio.CancelledError:
            job.cancel.set()
            self.counters["disconnects"] += 1
            raise

    @serve.batch(max_batch_size=BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def _run(self, jobs: list[Job]) -> list[Outcome]:
        self.counters["batches"] += 1
        self.counters["batched_requests"] += len(jobs)
        outcomes = await asyncio.to_thread(run_batch, self.engine, jobs)
        self.counters["cancelled"] += sum(o.status == CLIENT_GONE for o in outcomes)
        return outcomes


# ---- the application ------------------------------------------------------------------------------------


def build_app(model_dir: str | None, device: str = "auto", replicas: int = 1, token: str | None = None, *,
              threads: int | None = None, max_replicas: int | None = None, max_batch_size: int = BATCH_SIZE,
              batch_wait_s: float = BATCH_WAIT_S, compile: bool = False) -> serve.Application:
    """The deployment, ready for `serve.run`. Needs a connected Ray (`ray.init`): device "auto" asks the
    cluster for GPUs; with GPUs each replica holds one, on CPUs each holds `threads` CPUs (default 1).
    max_replicas > replicas turns on Ray Serve's autoscaling between the two."""
    if device == "auto":
        device = "cuda" if ray.cluster_resources().get("GPU", 0) >= 1 else "cpu"
    actor: dict[str, Any] = {"num_gpus": 1} if device == "cuda" else {"num_cpus": threads or 1}
    scaling: dict[str, Any] = {"num_replicas": replicas}
    if max_replicas and max_replicas > replicas:
        scaling = {"autoscaling_config": {"min_replicas": replicas, "max_replicas": max_replicas,
                                          "target_ongoing_requests": max_batch_size}}
    deployment = serve.deployment(HoneService, name=DEPLOYMENT_NAME).options(
        ray_actor_options=actor, max_ongoing_requests=max(ONGOING_PER_REPLICA, max_batch_size), **scaling)
    return deployment.bind(model_dir, device, token, threads, max_batch_size, batch_wait_s, compile)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def start(model_dir: str | None, *, device: str = "auto", host: str = "127.0.0.1", port: int = 8000,
          replicas: int | None = None, token: str | None = None, threads: int | None = None,
          max_replicas: int | None = None, address: str | None = None, compile: bool = False) -> str:
    """Start Ray (a local instance, or join `address`), then the service; returns its URL."""
    if not ray.is_initialized():
        ray.init(address=address or "local", include_dashboard=None if address else False,
                 log_to_driver=False, configure_logging=False)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if replicas is None:
        replicas = gpus if gpus and device in ("auto", "cuda") else 1
    if threads is None and not (gpus and device in ("auto", "cuda")):
        threads = max(1, free_cores() // replicas)  # CPU replicas share this machine's cores
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(model_dir, device, replicas, token, threads=threads, max_replicas=max_replicas, compile=compile),
              name=APP_NAME, route_prefix="/", blocking=False)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def stop() -> None:
    serve.shutdown()
    ray.shutdown()


def serve_forever(model_dir: str | None, **kw: Any) -> None:
    """`hone serve`: start, print the URL, run until Ctrl-C or SIGTERM, then stop Serve and Ray."""
    url = start(model_dir, **kw)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which installs handlers of its own
        signal.signal(sig, lambda *_: done.set())
    print(f"hone serve: {url} (model {model_dir or 'default'}; {'bearer token required' if kw.get('token') else 'no token'}); "
          "Ctrl-C stops it", flush=True)
    try:
        while not done.wait(1.0):
            pass
    finally:
        print("hone serve: stopping", flush=True)
        stop()
