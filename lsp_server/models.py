"""Loading the engine off the event loop: at startup, and again when model, device, trust or remote change."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from model.types import Engine

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
    adapted: str = ""  # `model` is this workspace root's adapted model (model.adapted): the default answers if it fails


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
        self.adapted = ""  # the workspace root whose adapted model answers ("" none)
        self.adapted_error = ""  # why that adapted model could not be loaded
        self.future: Future = Future()

    @property
    def steps(self) -> str:
        """How the model's steps run, as the engine says (model.engine.Engine.steps); "" before a model, or for a
        remote one (the service compiles its own)."""
        return str(getattr(self.engine, "steps", "")) if self.state == "ready" else ""

    def request(self, target: Target) -> bool:
        """Load `target` in a background thread unless it is already loaded or loading; True if a load started."""
        with self._lock:
            if target == self.target and self.state in ("loading", "ready"):
                return False
            self._generation += 1
            gen = self._generation
            self.target, self.state, self.error = target, "loading", ""
            self.future = fut = Future()
            fut.set_running_or_notify_cancel()  # waiters may time out, but cannot cancel the load
        threading.Thread(target=self._load, args=(gen, target, fut), name=f"hone-load-{gen}", daemon=True).start()
        self.on_change()
        return True

    def _load(self, gen: int, target: Target, fut: Future) -> None:
        adapted, adapted_error = target.adapted, ""
        try:
            try:
                engine = self._loader(target)
            except Exception as e:
                if not target.adapted:
                    raise
                # a broken adapted model: the default answers (the error is kept for hone/stats)
                log.warning("the adapted model %s failed to load (%s: %s); loading the default", target.model,
                            type(e).__name__, e)
                adapted, adapted_error = "", f"{type(e).__name__}: {e}"
                engine = self._loader(dataclasses.replace(target, model="", adapted=""))
        except Exception as e:  # any failure becomes status "error" with its reason; the server stays up
            log.exception("loading model %r failed", target.model or "default")
            engine, error = None, f"{type(e).__name__}: {e}"
        else:
            error = ""
            log.info("model %s loaded on %s%s", getattr(engine, "name", "?"), getattr(engine, "device", "?"),
                     f" (adapted to {adapted})" if adapted else "")
        with self._lock:
            current = gen == self._generation
            if current:
                self.engine, self.error = engine, error
                self.adapted, self.adapted_error = (adapted if engine is not None else ""), adapted_error
                self.state = "ready" if engine is not None else "error"
        if current and target.compile and hasattr(engine, "compile_in_background"):  # a remote engine has none
            engine.compile_in_background(lambda: self._steps_changed(gen))  # answering with eager steps meanwhile
        if current:
            self.on_change()
        fut.set_result(engine)

    def _steps_changed(self, gen: int) -> None:
        if gen == self._generation:
            self.on_change()

    def label(self) -> str:
        """The model's name for status messages."""
        if self.engine is not None:
            if self.adapted:
                return f"default, adapted to {os.path.basename(self.adapted.rstrip(os.sep)) or self.adapted}"
            return str(getattr(self.engine, "name", ""))
        return default_model_label(self.target) if self.target else ""
