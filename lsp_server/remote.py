"""`hone-lsp --remote URL`: an engine whose model calls go over HTTP to `hone serve` (POST /hone/fill).

It implements model.types.Engine, so every server feature (inline completion, completion, rewrite, holes)
works through it unchanged. Standard library only. Cancelling a call (the sampler's cancel event) shuts the
request's socket down: the service sees the disconnect and stops its engine too. When the service cannot be
reached, `health()` says so; with a fallback the local engine answers meanwhile and the service is tried
again every RETRY_S. Nothing here logs document text.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
import time
from typing import Any, Callable
from urllib.parse import urlsplit

import msgspec

from model.serving import api
from model.serving.batch import CLIENT_GONE, DEADLINE_PASSED
from model.types import Cancelled, Engine, Fit, Limits, Result, SampleOptions, Stats, fit_options

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3.0  # an unreachable host fails this fast
READ_SLACK_S = 15.0  # beyond a request's own deadline: queueing behind other editors, the network
READ_TIMEOUT_S = api.MAX_DEADLINE_S + READ_SLACK_S  # the service answers every request within its longest deadline
RETRY_S = 10.0  # after a failure to connect, requests skip the service (fallback or a quick error) this long
CANCEL_POLL_S = 0.01  # how often a request's watcher looks at its cancel event
RETRIED = {500, 502, 503}  # Ray Serve's own answers when a replica died or none is ready: worth one more try


class RemoteError(RuntimeError):
    """The service answered with an error that retrying will not fix (a refused token, a failing engine)."""


class Unreachable(ConnectionError):
    """The service cannot be reached (refused, reset, timed out, or no replica answered)."""


class Refused(RemoteError, ConnectionError):
    """The service refused the token (401): like an outage, the status says so and logs carry no traceback."""


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, base path) of an http(s) URL; ValueError naming what is wrong."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"remote URL {url!r}: expected http://HOST:PORT or https://HOST[:PORT][/PATH]")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname, port, parts.path.rstrip("/")


class _Exchange:
    """One HTTP request on its own connection, which a cancel event shuts down from a watcher thread."""

    def __init__(self, conn: http.client.HTTPConnection, cancel: threading.Event | None):
        self.conn, self.cancel = conn, cancel
        self.done = threading.Event()
        self.aborted = False

    def _watch(self) -> None:
        assert self.cancel is not None
        while not self.done.is_set():
            if self.cancel.wait(CANCEL_POLL_S):
                sock = self.conn.sock
                if sock is not None and not self.done.is_set():
                    self.aborted = True
                    try:
                        sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked read; the service sees a disconnect
                    except OSError:
                        pass
                return

    def run(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes, str]:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()
        if self.cancel is not None:
            threading.Thread(target=self._watch, name="hone-remote-cancel", daemon=True).start()
        try:
            self.conn.request(method, path, body=body, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
            return resp.status, data, resp.getheader("content-type", "")
        except (OSError, http.client.HTTPException):
            if self.aborted or (self.cancel is not None and self.cancel.is_set()):
                raise Cancelled() from None
            raise
        finally:
            self.done.set()  # the watcher ends at its next poll; nobody waits for it
            self.conn.close()


class RemoteEngine:
    """model.types.Engine over HTTP. `fallback` loads a local engine (called at most once, when the service
    is first found unreachable); without it, calls fail with `Unreachable` while the service is down."""

    def __init__(self, url: str, token: str | None = None, fallback: Callable[[], Engine] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._scheme, self._host, self._port, self._base = split_url(url)
        self.netloc = f"{self._host}:{self._port}"
        self.url = f"{self._scheme}://{self.netloc}{self._base}"  # without any user:password in the URL
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._fallback = fallback
        self._clock = clock
        self._lock = threading.Lock()
        self._local: Engine | None = None
        self._info: api.Info | None = None
        self._down_until = 0.0  # while the clock is below this, the service is not tried
        self.problem = ""  # why the service is not serving right now ("" when it is)
        self._refused = False  # the last answer was 401: a token problem, not a network one
        try:
            self._refresh_info()
        except Unreachable:
            if fallback is not None:
                self._local_engine()  # load now, so the first completion does not wait for it

    # ---- what the server reads ----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        local = self._serving_locally()
        if local is not None:
            return str(local.name)
        return self._info.model if self._info else self.netloc

    @property
    def device(self) -> str:
        local = self._serving_locally()
        if local is not None:
            return f"{local.device} (local fallback)"
        return f"{self._info.device} via {self.netloc}" if self._info else f"remote {self.netloc}"

    @property
    def max_len(self) -> int | None:
        local = self._serving_locally()
        if local is not None:
            return local.max_len
        return self._info.max_len if self._info else None

    @property
    def limits(self) -> Limits:
        """The service's (GET /hone/info); before it answered, only the request limits every engine has."""
        local = self._serving_locally()
        if local is not None:
            return local.limits
        return self._info.limits() if self._info else Limits()

    def fit(self, opts: SampleOptions, holes: int = 1, fixed_tokens: int = 0) -> Fit:
        """As the service's engine fits (and refuses) the request, from the limits it sent."""
        local = self._serving_locally()
        if local is not None:
            return local.fit(opts, holes, fixed_tokens)
        return fit_options(opts, self.limits, holes, fixed_tokens)

    def default_options(self) -> SampleOptions:
        local = self._serving_locally()
        if local is not None:
            return local.default_options()
        return self._info.default_options if self._info else SampleOptions()

    def health(self) -> tuple[bool, str]:
        """(can answer, what the status should say): the service's problem, if any, and whether a local
        engine answers meanwhile."""
        if not self.problem:
            return True, ""
        if self._local is not None and not self._refused:
            return True, f"{self.problem}; the local model answers meanwhile"
        return False, self.problem

    # ---- Engine ---------------------------------------------------------------------------------------------

    def fill(self, pieces: list[str], opts: SampleOptions, cancel: threading.Event | None = None,
             seed: int | None = None, context: str = "", hint: str | list[str] = "") -> Result:
        timeout = READ_TIMEOUT_S if not opts.deadline_s else opts.deadline_s + READ_SLACK_S
        body = msgspec.json.encode(api.FillRequest(pieces=pieces, options=opts, seed=seed, context=context, hint=hint))
        try:
            status, data = self._call("POST", "/hone/fill", body, cancel, timeout)
        except Unreachable:
            if self._fallback is None:
                raise
            return self._local_engine().fill(pieces, opts, cancel, seed, context, hint)
        if status == DEADLINE_PASSED:  # the deadline passed while the request queued at the service: nothing to show
            return Result([""] * (len(pieces) - 1), Stats(deadline_hit=True))
        answer = self._decode(status, data, api.FillAnswer)
        if self._info is None or self._info.model != answer.model:
            self._refresh_info_quietly()
        return Result(answer.texts, answer.stats)

    def infill(self, prefix: str, suffix: str, opts: SampleOptions, cancel: threading.Event | None = None,
               seed: int | None = None) -> Result:
        return self.fill([prefix, suffix], opts, cancel, seed)

    def count_tokens(self, text: str) -> int:
        """Counted by the service's tokenizer (POST /hone/tokens): exact for any model it serves."""
        try:
            status, data = self._call("POST", "/hone/tokens", msgspec.json.encode(api.TokensRequest(texts=[text])), None,
                                      READ_SLACK_S)
        except Unreachable:
            if self._fallback is None:
                raise
            return self._local_engine().count_tokens(text)
        return self._decode(status, data, api.TokensAnswer).counts[0]

    # ---- HTTP -----------------------------------------------------------------------------------------------

    def _serving_locally(self) -> Engine | None:
        """The local engine while the service is unreachable (it is tried again after RETRY_S)."""
        if self._local is not None and self.problem and not self._refused:
            return self._local
        return None

    def _local_engine(self) -> Engine:
        with self._lock:
            if self._local is None:
                assert self._fallback is not None
                log.warning("loading the local model: %s", self.problem)
                self._local = self._fallback()
            return self._local

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _call(self, method: str, path: str, body: bytes | None, cancel: threading.Event | None,
              timeout: float) -> tuple[int, bytes]:
        """(status, body) of an answer that is not a transient failure. Raises Unreachable (and starts the retry
        wait) when the service does not answer; Cancelled when `cancel` is set; Refused for 401."""
        if self._clock() < self._down_until:
            raise Unreachable(self.problem)
        status, data, kind = 0, b"", ""
        for attempt in range(2):  # one more try on a fresh connection: a replica that died under the request
            conn = self._connection(CONNECT_TIMEOUT_S)
            try:
                conn.connect()
                assert conn.sock is not None
                conn.sock.settimeout(timeout)
                status, data, kind = _Exchange(conn, cancel).run(method, self._base + path, body, self._headers)
            except (OSError, http.client.HTTPException) as e:
                if attempt == 0 and not isinstance(e, (ConnectionRefusedError, socket.timeout, socket.gaierror)):
                    continue
                self._down(f"the service at {self.url} is unreachable ({type(e).__name__}: {e})")
                raise Unreachable(self.problem) from None
            if status in RETRIED and "application/json" not in kind and attempt == 0:
                continue  # Ray Serve's own error page, not the engine's: a replica died or is starting
            break
        if status in RETRIED and "application/json" not in kind:
            self._down(f"the service at {self.url} has no replica answering (HTTP {status})")
            raise Unreachable(self.problem)
        if status == 401:
            self._refused, self.problem = True, f"the service at {self.url} refused the token (HTTP 401): check hone.remoteToken"
            raise Refused(self.problem)
        if self.problem:
            log.info("the service at %s answers again", self.url)
        self.problem, self._refused, self._down_until = "", False, 0.0
        return status, data

    def _down(self, problem: str) -> None:
        if problem != self.problem:
            log.warning("%s", problem)
        self.problem, self._refused = problem, False
        self._down_until = self._clock() + RETRY_S

    def _decode(self, status: int, data: bytes, kind: type[Any]) -> Any:
        if status == 200:
            return msgspec.json.decode(data, type=kind)
        try:
            message = msgspec.json.decode(data, type=api.ErrorAnswer).error.message
        except msgspec.DecodeError:
            message = data[:200].decode("utf-8", "replace")
        if status == 400:
            raise ValueError(f"the service refused the request: {message}")
        if status == CLIENT_GONE:  # the service saw this request cancelled
            raise Cancelled()
        raise RemoteError(f"the service answered HTTP {status}: {message}")

    def _refresh_info(self) -> None:
        status, data = self._call("GET", "/hone/info", None, None, READ_SLACK_S)
        self._info = self._decode(status, data, api.Info)

    def _refresh_info_quietly(self) -> None:
        try:
            self._refresh_info()
        except (Unreachable, RemoteError, ValueError, Cancelled) as e:
            log.warning("could not read the service's model info: %s", e)
