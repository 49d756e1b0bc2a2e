"""`hone-lsp --remote`: the remote settings, RemoteEngine against a scripted HTTP stub (no Ray), then the
language server end to end over a real `hone serve` (a local Ray instance in a subprocess, tiny model).

The tiny model writes gibberish: the end-to-end tests check structure and states, never the text."""

from __future__ import annotations

import asyncio
import http.client
import json
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import msgspec
import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled

from conftest import REPO, lsp_plain
from lsp_docs import configure, inline_params, open_doc, stats
from lsp_server.remote import RETRY_S, Refused, RemoteEngine, RemoteError, Unreachable, split_url
from lsp_server.settings import Settings, merge, needs_reload
from model.serving import api
from fit_cases import FIT_CASES, FIT_IDS
from model.types import MAX_HOLES, Cancelled, Limits, SampleOptions

TOKEN = "remote-test-token"
MARKER = "zebra_quokka_marker"  # document text that must never show up in a log


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- settings ---------------------------------------------------------------------------------------------


def test_remote_settings_are_user_level_only():
    user, problems = merge(Settings(), {"remote": "http://gpu:8000", "remoteToken": "s3cret", "remoteFallback": True},
                           allow_trust=True)
    assert (user.remote, user.remote_token, user.remote_fallback) == ("http://gpu:8000", "s3cret", True) and not problems
    s, problems = merge(Settings(), {"remote": "http://evil:80", "remoteToken": "x", "remoteFallback": True},
                        allow_trust=False)
    assert (s.remote, s.remote_token, s.remote_fallback) == ("", "", False) and len(problems) == 3
    same, problems = merge(user, {"remote": "http://gpu:8000", "maxTokens": 9}, allow_trust=False)
    assert same.remote == "http://gpu:8000" and same.max_tokens == 9 and not problems  # an unchanged echo is fine
    assert needs_reload(Settings(), user) and needs_reload(user, Settings(remote="http://gpu:8000"))


def test_remote_settings_are_checked_and_the_token_never_shown():
    prev = Settings(remote_token="s3cret-old")
    s, problems = merge(prev, {"remote": "gpu:8000", "remoteToken": 12345}, allow_trust=True)
    assert s.remote == "" and s.remote_token == "s3cret-old" and len(problems) == 2
    assert "12345" not in problems[1] and "s3cret-old" not in problems[1] and "remoteToken" in problems[1]


def test_split_url():
    assert split_url("http://gpu-box:8000/") == ("http", "gpu-box", 8000, "")
    assert split_url("https://team.example/hone") == ("https", "team.example", 443, "/hone")
    for bad in ("gpu-box:8000", "ftp://x", "http://"):
        with pytest.raises(ValueError, match="remote URL"):
            split_url(bad)


# ---- RemoteEngine against a stub --------------------------------------------------------------------------


class Stub:
    """An HTTP server whose answers the test scripts: each POST takes the next action from `actions`
    (status, content type, body), or ("hold",) to keep the request open until its client disconnects."""

    def __init__(self) -> None:
        self.actions: queue.Queue = queue.Queue()
        self.seen: list[tuple[str, str, dict, bytes]] = []
        self.holding = threading.Event()
        self.disconnected = threading.Event()
        self.info = api.Info("stub", "cpu", 512, SampleOptions())  # GET /hone/info's answer
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                stub.seen.append(("GET", self.path, dict(self.headers), b""))
                self._send(200, "application/json", msgspec.json.encode(stub.info))

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stub.seen.append(("POST", self.path, dict(self.headers), body))
                action = stub.actions.get_nowait()
                if action[0] == "hold":
                    stub.holding.set()
                    while True:  # until the client goes: a readable socket with nothing to read
                        ready, _, _ = select.select([self.connection], [], [], 0.05)
                        if ready and not self.connection.recv(1, socket.MSG_PEEK):
                            stub.disconnected.set()
                            return
                self._send(*action)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fill_ok(self, texts=("x",)) -> None:
        answer = api.FillAnswer(list(texts), api.Stats(forwards=2, tokens=1, tokens_per_forward=0.5), "stub")
        self.actions.put((200, "application/json", msgspec.json.encode(answer)))

    def error(self, status: int, message: str) -> None:
        self.actions.put((status, "application/json", msgspec.json.encode(api.error_answer(status, message))))

    def posts(self) -> int:
        return sum(method == "POST" for method, *_ in self.seen)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    s = Stub()
    yield s
    s.close()


OPTS = SampleOptions(max_tokens=8)


def test_remote_engine_speaks_the_fill_api(stub):
    eng = RemoteEngine(stub.url + "/", TOKEN)
    assert (eng.name, eng.max_len, eng.device) == ("stub", 512, f"cpu via {eng.netloc}")
    assert eng.health() == (True, "")
    stub.fill_ok(["a", "b"])
    res = eng.fill(["p", "m", "s"], OPTS, seed=3)
    assert res.texts == ["a", "b"] and res.stats.forwards == 2
    method, path, headers, body = stub.seen[-1]
    assert (method, path, headers["Authorization"]) == ("POST", "/hone/fill", f"Bearer {TOKEN}")
    sent = msgspec.json.decode(body, type=api.FillRequest)
    assert sent.pieces == ["p", "m", "s"] and sent.options == OPTS and sent.seed == 3
    stub.actions.put((200, "application/json", b'{"counts": [3]}'))
    assert eng.count_tokens("abc") == 3
    assert stub.seen[-1][1] == "/hone/tokens" and json.loads(stub.seen[-1][3]) == {"texts": ["abc"]}


def test_remote_engine_maps_the_answers(stub):
    eng = RemoteEngine(stub.url)
    stub.actions.put((500, "text/plain", b"replica died"))  # Ray Serve's own page: tried once more
    stub.fill_ok()
    assert eng.fill(["a", "b"], OPTS).texts == ["x"] and stub.posts() == 2
    stub.error(500, "engine broke")  # the engine's own failure: not retried
    with pytest.raises(RemoteError, match="engine broke"):
        eng.fill(["a", "b"], OPTS)
    stub.error(400, "options: bad rule")
    with pytest.raises(ValueError, match="bad rule"):
        eng.fill(["a", "b"], OPTS)
    stub.error(504, "deadline passed while queued")
    res = eng.fill(["a", "b", "c"], OPTS)
    assert res.texts == ["", ""] and res.stats.deadline_hit
    stub.error(401, "missing or wrong bearer token")
    with pytest.raises(Refused, match="token"):
        eng.fill(["a", "b"], OPTS)
    usable, message = eng.health()
    assert not usable and "refused the token" in message
    stub.fill_ok()
    eng.fill(["a", "b"], OPTS)
    assert eng.health() == (True, "")
    assert stub.posts() == 7  # one per call: only the one Ray Serve answered itself was sent twice


@pytest.mark.parametrize("case", FIT_CASES, ids=FIT_IDS)
def test_remote_engine_fits_as_the_service_does(case, stub):
    """The client fits requests from the limits the service's info sent, as the service's engine would."""
    stub.info = api.Info("stub", "cpu", case.max_len, SampleOptions(), max_holes=MAX_HOLES)
    eng = RemoteEngine(stub.url)
    assert eng.limits == Limits(max_len=case.max_len)
    case.check(eng.fit(case.opts, case.holes, case.fixed), lambda opts: eng.fit(opts, case.holes, case.fixed))
    stub.info = api.Info("stub", "cpu", case.max_len, SampleOptions(), max_holes=case.holes - 1)
    eng = RemoteEngine(stub.url)  # a service with a lower limit of its own: the client keeps to it
    assert eng.fit(case.opts, case.holes, case.fixed).opts is None


def test_cancel_aborts_the_http_request(stub):
    eng = RemoteEngine(stub.url)
    stub.actions.put(("hold",))
    cancel = threading.Event()
    outcome: list = []

    def run():
        try:
            outcome.append(eng.fill(["a", "b"], OPTS, cancel))
        except Cancelled as e:
            outcome.append(e)

    t = threading.Thread(target=run)
    t.start()
    assert stub.holding.wait(10)
    t0 = time.monotonic()
    cancel.set()
    t.join(5)
    assert isinstance(outcome[0], Cancelled) and time.monotonic() - t0 < 1.0
    assert stub.disconnected.wait(5)  # the service sees the client go, and stops its engine
    assert eng.health() == (True, "")  # a cancel is not an outage


def test_unreachable_service_without_and_with_fallback(lsp_fake_engine):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    eng = RemoteEngine(url)
    usable, message = eng.health()
    assert not usable and "unreachable" in message and url in message
    with pytest.raises(Unreachable):
        eng.fill(["a", "b"], OPTS)
    assert isinstance(Unreachable("x"), ConnectionError)  # the service logs it without a traceback

    local = lsp_fake_engine("local")
    now = [0.0]
    eng = RemoteEngine(url, fallback=lambda: local, clock=lambda: now[0])
    assert eng.fill(["a", "b"], OPTS).texts == ["local0"]
    assert eng.count_tokens("abcdefgh") == 2 and eng.device == "cpu (local fallback)" and eng.name == "fake"
    usable, message = eng.health()
    assert usable and "local model answers" in message


def test_service_back_after_an_outage(stub):
    now = [0.0]
    stub.actions.put((503, "text/plain", b"no replica"))
    stub.actions.put((503, "text/plain", b"no replica"))
    eng = RemoteEngine(stub.url, clock=lambda: now[0])
    with pytest.raises(Unreachable, match="no replica answering"):
        eng.fill(["a", "b"], OPTS)
    with pytest.raises(Unreachable):  # within RETRY_S the service is not even tried
        eng.fill(["a", "b"], OPTS)
    assert len([s for s in stub.seen if s[0] == "POST"]) == 2
    now[0] += RETRY_S + 1
    stub.fill_ok()
    assert eng.fill(["a", "b"], OPTS).texts == ["x"] and eng.health() == (True, "")


# ---- end to end: hone-lsp --remote over a real `hone serve` ---------------------------------------------

@pytest.fixture(scope="module")
def service_model(tmp_path_factory) -> Path:
    from model.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("remote") / "tiny", layout="spm", shifted=True, max_seq_len=2048)


@pytest.fixture(scope="module")
def hone_service(service_model, tmp_path_factory, lsp_server_env):
    """`hone serve` as a user starts it: one CPU replica of one thread, a token file; stopped with Ctrl-C."""
    folder = tmp_path_factory.mktemp("service")
    token_file = folder / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    out = open(folder / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "lsp_server.cli", "serve", "--model", str(service_model),
                             "--device", "cpu", "--port", str(port), "--replicas", "1", "--threads", "1",
                             "--token-file", str(token_file)], stdout=out, stderr=subprocess.STDOUT,
                            env=lsp_server_env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not _healthy(url):
            assert proc.poll() is None, (folder / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "hone serve did not come up"
            time.sleep(0.5)
        yield {"url": url, "token_file": token_file, "log": folder / "serve.log"}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()


def _healthy(url: str) -> bool:
    try:
        return _get(url, "/health", None)[0] == 200
    except OSError:
        return False


def _get(url: str, path: str, token: str | None) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, json.loads(body) if body.startswith(b"{") else {}


FAST = {"maxTokens": 6, "debounceMs": 0, "deadlineMs": 0, "grounding": False}  # the tiny model writes gibberish names


def _lsp_command(*extra: str) -> list[str]:
    return [sys.executable, "-m", "lsp_server", "--device", "cpu", *extra]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def remote_client(hone_service, lsp_start_client, lsp_stop_client, lsp_wait_status, tmp_path_factory):
    log_file = tmp_path_factory.mktemp("lsp") / "lsp.log"
    c = await lsp_start_client(FAST, command=_lsp_command("--remote", hone_service["url"], "--remote-token-file",
                                                         str(hone_service["token_file"]), "--log-file", str(log_file)))
    c.log_file = log_file
    await lsp_wait_status(c, "ready")
    yield c
    await lsp_stop_client(c)


@pytest.mark.e2e
@pytest.mark.asyncio(loop_scope="module")
async def test_every_feature_through_the_service(remote_client, hone_service, lsp_wait_status):
    c = remote_client
    st = c.statuses[-1]
    assert st["state"] == "ready" and st["model"] == "tiny" and st["device"].startswith("cpu via 127.0.0.1:")
    before, served = await stats(c), _get(hone_service["url"], "/hone/stats", TOKEN)[1]
    uri = open_doc(c, f"import os\n\ndef {MARKER}(path):\n    return \n")
    seen = len(c.statuses)
    res = await c.text_document_inline_completion_async(inline_params(uri, 3, 11))
    assert len(res.items) <= 1  # this tiny network often says only spaces, which clean-up drops
    for item in res.items:
        assert item.range.start == types.Position(3, 11)
    st = await lsp_wait_status(c, "ready", after=seen)
    assert st["lastLatencyMs"] > 0
    other = open_doc(c, "def f(x):\n    y = \n")
    comp = await c.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(other), position=types.Position(1, 8)))
    assert len(comp.items) <= 1
    after = await stats(c)
    assert after["modelRuns"] == before["modelRuns"] + 2 and after["errors"] == before["errors"]
    assert _get(hone_service["url"], "/hone/stats", TOKEN)[1]["answered"] == served["answered"] + 2
    holes = open_doc(c, "a = ???\nb = ???\n")
    res = lsp_plain(await c.workspace_execute_command_async(
        types.ExecuteCommandParams(command="hone.fillHoles", arguments=[holes])))
    assert res == {"applied": True, "edits": 2, "message": ""}
    rng = {"start": {"line": 0, "character": 4}, "end": {"line": 0, "character": 7}}
    res = lsp_plain(await c.workspace_execute_command_async(
        types.ExecuteCommandParams(command="hone.rewriteSelection", arguments=[holes, rng])))
    assert res["applied"] is True and res["edits"] == 1


@pytest.mark.e2e
@pytest.mark.asyncio(loop_scope="module")
async def test_cancel_request_aborts_the_service_request(remote_client, hone_service, lsp_wait_status):
    c = remote_client
    before = _get(hone_service["url"], "/hone/stats", TOKEN)[1]
    configure(c, {"maxTokens": 512, "mode": "block", "commitRule": "one", "deadlineMs": 0})
    uri = open_doc(c, "class Store:\n    def load(self, path):\n        \n")
    seen = len(c.statuses)
    fut = asyncio.ensure_future(c.protocol.send_request_async(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 2, 8), msg_id="remote-cancel"))
    await lsp_wait_status(c, "busy", after=seen)
    await asyncio.sleep(0.5)  # the request is at the service
    c.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="remote-cancel"))
    with pytest.raises(JsonRpcRequestCancelled):
        await fut
    configure(c, FAST | {"mode": "auto", "commitRule": "threshold"})
    end = time.monotonic() + 20
    while True:  # the service saw the client go and stopped its engine
        after = _get(hone_service["url"], "/hone/stats", TOKEN)[1]
        if after["cancelled"] > before["cancelled"]:
            break
        assert time.monotonic() < end, after
        await asyncio.sleep(0.2)
    assert after["answered"] == before["answered"]


@pytest.mark.e2e
@pytest.mark.asyncio(loop_scope="module")
async def test_no_document_text_in_either_log(remote_client, hone_service):
    await asyncio.sleep(0.5)  # let the logs flush
    assert MARKER not in remote_client.log_file.read_text(errors="replace")
    assert MARKER not in hone_service["log"].read_text(errors="replace")


@pytest.mark.e2e
@pytest.mark.asyncio(loop_scope="module")
async def test_unreachable_service_shows_in_the_status(lsp_start_client, lsp_stop_client, lsp_wait_status):
    url = f"http://127.0.0.1:{free_port()}"
    c = await lsp_start_client(FAST, command=_lsp_command("--remote", url))
    try:
        st = await lsp_wait_status(c, "error")
        assert "unreachable" in st["message"] and url in st["message"]
        uri = open_doc(c, "x = \n")
        assert (await c.text_document_inline_completion_async(inline_params(uri, 0, 4))).items == ()
    finally:
        await lsp_stop_client(c)


@pytest.mark.e2e
@pytest.mark.asyncio(loop_scope="module")
async def test_fallback_answers_with_the_local_model(lsp_start_client, lsp_stop_client, lsp_wait_status,
                                                     lsp_tiny_model):
    url = f"http://127.0.0.1:{free_port()}"
    c = await lsp_start_client(FAST | {"remote": url, "remoteFallback": True},
                               command=_lsp_command("--model", str(lsp_tiny_model)))
    try:
        st = await lsp_wait_status(c, "ready")
        assert "local model answers" in st["message"] and st["device"] == "cpu (local fallback)"
        uri = open_doc(c, "import os\n\ndef size(path):\n    return \n")
        res = await c.text_document_inline_completion_async(inline_params(uri, 3, 11))
        assert len(res.items) == 1
    finally:
        await lsp_stop_client(c)


@pytest.mark.e2e
@pytest.mark.asyncio(loop_scope="module")
async def test_a_wrong_token_shows_in_the_status(hone_service, lsp_start_client, lsp_stop_client, lsp_wait_status):
    c = await lsp_start_client(FAST | {"remote": hone_service["url"], "remoteToken": "not-the-token"},
                               command=_lsp_command())
    try:
        st = await lsp_wait_status(c, "error")
        assert "refused the token" in st["message"] and "not-the-token" not in json.dumps(c.statuses)
    finally:
        await lsp_stop_client(c)
