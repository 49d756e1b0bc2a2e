"""Shared fixtures. The language-server ones are prefixed `lsp_`."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def hone_cache(tmp_path_factory):
    """Compiled model steps go to a folder of this test session (servers started by tests inherit it), never to the
    user's cache; tests compiling the same tiny model share one build. $HONE_TEST_CACHE, when set, is that folder
    instead: scripts/test.sh shares one between its unit and end-to-end runs (the tiny models are seeded: the same
    packages)."""
    old = os.environ.get("HONE_CACHE")
    os.environ["HONE_CACHE"] = os.environ.get("HONE_TEST_CACHE") or str(tmp_path_factory.mktemp("hone_cache"))
    yield Path(os.environ["HONE_CACHE"])
    if old is None:
        os.environ.pop("HONE_CACHE")
    else:
        os.environ["HONE_CACHE"] = old


def copy_built_steps(model, folder: Path, leave: tuple[str, ...] = ()) -> None:
    """The steps of the model's compiled package but those to `leave` out, as this test session's cache has them
    (built there once), copied into `folder`: a test of how a build behaves watches one step being built, not four
    (each full build costs a minute or more of both cores)."""
    import shutil

    from model.compiled import STEPS, AotSteps, cache_root, package_key

    AotSteps.load_or_build(model)
    folder.mkdir(parents=True, exist_ok=True)
    for name in (s for s in STEPS if s not in leave):
        shutil.copy(cache_root() / package_key(model) / f"{name}.pt2", folder / f"{name}.pt2")


@pytest.fixture(scope="session")
def tok():
    """A small BPE trained on standard-library sources (for training tests)."""
    from model.testing import sample_texts
    from model.tokenizer import train_tokenizer

    return train_tokenizer(sample_texts(), vocab_size=600, show_progress=False)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised model folder (infill layout) for engine tests."""
    from model.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def engine(tiny_dir):
    from model.engine import Engine

    return Engine.load(tiny_dir, "cpu", threads=1)


@pytest.fixture(scope="session")
def spm_dir(tmp_path_factory) -> Path:
    """The same, in the spm layout (causal context stream + canvas block)."""
    from model.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("spm"), layout="spm", shifted=True)


@pytest.fixture(scope="session")
def spm_engine(spm_dir):
    from model.engine import Engine

    return Engine.load(spm_dir, "cpu", threads=1)


@pytest.fixture(scope="session")
def lsp_tiny_model(tmp_path_factory) -> Path:
    """A tiny randomly initialised model folder: real network and tokenizer, gibberish text."""
    from model.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("lsp_models") / "tiny")


@pytest.fixture(scope="session")
def lsp_server_command(lsp_tiny_model) -> list[str]:
    """The server as users start it, on the tiny model, one CPU thread (the machine is shared)."""
    return [sys.executable, "-m", "lsp_server", "--model", str(lsp_tiny_model), "--device", "cpu"]


@pytest.fixture(scope="session")
def lsp_server_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


class FakeEngine:
    """Stands in for model.engine.Engine: answers `text`, one "step" per `step_event` wait.

    With `hold=True` a request blocks until `release` is set, checking its cancel event meanwhile
    (as the sampler does between denoising steps), so tests decide when a request finishes."""

    name = "fake"
    device = "cpu"
    max_len: int | None = None  # tests set the model length Engine.fit fits to

    def __init__(self, text: str = "completion", hold: bool = False):
        self.text, self.hold = text, hold
        self.release = threading.Event()
        self.started = threading.Event()
        self.calls: list[tuple] = []
        self.hints: list[str] = []  # each fill's copy hint
        self.log_prob = 0.0  # what the model's answers say of their probability (the confidence gate reads it)
        self.cancelled = 0
        self.lock = threading.Lock()

    def _wait(self, cancel):
        from model.types import Cancelled

        self.started.set()
        while self.hold and not self.release.wait(0.002):
            if cancel is not None and cancel.is_set():
                self.cancelled += 1
                raise Cancelled()
        if cancel is not None and cancel.is_set():
            self.cancelled += 1
            raise Cancelled()

    def _result(self, texts):
        from model.types import Result, Stats

        return Result(texts, Stats(forwards=4, tokens=8, tokens_per_forward=2.0, log_prob=self.log_prob))

    def infill(self, prefix, suffix, opts, cancel=None, seed=None):
        self.calls.append(("infill", prefix, suffix, opts))
        self._wait(cancel)
        return self._result([self.text])

    def fill(self, pieces, opts, cancel=None, seed=None, context="", hint=""):
        self.hints.append(hint)
        self.calls.append(("fill", pieces, opts))
        self._wait(cancel)
        return self._result([f"{self.text}{i}" for i in range(len(pieces) - 1)])

    def count_tokens(self, text):
        return max(1, len(text) // 4)

    @property
    def limits(self):
        from model.types import Limits

        return Limits(max_len=self.max_len)

    def fit(self, opts, holes=1, fixed_tokens=0):
        from model.types import fit_options

        return fit_options(opts, self.limits, holes, fixed_tokens)


@pytest.fixture
def lsp_fake_engine():
    return FakeEngine


@pytest.fixture
def lsp_service_factory():
    """Build a Service over a loader that returns the given engine (or raises the given exception); grounding is off
    unless a test turns it on (the fake engines' texts are not meant to resolve)."""
    from lsp_server.models import ModelManager, Target
    from lsp_server.service import Service

    made = []

    def make(engine=None, error: Exception | None = None, **settings):
        def loader(target):
            if error is not None:
                raise error
            return engine

        statuses: list[dict] = []
        svc = Service(ModelManager(loader=loader), Target("", "cpu", False), notify_status=statuses.append)
        svc.models.on_change = svc.publish_status
        svc.configure({"grounding": False, **settings}, initial=True)  # fake texts name nothing in scope
        made.append(svc)
        return SimpleNamespace(service=svc, statuses=statuses)

    yield make
    for svc in made:
        svc.close()


from lsp_server.server import plain as lsp_plain  # noqa: E402 - the server's own reader of unknown messages


@pytest.fixture(scope="session")
def lsp_start_client(lsp_server_command, lsp_server_env):
    """async start(init_options=None, command=None, initialize=True, root=REPO, env=None) -> a pytest-lsp client that records
    `hone/status` notifications (client.statuses) and applies nothing but records `workspace/applyEdit`
    (client.edits). Stop it with `await lsp_stop_client(client)`."""
    from lsprotocol import types
    from pytest_lsp import client_capabilities
    from pytest_lsp.client import make_test_lsp_client

    async def start(init_options=None, command=None, initialize=True, capabilities=None, root: Path = REPO, env=None):
        client = make_test_lsp_client()
        client.statuses, client.edits = [], []

        @client.feature("hone/status")
        def on_status(ls, params):
            client.statuses.append(lsp_plain(params))

        @client.feature(types.WORKSPACE_APPLY_EDIT)
        def on_apply_edit(ls, params: types.ApplyWorkspaceEditParams):
            client.edits.append(params)
            return types.ApplyWorkspaceEditResult(applied=True)

        await client.start_io(*(command or lsp_server_command), env={**lsp_server_env, **(env or {})})
        if initialize:
            caps = capabilities or client_capabilities("visual-studio-code")
            client.init_result = await client.initialize_session(types.InitializeParams(
                capabilities=caps, initialization_options=init_options, root_uri=root.as_uri()))
        return client

    return start


async def _stop_client(client) -> None:
    import asyncio

    await asyncio.wait_for(client.shutdown_session(), 60)
    proc = client._server
    if proc is not None and proc.returncode is None:  # never initialized: no exit was sent
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
    await client.stop()


async def _wait_status(client, *states: str, after: int = 0, timeout: float = 60.0) -> dict:
    """The first `hone/status` in one of `states` among those recorded from index `after` on (waiting for it)."""
    import asyncio

    async def wait():
        seen = after
        while True:
            for st in client.statuses[seen:]:
                if st["state"] in states:
                    return st
            seen = len(client.statuses)
            await client.wait_for_notification("hone/status")

    return await asyncio.wait_for(wait(), timeout)


@pytest.fixture(scope="session")
def lsp_stop_client():
    """async stop(client): shutdown, exit, and wait for the server process."""
    return _stop_client


@pytest.fixture(scope="session")
def lsp_wait_status():
    """async wait(client, *states, after=0, timeout=60) -> the first `hone/status` in one of `states`."""
    return _wait_status


class CompilingBackend:
    """A backend whose compile() waits for the test's `release`, then returns (or raises) `outcome`."""

    def __init__(self, outcome):
        import threading

        self.outcome, self.release = outcome, threading.Event()

    def compile(self):
        self.release.wait(30)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome
