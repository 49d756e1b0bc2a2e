"""The team service: the API's checks and the batch loop without Ray, then a real local Ray Serve instance on
CPU with the tiny network (started once for the module, on loopback, and stopped at its end).

The tiny model writes gibberish: these tests check the machinery (status codes, shapes, answers arriving,
tokens refused, cancellation reaching the engine), never the text."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
import pytest

from fit_cases import FIT_CASES, FIT_IDS
from model.serving import api
from model.serving.batch import CLIENT_GONE, DEADLINE_PASSED, Job, run_batch
from model.types import MAX_HOLES, MAX_TOKENS, SampleOptions

TOKEN = "test-token-0123456789"
LONG = {"rule": "one", "max_tokens": 1024, "temperature": 1.0, "empty_threshold": 0.0}  # tens of seconds if not stopped


# ---- the API without Ray ------------------------------------------------------------------------------------


def test_infill_request_becomes_one_hole(spm_engine):
    req = api.decode(b'{"input_prefix": "def f(x):\\n    return ", "input_suffix": "\\n", "prompt": "x",'
                     b' "n_predict": 12, "temperature": 0.5, "t_max_predict_ms": 300, "cache_prompt": true}',
                     api.InfillRequest)
    job = api.infill_job(req, spm_engine)
    assert job.pieces == ["def f(x):\n    return x", "\n"]
    assert (job.opts.max_tokens, job.opts.temperature, job.opts.deadline_s, job.opts.doc_end) == (12, 0.5, 0.3, False)
    defaults = spm_engine.default_options()
    assert (job.opts.prefix_budget, job.opts.suffix_budget) == (defaults.prefix_budget, defaults.suffix_budget)
    job = api.infill_job(api.InfillRequest(input_prefix="a", seed=-1), spm_engine)
    assert job.opts.max_tokens == defaults.max_tokens and job.seed is None
    assert job.opts.deadline_s == api.MAX_DEADLINE_S  # no deadline asked: the service's longest


def test_infill_input_extra_is_cross_file_context(spm_engine):
    """llama.cpp's input_extra (llama.vscode sends chunks of other files) becomes the job's context."""
    req = api.decode(b'{"input_prefix": "s = Store(\'.\')\\ns.", "input_extra": [{"filename": "pkg/models.py",'
                     b' "text": "class Store:\\n    def get_item(self, key): ...\\n"}, {"filename": "x.py", "text": "  "}]}',
                     api.InfillRequest)
    job = api.infill_job(req, spm_engine)
    assert job.context == "# pkg/models.py\nclass Store:\n    def get_item(self, key): ..."
    assert api.infill_job(api.InfillRequest(input_prefix="a"), spm_engine).context == ""


def test_every_path_of_the_service_gets_the_copy_hint(spm_engine):
    """/infill (from its pieces and input_extra), /v1/completions (prompt and suffix) and /hone/fill (the client's,
    from its whole document) hand rule ar the copy hint the editor path gets."""
    before = "x = config.verbose and y\nz = config.verbose"
    infill = api.InfillRequest(input_prefix=before, input_suffix="\n")
    assert api.infill_job(infill, spm_engine).hint == [" and y"]
    extra = api.InfillRequest(input_prefix="q = store.get_item", input_extra=[api.ExtraChunk("m.py", "v = store.get_item(k)\n")])
    assert api.infill_job(extra, spm_engine).hint == ["(k)"]
    assert api.completion_job(api.CompletionRequest(prompt=before, suffix="\n"), spm_engine).hint == [" and y"]
    fill = api.decode(b'{"pieces": ["a", "b"], "hint": "(k)"}', api.FillRequest)
    assert api.fill_job(fill, spm_engine).hint == "(k)"
    several = api.decode(b'{"pieces": ["a", "b"], "hint": ["(k)", "(j)"]}', api.FillRequest)
    assert api.fill_job(several, spm_engine).hint == ["(k)", "(j)"]


@pytest.mark.parametrize("body,reason", [
    (b"not json", "invalid InfillRequest"),
    (b'{"input_prefix": 3}', "$.input_prefix"),
    (b'{"n_predict": 5000}', "$.n_predict"),
    (b'{"n_predict": 0}', "n_predict"),
    (b'{"n_predict": 400}', "n_predict 400: the request does not fit"),  # the tiny model's 512 tokens cannot hold it
    (b'{"n_predict": 400}', "the context leaves 253 slots per hole"),  # beside its budgets (192 + 64) and 3 specials
    (b'{"temperature": -1}', "$.temperature"),
    (b'{"stream": true}', "stream"),
    (b'{"mode": "word"}', "$.mode"),
])
def test_bad_infill_bodies_say_why(engine, body, reason):
    with pytest.raises(api.BadRequest, match=None) as e:
        api.infill_job(api.decode(body, api.InfillRequest), engine)
    assert reason in str(e.value)


def test_fill_request_checks(spm_engine):
    ok = api.fill_job(api.FillRequest(pieces=["a = ", "\nb = ", "\n"]), spm_engine)
    assert len(ok.pieces) == 3 and ok.opts.deadline_s == api.MAX_DEADLINE_S
    for req, reason in [
        (api.FillRequest(pieces=["only one"]), "at least two"),
        (api.FillRequest(pieces=["x"] * (MAX_HOLES + 2)), "at most"),
        (api.FillRequest(pieces=["a", "b"], options=SampleOptions(rule="nope")), "commit rule"),
        (api.FillRequest(pieces=["a", "b"], options=SampleOptions(max_tokens=5000)), f"over the limit of {MAX_TOKENS}"),
        (api.FillRequest(pieces=["a", "b"], options=SampleOptions(prefix_budget=3000)), "does not fit"),
    ]:
        with pytest.raises(api.BadRequest, match=reason):
            api.fill_job(req, spm_engine)


@pytest.mark.parametrize("case", FIT_CASES, ids=FIT_IDS)
def test_the_service_refuses_with_engine_fit(case, lsp_fake_engine):
    """/hone/fill takes options that fit as they are and refuses the rest with Engine.fit's reason."""
    engine = lsp_fake_engine()
    engine.max_len = case.max_len
    req = api.FillRequest(pieces=case.pieces(), options=case.opts)  # its middles count case.fixed tokens
    fit = engine.fit(case.opts, case.holes, case.fixed)
    case.check(fit, lambda opts: engine.fit(opts, case.holes, case.fixed))
    if fit.reason:
        with pytest.raises(api.BadRequest) as e:
            api.fill_job(req, engine)
        assert str(e.value) == fit.reason
    else:
        assert api.fill_job(req, engine).opts.max_tokens == case.opts.max_tokens
    if fit.opts is not None:  # what the language server sends after fitting is taken
        assert api.fill_job(api.FillRequest(pieces=case.pieces(), options=fit.opts), engine).opts.max_tokens == fit.opts.max_tokens


def test_completion_request(spm_engine):
    req = api.decode(b'{"prompt": ["import os\\n"], "suffix": "\\n", "max_tokens": 4, "stop": ["\\n"], "echo": true}',
                     api.CompletionRequest)
    job = api.completion_job(req, spm_engine)
    assert job.pieces == ["import os\n", "\n"] and job.opts.max_tokens == 4
    with pytest.raises(api.BadRequest, match="n:"):
        api.completion_job(api.CompletionRequest(prompt="x", n=2), spm_engine)
    assert api._stop_at("ab\ncd", ["\n"]) == ("ab", True)
    assert api._stop_at("abcd", "zz") == ("abcd", False)


def test_error_answer_is_the_llama_cpp_and_openai_shape():
    body = msgspec.json.decode(msgspec.json.encode(api.error_answer(400, "why")))
    assert body == {"error": {"message": "why", "type": "invalid_request_error", "code": 400}}


# ---- the batch loop without Ray -------------------------------------------------------------------------


def run_one(engine, job: Job):
    return run_batch(engine, [job])[0]


def test_batch_runs_each_job_with_its_deadline_and_cancel(lsp_fake_engine):
    engine = lsp_fake_engine("ok")
    now = [100.0]
    fresh = Job(["a", "b"], SampleOptions(deadline_s=1.0), arrived=99.5)
    late = Job(["a", "b"], SampleOptions(deadline_s=1.0), arrived=98.0)
    gone = Job(["a", "b"], SampleOptions())
    gone.cancel.set()
    bad = Job(["a", "b", "c"], SampleOptions())
    outs = run_batch(engine, [fresh, late, gone], clock=lambda: now[0])
    assert [o.status for o in outs] == [200, DEADLINE_PASSED, CLIENT_GONE]
    assert outs[0].result.texts == ["ok0"] and outs[0].queue_ms == 500.0
    assert engine.calls[0][2].deadline_s == pytest.approx(0.5)  # the wait counted against the deadline
    assert "waited 2000 ms" in outs[1].error
    assert len(engine.calls) == 1  # neither the late nor the cancelled job reached the engine

    class Failing:
        def fill(self, *a):
            raise ValueError("rule 'ar' needs an spm model")

    assert run_one(Failing(), bad).status == 400


def test_batch_stops_a_running_job_when_its_client_goes(lsp_fake_engine):
    engine = lsp_fake_engine(hold=True)
    job = Job(["a", "b"], SampleOptions())
    t = threading.Thread(target=lambda: setattr(job, "out", run_one(engine, job)))
    t.start()
    assert engine.started.wait(5)
    job.cancel.set()
    t.join(5)
    assert job.out.status == CLIENT_GONE and engine.cancelled == 1


def test_batch_of_jobs_runs_together_on_an_spm_engine(spm_dir):
    """Several jobs reach the engine in one fill_many call (their steps share forwards), each answered as alone."""
    from model.engine import Engine

    engine = Engine.load(spm_dir, "cpu", threads=1)
    jobs = [Job(["def f(x):\n    return ", "\n"], SampleOptions(mode="line", max_tokens=12, rule="threshold")),
            Job(["import os\n", "\n"], SampleOptions(mode="block", max_tokens=16)),
            Job(["x = [", "]\n"], SampleOptions(mode="line", max_tokens=12, deadline_s=30.0))]
    alone = [engine.fill(j.pieces, j.opts).texts for j in jobs]
    calls = []
    fill_many = engine.fill_many
    engine.fill_many = lambda c: calls.append(len(c)) or fill_many(c)
    outs = run_batch(engine, jobs)
    assert calls == [3] and [o.status for o in outs] == [200, 200, 200]
    assert [o.result.texts for o in outs] == alone


# ---- a real Ray Serve instance --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def long_model(tmp_path_factory) -> Path:
    """The tiny spm network with room for 1024-slot canvases: a slow request to cancel."""
    from model.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("serve") / "tiny", layout="spm", shifted=True, max_seq_len=2048)


@pytest.fixture(scope="module")
def service(long_model):
    """Two CPU replicas of one thread each, with a token, on a local Ray instance of its own."""
    import ray

    from model.serving import app

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        url = app.start(str(long_model), device="cpu", port=free_port(), replicas=2, token=TOKEN, threads=1)
        yield url
    finally:
        app.stop()


def call(url: str, path: str, body=None, token: str | None = TOKEN, method: str | None = None,
         timeout: float = 60) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    conn.request(method or ("GET" if body is None else "POST"), path, body=data, headers=headers)
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    return resp.status, json.loads(raw) if raw.startswith(b"{") else {"raw": raw.decode()}


def replica_stats(url: str) -> dict[str, int]:
    """Counters summed over both replicas (GET /hone/stats answers from whichever replica it reaches)."""
    seen: dict[str, dict] = {}
    for _ in range(40):
        status, st = call(url, "/hone/stats")
        assert status == 200
        assert st.pop("steps") == "eager"  # compiling is opt-in
        seen[st.pop("replica")] = st
        if len(seen) == 2:
            break
    assert len(seen) == 2, "GET /hone/stats never reached the second replica"
    return {k: sum(st[k] for st in seen.values()) for k in next(iter(seen.values()))}


def wait_for(predicate, timeout: float = 20.0, every: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")


def test_health_needs_no_token(service):
    assert call(service, "/health", token=None) == (200, {"status": "ok", "model": "tiny"})


def test_infill_answers(service):
    status, body = call(service, "/infill", {"input_prefix": "def add(a, b):\n    return ", "input_suffix": "\n",
                                             "n_predict": 8, "temperature": 0})
    assert status == 200, body
    assert isinstance(body["content"], str) and body["model"] == "tiny" and body["stop"] is True
    assert body["stop_type"] in ("eos", "limit")
    assert body["timings"]["predicted_ms"] > 0 and body["hone"]["forwards"] >= 1


def test_openai_completions_and_holes(service):
    status, body = call(service, "/v1/completions", {"prompt": "import os\n", "suffix": "\n", "max_tokens": 6})
    assert status == 200, body
    assert body["object"] == "text_completion" and len(body["choices"]) == 1
    assert body["choices"][0]["finish_reason"] in ("stop", "length") and body["usage"]["completion_tokens"] >= 0
    status, body = call(service, "/hone/fill", {"pieces": ["a = ", "\nb = ", "\n"], "options": {"max_tokens": 4}})
    assert status == 200, body
    assert len(body["texts"]) == 2 and body["stats"]["forwards"] >= 1
    status, body = call(service, "/hone/info")
    assert status == 200 and body["max_len"] == 2047 and body["default_options"]["prefix_budget"] > 0
    assert call(service, "/hone/tokens", {"texts": ["hello world", ""]})[1]["counts"][1] == 0


def test_missing_or_wrong_token_is_refused_before_any_model_work(service):
    before = replica_stats(service)
    body = {"pieces": ["def f():\n    ", "\n"], "options": LONG}
    for token in (None, "wrong", TOKEN + "x"):
        t0 = time.monotonic()
        status, answer = call(service, "/hone/fill", body, token=token)
        assert status == 401 and answer["error"]["type"] == "authentication_error"
        assert time.monotonic() - t0 < 5
    after = replica_stats(service)
    assert after["refused"] - before["refused"] == 3
    assert after["batches"] == before["batches"]  # nothing reached an engine


@pytest.mark.parametrize("path,body,status,reason", [
    ("/infill", b"{", 400, "invalid InfillRequest"),
    ("/infill", {"n_predict": "many"}, 400, "$.n_predict"),
    ("/v1/completions", {"prompt": "x", "stream": True}, 400, "stream"),
    ("/hone/fill", {"pieces": ["one"]}, 400, "at least two"),
    ("/hone/fill", {"pieces": ["a", "b"], "options": {"rule": "sideways"}}, 400, "commit rule"),
    ("/nowhere", {}, 404, "no route"),
])
def test_bad_bodies_get_400_with_the_reason(service, path, body, status, reason):
    got, answer = call(service, path, body)
    assert got == status and reason in answer["error"]["message"]


def test_sixteen_concurrent_clients_are_all_answered_in_batches(service):
    before = replica_stats(service)
    body = {"input_prefix": "for i in range(10):\n    ", "input_suffix": "\n", "n_predict": 8, "mode": "line"}
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: call(service, "/infill", {**body, "seed": i}), range(16)))
    assert [s for s, _ in answers] == [200] * 16
    assert all(isinstance(b["content"], str) for _, b in answers)
    after = replica_stats(service)
    requests, batches = after["batched_requests"] - before["batched_requests"], after["batches"] - before["batches"]
    assert requests == 16 and batches < 16  # @serve.batch gathered some of them


def test_deadline_returns_the_best_draft_in_time(service):
    t0 = time.monotonic()
    status, body = call(service, "/hone/fill", {"pieces": ["def f():\n    ", "\n"], "options": {**LONG, "deadline_s": 0.3}})
    assert status == 200 and body["stats"]["deadline_hit"] is True
    assert time.monotonic() - t0 < 10


def test_client_disconnect_stops_the_engine(service):
    before = replica_stats(service)
    host, port = service.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("POST", "/hone/fill", body=json.dumps({"pieces": ["class A:\n    ", "\n"], "options": LONG}),
                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    time.sleep(1.0)  # the engine is on it
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    after = wait_for(lambda: (st := replica_stats(service))["cancelled"] > before["cancelled"] and st)
    assert after["disconnects"] > before["disconnects"]
    assert after["answered"] == before["answered"]  # the long request never completed


def test_bench_serve_against_the_service(service, tmp_path, capsys):
    import argparse

    from model.serving import bench

    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    parser = argparse.ArgumentParser()
    bench.add_args(parser)
    figures = bench.run(parser.parse_args(["--url", service, "--token-file", str(token), "--editors", "1,2",
                                           "--seconds", "1", "--max-tokens", "4", "--no-local"]))
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == figures
    two = figures["service"]["2"]
    assert two["editors"] == 2 and two["completions"] > 0 and two["errors"] == 0 and "mean_batch" in two


def test_a_replica_killed_under_load_leaves_no_request_hanging(service):
    """Sixteen clients of RemoteEngine (the language server's) while one replica is killed: each gets its answer
    (a retried request lands on the surviving replica) or a clear error, none hangs."""
    import ray

    from lsp_server.remote import RemoteEngine, RemoteError, Unreachable

    client = RemoteEngine(service, TOKEN)
    opts = msgspec.structs.replace(client.default_options(), max_tokens=64, temperature=1.0, deadline_s=10.0)
    replica = next(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                   if a["name"].startswith("SERVE_REPLICA::hone#HoneService"))

    def one(i: int):
        try:
            return client.fill(["def f(x):\n    ", "\n"], opts, seed=i)
        except (RemoteError, Unreachable) as e:
            return e

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(one, i) for i in range(16)]
        time.sleep(0.3)
        ray.kill(ray.get_actor(replica, namespace="serve"), no_restart=True)
        outcomes = [f.result(timeout=60) for f in futures]
    answered = [o for o in outcomes if not isinstance(o, Exception)]
    assert answered, outcomes
    for o in outcomes:
        if isinstance(o, Exception):
            assert str(o)  # a reason, not a hang
        else:
            assert len(o.texts) == 1
