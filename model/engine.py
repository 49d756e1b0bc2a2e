"""The engine: load a model folder once, then turn (prefix, suffix) or holes into text."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable

import torch

from . import DEFAULT_MODEL_DIR
from .backends import HFBackend, HoneBackend
from .batching import run_together
from .checkpoint import config_path, load_model, read_json
from .drafts import DRAFTS_FILE, NgramDrafts
from .machine import free_cores
from .sampler import sample
from .types import DEVICES, Fit, Limits, Result, SampleOptions, fit_options

COMPILE_NICE = 10  # niceness of the thread that loads (and checks) compiled steps (0 normal, 19 lowest); a build
# runs in a child process at model.compiled.BUILD_NICE, stopped while a request is served
log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an explicit device that is absent is an error."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose one of {list(DEVICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but MPS is not available")
    return torch.device(name)


def _attempt(fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - returned to the caller, who decides what it means
        return e


def _load_drafts(folder: Path, vocab_size: int) -> NgramDrafts | None:
    """The model's corpus n-gram drafts when it ships a table; a broken table is only a warning (drafts speed
    decoding up, they never change its text)."""
    path = folder / DRAFTS_FILE
    if not path.is_file():
        return None
    try:
        return NgramDrafts.load(path, vocab_size)
    except ValueError as e:
        log.warning("n-gram drafts not used: %s", e)
        return None


class Engine:
    """One loaded model. `lock` serialises inference; callers run it off their event loop."""

    def __init__(self, backend, name: str, device: torch.device):
        self.backend, self.name, self.device = backend, name, device
        self.lock = threading.Lock()
        self.steps = "eager"  # how the model's steps run: eager, compiling, compiled or "eager (why)" (the status shows it)

    @classmethod
    def load(cls, model_dir: str | Path | None = None, device: str = "auto", trust_remote_code: bool = False,
             style: str = "auto", threads: int | None = None) -> Engine:
        folder = Path(model_dir) if model_dir else DEFAULT_MODEL_DIR
        dev = resolve_device(device)
        if dev.type == "cpu":
            torch.set_num_threads(threads or free_cores())
        cfg = read_json(config_path(folder))  # ours or a transformers model's: it says which
        if cfg.get("model_type") == "hone-diffusion":
            model, tokenizer = load_model(folder, dev)
            backend = HoneBackend(model, tokenizer, dev, _load_drafts(folder, tokenizer.vocab_size))
        else:
            backend = HFBackend(folder, dev, trust_remote_code=trust_remote_code, style=style)
        return cls(backend, folder.name, dev)

    def fill(self, pieces: list[str], opts: SampleOptions, cancel: threading.Event | None = None,
             seed: int | None = None, context: str = "", hint: str | list[str] = "") -> Result:
        """Fill the len(pieces) - 1 holes between the pieces in one pass; `context`: cross-file snippets (the
        workspace index's), kept up to opts.context_budget tokens (the model's own budget by default); `hint`: copy
        hints (model.drafts.copy_hints) for rule ar."""
        with self.lock:
            return sample(self.backend, pieces, opts, cancel, seed, context, hint)

    def fill_many(self, calls: list[tuple[list[str], SampleOptions, threading.Event | None, int | None, str, str | list[str]]]
                  ) -> list[Result | Exception]:
        """Several fill() calls at once, (pieces, opts, cancel, seed[, context[, hint]]) each -> each one's Result, or the exception
        it raised. An spm model runs them together: one thread and context stream per call, their canvas steps
        batched into shared forwards (model.batching); other backends run them one after another."""
        with self.lock:
            b = self.backend
            if len(calls) > 1 and b.batches:
                return run_together(b, calls, sample)
            return [_attempt(sample, b, *call) for call in calls]

    def infill(self, prefix: str, suffix: str, opts: SampleOptions, cancel: threading.Event | None = None,
               seed: int | None = None) -> Result:
        return self.fill([prefix, suffix], opts, cancel, seed)

    @property
    def max_len(self) -> int | None:
        """Most tokens one canvas (context + slots) may hold, when the model says."""
        return self.backend.max_len

    @property
    def limits(self) -> Limits:
        """What one request may ask of this engine (the service sends it in GET /hone/info)."""
        return Limits(max_len=self.max_len)

    def fit(self, opts: SampleOptions, holes: int = 1, fixed_tokens: int = 0) -> Fit:
        """`opts` fitted to the model for `holes` holes with `fixed_tokens` tokens of text between them (types.fit_options):
        the language server shrinks requests with it, the service refuses them with its reason."""
        return fit_options(opts, self.limits, holes, fixed_tokens)

    def default_options(self) -> SampleOptions:
        """Sampling defaults with the token budgets this model was trained with (its config.json)."""
        return self.backend.default_options()

    def compile(self) -> str:
        """Compile the model's denoising step where the backend can (see HoneBackend.compile); returns the outcome,
        which `steps` keeps. Runs beside requests (they use the eager step until the compiled one is ready); any
        failure leaves the eager steps."""
        fn = getattr(self.backend, "compile", None)
        if fn is None:
            self.steps = "eager (this backend is not compiled)"
            return self.steps
        self.steps = "compiling"
        try:
            self.steps = fn()
        except Exception as e:  # noqa: BLE001 - whatever broke, the eager steps keep serving; `steps` says so
            self.steps = f"eager (compiling failed: {type(e).__name__})"
        return self.steps

    def compile_in_background(self, done: Callable[[], None] = lambda: None) -> threading.Thread:
        """compile() on a thread of its own at COMPILE_NICE (a first build for the model runs in a child process
        that this thread waits for, model.compiled); `steps` says "compiling" from now on, done() runs after."""
        self.steps = "compiling"

        def run() -> None:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), COMPILE_NICE)
            except (AttributeError, OSError):  # not Linux (a thread's priority is not its own there): normal priority
                pass
            log.info("model steps: %s", self.compile())
            done()

        thread = threading.Thread(target=run, name="hone-compile", daemon=True)
        thread.start()
        return thread

    def count_tokens(self, text: str) -> int:
        return len(self.backend.encode(text))
