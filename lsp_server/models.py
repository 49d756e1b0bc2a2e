"""Loading the engine off the event loop: at startup, and again when model, device, trust or remote change."""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from model.types import Engine

COMPILE_NICE = 10  # niceness of the thread that builds compiled steps (0 normal, 19 lowest)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    model: str  # "" = the shipped default
    device: str
    trust_remote_code: bool
    remote: str = ""  # URL of a `hone serve` service; "" = run the model here
    remote_token: str = field(default="", repr=False)  # its bearer token (never shown)
    remote_fallback: bool = False  # load the local model while the service is unreachable
    compile: bool = False  # compile the local model's hot steps in the background once it is loaded (hone-lsp: on)


def load_local(target: Target, threads: int | None = None) -> Engine:
    """Import the engine lazily (torch takes a while) and load the model folder."""
    from model.engine import Engine

    return Engine.load(target.model or None, target.device, trust_remote_code=target.trust_remote_code,
                       threads=threads)


def load_engine(target: Target, threads: int | None = None) -> Engine:
    """The service's client when `target.remote` is set (no torch import unless it falls back), else the local engine."""
    if not target.remote:
        return load_local(target, threads)
    from .remote import RemoteEngine

    fallback = (lambda: load_local(target, threads)) if target.remote_fallback else None
    return RemoteEngine(target.remote, target.remote_token or None, fallback)


def default_model_label(target: Target) -> str:
    if target.remote:
        return target.remote.split("@")[-1]  # no user:password
    if target.model:
        return target.model
    try:
        from model import DEFAULT_MODEL_DIR
    except ImportError:
        return "default"
    return str(DEFAULT_MODEL_DIR)


class ModelManager:
    """Holds the current engine. A newer load request wins: an older load's result is discarded."""

    def __init__(self, on_change: Callable[[], None] = lambda: None,
                 loader: Callable[[Target], Engine] = load_engine) -> None:
        self.on_change = on_change  # called (from the loading thread too) when state changes
        self._loader = loader
        self._lock = threading.Lock()
        self._generation = 0
        self.target: Target | None = None
        self.state = "idle"  # idle | loading | ready | error
        self.engine: Engine | None = None
        self.error = ""
        self.steps = ""  # how the model's steps run: "eager", "compiling", "compiled" or "eager (why)"; "" before a model
        self.future: Future = Future()

    def request(self, target: Target) -> bool:
        """Load `target` in a background thread unless it is already loaded or loading; True if a load started."""
        with self._lock:
            if target == self.target and self.state in ("loading", "ready"):
                return False
            self._generation += 1
            gen = self._generation
            self.target, self.state, self.error, self.steps = target, "loading", "", ""
            self.future = fut = Future()
            fut.set_running_or_notify_cancel()  # waiters may time out, but cannot cancel the load
        threading.Thread(target=self._load, args=(gen, target, fut), name=f"hone-load-{gen}", daemon=True).start()
        self.on_change()
        return True

    def _load(self, gen: int, target: Target, fut: Future) -> None:
        try:
            engine = self._loader(target)
        except Exception as e:  # any failure becomes status "error" with its reason; the server stays up
            log.exception("loading model %r failed", target.model or "default")
            engine, error = None, f"{type(e).__name__}: {e}"
        else:
            error = ""
            log.info("model %s loaded on %s", getattr(engine, "name", "?"), getattr(engine, "device", "?"))
        compile_steps = getattr(engine, "compile", None)  # the local engine; a remote one compiles nothing here
        with self._lock:
            current = gen == self._generation
            if current:
                self.engine, self.error = engine, error
                self.state = "ready" if engine is not None else "error"
                if compile_steps is not None:
                    self.steps = "compiling" if target.compile else "eager"
        if current:
            self.on_change()
        fut.set_result(engine)
        if current and compile_steps is not None and target.compile:
            self._compile(gen, compile_steps)

    def _compile(self, gen: int, compile_steps: Callable[[], str]) -> None:
        """Compile the engine's steps while it already answers (eagerly); the status says how its steps run."""
        try:  # a build competes with the editor and with completions: this thread (and the compilers it starts) yield
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), COMPILE_NICE)
        except (AttributeError, OSError):  # not Linux (a thread's priority is not its own there): normal priority
            pass
        try:
            outcome = compile_steps()
        except Exception as e:  # the engine keeps its eager steps
            outcome = f"eager (compiling failed: {type(e).__name__})"
        log.info("model steps: %s", outcome)
        with self._lock:
            if gen != self._generation:
                return
            self.steps = outcome
        self.on_change()

    def label(self) -> str:
        """The model's name for status messages."""
        if self.engine is not None:
            return str(getattr(self.engine, "name", ""))
        return default_model_label(self.target) if self.target else ""
