"""The completion service: documents in, completions and edits out, independent of pygls.

One worker thread runs the model (the engine serialises inference anyway) so the event loop stays
free for keystrokes and `$/cancelRequest`. Each document has at most one live request: a newer one
sets the older one's cancel event, which the sampler checks between denoising steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import msgspec

from model import DEFAULT_MODEL_DIR
from model.adapted import find_adapted
from model.grounding import ground_in
from model.types import Cancelled, Engine, Result, Stats

from . import memory
from .acceptance import Acceptance
from .adaptation import IdleAdapter
from .cache import LRU, RECENT_BYTES, RECENT_ENTRIES, TypedThrough, context_key, text_bytes
from .context import sanitize
from .completion import CompletionPlan, SpanPlan, engine_defaults, plan_completion, plan_fill, plan_rewrite, run_completion
from .debounce import Debouncer
from .documents import DocumentStore
from .models import ModelManager, Target
from .repo import Workspace
from .settings import Settings, merge, needs_reload

log = logging.getLogger(__name__)

LOAD_WAIT_S = 30.0  # a request that arrives while the model loads waits this long for it
PREFETCH_REST_S = 0.15  # a cursor placed (hone/cursor) and left this long gets its completion computed ahead
PREFETCH = "prefetch"  # the live-request key of a completion computed ahead
Position = tuple[int, int]


class Counters(msgspec.Struct, rename="camel"):
    """What `hone/stats` reports (the benchmark reads it)."""

    requests: int = 0
    typed_through: int = 0  # served from the suggestion the user is typing through
    cache_hits: int = 0  # served from a recent identical context
    model_runs: int = 0  # completed model calls
    superseded: int = 0  # dropped because a newer request for the same document came
    cancelled: int = 0  # cancelled by the client ($/cancelRequest)
    errors: int = 0
    empty: int = 0  # answered with nothing (disabled, unknown document, no model, nothing useful)
    repo_contexts: int = 0  # completions planned with cross-file context from the workspace index
    grounded: int = 0  # suggestions cut before a name that resolves nowhere, or hidden (a line that cannot tokenize)
    gated: int = 0  # suggestions hidden by the confidence gate (setting minConfidence)
    prefetched: int = 0  # completions computed ahead where the editor placed the cursor (hone/cursor)


@dataclass(frozen=True)
class Completion:
    text: str
    position: Position  # where it goes (the request's position, clamped into the document)
    source: str  # model | typed | cache
    replace_end: Position | None = None  # set when `text` replaces position..replace_end (a selected suggestion + more)
    shown_id: int | None = None  # the acceptance counters' id: the editor's accept command names it


@dataclass
class EditResult:
    uri: str
    version: int | None
    edits: list[tuple[Position, Position, str]] = field(default_factory=list)
    message: str = ""


def _infer(engine: Engine, plan: CompletionPlan, cancel: threading.Event) -> tuple[str, Stats] | None:
    """Runs on the worker thread; None when cancelled (before starting or between steps)."""
    if cancel.is_set():
        return None
    try:
        return run_completion(engine, plan, cancel)
    except Cancelled:
        return None


def _fill(engine: Engine, make_plan: Callable[[Engine, str], SpanPlan | None], text: str,
          cancel: threading.Event) -> tuple[SpanPlan | None, Result | None] | None:
    if cancel.is_set():
        return None
    plan = make_plan(engine, text)
    if plan is None:
        return plan, None
    plan = plan.fit(engine)
    try:
        res = engine.fill(plan.pieces, plan.opts, cancel)
    except Cancelled:
        return None
    return plan, res


def _build_gate():
    """model.compiled's gate for its background build, when that module is loaded (a remote engine never imports
    torch); a request holds it while it runs, and the build child is stopped meanwhile."""
    compiled = sys.modules.get("model.compiled")
    return compiled.GATE.serving() if compiled is not None else contextlib.nullcontext()


class Service:
    def __init__(self, models: ModelManager | None = None, cli_target: Target = Target("", "auto", False), *,
                 notify_status: Callable[[dict], None] = lambda status: None, clock: Callable[[], float] = time.monotonic):
        self.models = models or ModelManager()
        self.cli_target = cli_target
        self.documents = DocumentStore()
        self.workspace = Workspace()  # the workspace index: cross-file context for models trained with it
        self.settings = Settings()
        self.counters = Counters()
        self.typed = TypedThrough()
        self.acceptance = Acceptance()  # what users do with what they are shown, per language (hone/stats)
        self.recent: LRU[bytes, str] = LRU(RECENT_ENTRIES, RECENT_BYTES, text_bytes)
        self.debouncer = Debouncer()
        self.trimmer = memory.Trimmer()  # freed memory back to the system after model runs (lsp_server.memory)
        self._quiet_trim: asyncio.TimerHandle | None = None  # the trim due once no model has run for QUIET_TRIM_S
        self.last_latency_ms: float | None = None
        self.tokens_per_forward: float | None = None
        self.notify_status = notify_status  # called with each new status (from any thread)
        self._clock = clock
        self._live: dict[str, threading.Event] = {}  # per document (and per command kind): the newest request
        self._busy = 0
        self._last_status: dict | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hone-infer")
        self.adapter = IdleAdapter(on_done=self._adapted)  # idle adaptation (setting adapt), paused by every request
        self.adapted_why = ""  # why the workspace's adapted model is not used ("" when it is, or none is wanted)
        self._prefetch: asyncio.Task | None = None  # the completion to compute ahead where the cursor rests

    # ---- settings and model -------------------------------------------------------------------

    def target(self) -> Target:
        """The model to load: the settings' or the command line's; with neither, the shipped default, or the first
        workspace root's adapted model when it has a current one (setting useAdapted)."""
        s, cli = self.settings, self.cli_target
        model, remote, adapted = s.model or cli.model, s.remote or cli.remote, ""
        self.adapted_why = ""
        if not model and not remote and s.use_adapted and (root := self._root()):
            folder, self.adapted_why = find_adapted(root, DEFAULT_MODEL_DIR)
            if folder is not None:
                model, adapted = str(folder), root
        return Target(model, s.device if s.device != "auto" else cli.device,
                      s.trust_remote_code or cli.trust_remote_code, remote=remote,
                      remote_token=s.remote_token or cli.remote_token,
                      remote_fallback=s.remote_fallback or cli.remote_fallback, compile=cli.compile, adapted=adapted)

    def _root(self) -> str:
        roots = self.workspace.index.roots
        return roots[0] if roots else ""

    def configure(self, raw: Any, *, initial: bool) -> list[str]:
        """Merge settings (initializationOptions when `initial`, else workspace settings); reload the
        model when model, device or trust changed. Returns the rejected values, one line each."""
        old = self.settings
        self.settings, problems = merge(old, raw, allow_trust=initial)
        if initial or needs_reload(old, self.settings):
            self.models.request(self.target())
        self._configure_adapter()
        return problems

    def set_folders(self, added: list[str], removed: list[str] = ()) -> None:
        """Workspace folders changed: the index rescans; the adapted model and idle adaptation follow the first."""
        self.workspace.set_folders(added, removed)
        if self.models.target is not None:
            self.models.request(self.target())
        self._configure_adapter()

    def _configure_adapter(self) -> None:
        s, cli = self.settings, self.cli_target
        local_default = not (s.model or cli.model or s.remote or cli.remote)
        self.adapter.configure(s.adapt, self._root(), DEFAULT_MODEL_DIR if local_default else None)

    def _adapted(self, root: str, kept: bool) -> None:
        """An idle adaptation ended: a kept model answers from its next request on (loaded in the background)."""
        if kept and root == self._root():
            self.models.request(self.target())
        self.publish_status()

    def adaptation_stats(self) -> dict:
        """hone/stats' adaptation: which model answers for the workspace and the idle adaptation's state."""
        return {"inUse": self.models.adapted or None, "notUsed": self.adapted_why or None,
                "loadError": self.models.adapted_error or None, "idle": self.adapter.stats()}

    def status(self) -> dict:
        m = self.models
        state = {"idle": "loading", "loading": "loading", "error": "error"}.get(m.state, "ready")
        if state == "ready" and self._busy:
            state = "busy"
        message = m.error if state == "error" else ("loading the model…" if state == "loading" else "")
        health = getattr(m.engine, "health", None)  # a remote engine: is its service answering?
        if state in ("ready", "busy") and health is not None:
            usable, message = health()
            if not usable:
                state = "error"
        if state in ("ready", "busy") and not self.settings.enabled:
            message = "completions are off (hone.enabled)"
        device = str(m.engine.device) if m.engine is not None else (m.target.device if m.target else "")
        return {"state": state, "model": m.label(), "device": device, "lastLatencyMs": self.last_latency_ms,
                "tokensPerForward": self.tokens_per_forward, "message": message, "steps": m.steps}

    def publish_status(self, force: bool = False) -> None:
        st = self.status()
        if force or st != self._last_status:
            self._last_status = st
            self.notify_status(st)

    async def _engine(self) -> Engine | None:
        m = self.models
        if m.state == "loading":
            try:
                await asyncio.wait_for(asyncio.wrap_future(m.future), LOAD_WAIT_S)
            except TimeoutError:
                return None
        return m.engine if m.state == "ready" else None

    def memory_stats(self) -> dict:
        """hone/stats' memory: the process' RSS and each cache's entries and bytes against its bounds."""
        caches = {"recentContexts": self.recent.stats(), "typedThrough": self.typed.stats(),
                  "debounce": self.debouncer.stats()}
        context = getattr(getattr(self.models.engine, "backend", None), "context", None)
        if context is not None and hasattr(context, "stats"):
            caches["contextStreams"] = context.stats()
        rss = memory.rss_mb()
        return {"rssMb": None if rss is None else round(rss, 1), "caches": caches, "trims": self.trimmer.trims,
                "documents": {"open": len(self.documents.docs),  # the client's to bound (open files)
                              "chars": sum(len(d.text) for d in self.documents.docs.values())}}

    # ---- request bookkeeping ------------------------------------------------------------------

    def _start(self, key: str) -> threading.Event:
        """A cancel event for a new request under `key`; the previous request under it is cancelled. An idle
        adaptation stops until the editor is quiet again."""
        self.adapter.request_started()
        old = self._live.get(key)
        if old is not None:
            old.set()
        self._live[key] = ev = threading.Event()
        return ev

    def _end(self, key: str, ev: threading.Event) -> None:
        self.adapter.request_ended()
        if self._live.get(key) is ev:
            del self._live[key]

    def cancel_document(self, uri: str) -> None:
        for key in (uri, "cmd:" + uri):
            ev = self._live.pop(key, None)
            if ev is not None:
                ev.set()

    async def _run(self, fn: Callable, *args: Any, cancel: threading.Event,
                   record: Callable[[Any], None] = lambda out: None) -> Any:
        """fn(*args) on the worker with status busy meanwhile; `record(result)` runs before the status
        goes back to ready. A cancelled awaiting task stops the model too."""
        self._busy += 1
        self.publish_status()
        try:
            with _build_gate():  # a background compile build is stopped while this runs
                out = await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
            record(out)
            return out
        except asyncio.CancelledError:
            cancel.set()
            self.counters.cancelled += 1
            raise
        finally:
            self._busy -= 1
            self.publish_status()
            self._trim_after_run()

    def _recorder(self, t0: float, stats_of: Callable[[Any], Any]) -> Callable[[Any], None]:
        """Latency since t0 and tokens per forward of a finished run, for the status."""

        def record(out: Any) -> None:
            if out is None or out[1] is None:
                return
            stats = stats_of(out)
            self.last_latency_ms = round((self._clock() - t0) * 1000, 1)
            self.tokens_per_forward = round(float(stats.tokens_per_forward), 2)

        return record

    # ---- completions ----------------------------------------------------------------------------

    async def complete(self, uri: str, line: int, character: int, *, explicit: bool = False,
                       selected: tuple[Position, Position, str] | None = None) -> Completion | None:
        """The completion at a position, or None. Typed-through and repeated contexts skip the model.

        selected: the suggestion the client's completion list has selected (its range and text): the
        answer then continues that suggestion and replaces its range, as LSP's selectedCompletionInfo asks."""
        doc = self.documents.get(uri)
        if selected is None or doc is None:
            return await self._complete(uri, line, character, explicit)
        start, end, chosen = selected
        a, b = sorted((doc.offset_at(*start), doc.offset_at(*end)))
        text = doc.text[:a] + chosen + doc.text[b:]  # the document as it will be once the suggestion is accepted
        c = await self._complete(uri, 0, 0, explicit, virtual=(text, a + len(chosen)))
        if c is None and not chosen:
            return None
        return Completion(chosen + (c.text if c else ""), doc.position_at(a), c.source if c else "selected",
                          replace_end=doc.position_at(b))

    def _plan(self, engine: Engine, uri: str, text: str, offset: int) -> tuple[CompletionPlan, bytes]:
        """The completion's plan at `offset` (its context, with the workspace's) and its result-cache key."""
        base = engine_defaults(engine)
        repo = self.workspace.context_for(uri, text, offset) if base.context_budget > 0 else ""
        plan = plan_completion(text, offset, self.settings, engine, base, repo, self.workspace.elsewhere(uri))
        return plan, context_key(plan.context, plan.repo, self.settings, self.models.target)

    def cursor(self, uri: str, line: int, character: int) -> None:
        """The editor placed the cursor (hone/cursor: a click, a jump, another editor; not typing). Once it has
        rested PREFETCH_REST_S with no request running, the local model computes the completion there: its stream
        for the place is encoded and its answer cached, so the first request there, or after the next keystroke,
        extends a ready stream instead of encoding ~260 tokens afresh. Any request cancels it. Call on the loop."""
        if self._prefetch is None:
            log.info("the editor reports where the cursor is placed: completions there are computed ahead")
        else:
            self._prefetch.cancel()
        self._prefetch = asyncio.get_running_loop().create_task(self._prefetch_at(uri, line, character))

    def _stop_prefetch(self) -> None:
        if (ev := self._live.get(PREFETCH)) is not None:
            ev.set()  # running: the sampler stops at its next step (superseded)
        elif self._prefetch is not None:
            self._prefetch.cancel()  # still waiting for the cursor to rest

    async def _prefetch_at(self, uri: str, line: int, character: int) -> None:
        await asyncio.sleep(PREFETCH_REST_S)
        doc, engine, target = self.documents.get(uri), self.models.engine, self.models.target
        if (doc is None or engine is None or self.models.state != "ready" or not self.settings.enabled or self._live
                or (target is not None and target.remote)):  # (a team's service is not asked on speculation)
            return
        text, offset = doc.text, doc.offset_at(line, character)
        plan, key = self._plan(engine, uri, text, offset)
        if self.recent.get(key) is not None:
            return
        cancel = self._start(PREFETCH)
        try:
            completion = await self._model_completion(engine, plan, key, cancel, 0.0, f"{uri}:{line}:{character} (ahead)")
        finally:
            self._end(PREFETCH, cancel)
        if completion is not None:
            self.counters.prefetched += 1
            self.typed.remember(uri, text, offset, self._grounded(text, offset, plan, completion))

    async def _complete(self, uri: str, line: int, character: int, explicit: bool,
                        virtual: tuple[str, int] | None = None) -> Completion | None:
        c = self.counters
        c.requests += 1
        self._stop_prefetch()
        doc = self.documents.get(uri)
        if not self.settings.enabled or doc is None:
            c.empty += 1
            return None
        text, offset = virtual or (doc.text, doc.offset_at(line, character))
        pos = doc.position_at(min(offset, len(doc.text)))
        delay = 0.0 if explicit else self.debouncer.delay(uri, self.settings.debounce_ms / 1000, self._clock())
        cancel = self._start(uri)
        try:
            rest = None if virtual else self.typed.lookup(uri, text, offset)
            if rest is not None:
                c.typed_through += 1
                shown = self.acceptance.typed(uri, rest)  # None: not showing yet (it was computed ahead, unseen)
                return Completion(rest, pos, "typed", shown_id=self.acceptance.shown(uri, rest) if shown is None else shown)
            engine = await self._engine()
            if engine is None:
                c.empty += 1
                return None
            plan, key = self._plan(engine, uri, text, offset)
            c.repo_contexts += bool(plan.repo)
            if cancel.is_set():
                c.superseded += 1
                return None
            if (hit := self.recent.get(key)) is not None:
                c.cache_hits += 1
                hit = self._grounded(text, offset, plan, hit)
                if not virtual:
                    self.typed.remember(uri, text, offset, hit)
                return Completion(hit, pos, "cache", shown_id=self._shown(uri, hit, virtual)) if hit else None
            completion = await self._model_completion(engine, plan, key, cancel, delay, f"{uri}:{line}:{character}")
            if completion is None:
                return None
            completion = self._grounded(text, offset, plan, completion)
            if not virtual:
                self.typed.remember(uri, text, offset, completion)
            if not completion:
                c.empty += 1
                return None
            return Completion(completion, pos, "model", shown_id=self._shown(uri, completion, virtual))
        finally:
            self._end(uri, cancel)

    def _shown(self, uri: str, suggestion: str, virtual) -> int | None:
        """The acceptance counters' id of a suggestion about to be shown (none for a completion list's selection)."""
        return None if virtual else self.acceptance.shown(uri, suggestion)

    def _grounded(self, text: str, offset: int, plan: CompletionPlan, suggestion: str) -> str:
        """The suggestion as grounding lets it be shown (the setting `grounding`; model.grounding)."""
        if not self.settings.grounding:
            return suggestion
        shown, why = ground_in(text, plan.context.line_prefix, suggestion, self.workspace.knows(), offset)
        if why:
            self.counters.grounded += 1
            log.debug("grounding cut %r to %r (%s)", suggestion, shown, why)
        return shown

    async def _model_completion(self, engine: Engine, plan: CompletionPlan, key: bytes, cancel: threading.Event, delay: float,
                                where: str) -> str | None:
        """After the debounce, the model's (cleaned) completion, remembered for its context; None when a newer
        request superseded this one or the model failed."""
        c = self.counters
        if delay:
            await asyncio.sleep(delay)
        if cancel.is_set():
            c.superseded += 1
            return None
        t0 = self._clock()
        try:
            out = await self._run(_infer, engine, plan, cancel, cancel=cancel, record=self._recorder(t0, lambda out: out[1]))
        except ConnectionError as e:  # a remote engine's service is unreachable: the status says so, no traceback
            log.warning("completion failed at %s: %s", where, e)
            c.errors += 1
            return None
        except Exception:  # a model failure answers nothing for this request; the server stays up
            log.exception("completion failed at %s", where)
            c.errors += 1
            return None
        if out is None:
            c.superseded += 1
            return None
        c.model_runs += 1
        self.debouncer.ran(self._clock() - t0)
        st = out[1]
        log.debug("model run at %s: %.1f ms, %d forwards, %d context tokens encoded, %d tokens",
                  where, (self._clock() - t0) * 1000, st.forwards, st.context_tokens, st.tokens)
        text = out[0]
        if text and math.exp(st.log_prob) < self.settings.min_confidence:  # the confidence gate (off at 0)
            c.gated += 1
            text = ""
        self.recent.put(key, text)  # the key holds the settings: a changed gate asks the model again
        if cancel.is_set():  # finished, but a newer request for this document came meanwhile
            c.superseded += 1
            return None
        return text

    def _trim_after_run(self) -> None:
        """Freed memory back to the system after model runs: once no model has run for QUIET_TRIM_S (off every
        request's path), and while runs follow each other without such a spell, at most every TRIM_EVERY_S (a run
        after a quiet spell finds the memory trimmed already)."""
        if self._quiet_trim is not None:  # busy since the last quiet spell
            self._quiet_trim.cancel()
            self.trimmer.maybe(self._clock())
        self._quiet_trim = asyncio.get_running_loop().call_later(memory.QUIET_TRIM_S, self._trim_now)

    def _trim_now(self) -> None:
        self._quiet_trim = None
        if not self._busy:  # a run in progress re-arms it when it ends
            self.trimmer.now(self._clock())

    # ---- commands ---------------------------------------------------------------------------------

    async def _edit(self, uri: str, make_plan: Callable[[Engine, str], SpanPlan | None], none_message: str) -> EditResult:
        """Run make_plan(engine, text) and the engine on the document as it is now; edits only if it is
        still unchanged when the model is done."""
        self._stop_prefetch()
        doc = self.documents.get(uri)
        if doc is None:
            return EditResult(uri, None, message=f"unknown document {uri} (open it first)")
        text, version = doc.text, doc.version
        engine = await self._engine()
        if engine is None:
            return EditResult(uri, version, message=f"no model: {self.models.error or 'not loaded'}")
        key = "cmd:" + uri
        cancel = self._start(key)
        try:
            out = await self._run(_fill, engine, make_plan, text, cancel, cancel=cancel,
                                  record=self._recorder(self._clock(), lambda out: out[1].stats))
        except ValueError as e:  # holes too many or too far apart
            return EditResult(uri, version, message=str(e))
        except Exception as e:  # a model failure fails this command only
            log.exception("command on %s failed", uri)
            self.counters.errors += 1
            return EditResult(uri, version, message=f"{type(e).__name__}: {e}")
        finally:
            self._end(key, cancel)
        if out is None:
            return EditResult(uri, version, message="cancelled")
        plan, res = out
        if plan is None:
            return EditResult(uri, version, message=none_message)
        if doc.text is not text or self.documents.get(uri) is not doc:
            return EditResult(uri, version, message="the document changed meanwhile; nothing applied")
        texts = plan.finish(res.texts)
        edits = [(doc.position_at(a), doc.position_at(b), t) for (a, b), t in zip(plan.spans, texts)]
        return EditResult(uri, version, edits)

    async def fill_holes(self, uri: str) -> EditResult:
        settings = self.settings
        return await self._edit(uri, lambda engine, text: plan_fill(text, settings, engine_defaults(engine)),
                                "no ??? holes in the document")

    async def rewrite(self, uri: str, start: Position, end: Position) -> EditResult:
        doc = self.documents.get(uri)
        if doc is None:
            return EditResult(uri, None, message=f"unknown document {uri} (open it first)")
        settings = self.settings
        a, b = sorted((doc.offset_at(*start), doc.offset_at(*end)))

        def make(engine: Engine, text: str) -> SpanPlan:
            n = engine.count_tokens(sanitize(text[a:b])) if b > a else 0
            return plan_rewrite(text, a, b, n, settings, engine_defaults(engine))

        return await self._edit(uri, make, "")

    def close(self) -> None:
        if self._quiet_trim is not None:
            self._quiet_trim.cancel()
        self.adapter.close()
        self.workspace.close()
        if self._prefetch is not None:
            self._prefetch.cancel()
        for ev in self._live.values():
            ev.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
