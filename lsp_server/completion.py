"""Engine requests from documents: a completion at a cursor, a rewrite of a range, holes to fill.

Pure functions over text and offsets, shared by the language server and `hone complete`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import msgspec

from model.types import Engine, SampleOptions, Stats

from .context import Context, build_context, cut_after, cut_before, detect_eol, sanitize, window_chars
from .documents import Document
from .postprocess import clean, clean_span
from .settings import Settings

HOLE = "???"
MAX_BETWEEN_HOLES_CHARS = 16_384  # text between the first and last hole goes to the model whole
COMMAND_DEADLINE_S = 30.0  # rewrites and holes are asked for explicitly: a longer budget than typing gets


def engine_defaults(engine: Engine) -> SampleOptions:
    """The options an engine serves with when no setting says otherwise: the token budgets its model was trained
    with (the model folder's config.json). Engines that do not say get SampleOptions' own defaults."""
    f = getattr(engine, "default_options", None)
    return f() if f is not None else SampleOptions()


def sample_options(settings: Settings, base: SampleOptions | None = None, *, doc_end: bool = True, **over: Any) -> SampleOptions:
    """SampleOptions from the settings over `base` (the engine's defaults: budgets and other knobs)."""
    kw: dict[str, Any] = dict(rule=settings.commit_rule, threshold=settings.threshold, max_tokens=settings.max_tokens,
                              deadline_s=settings.deadline_ms / 1000 if settings.deadline_ms else None, doc_end=doc_end)
    return msgspec.structs.replace(base or SampleOptions(), **(kw | over))


def fitted(engine: Engine | None, opts: SampleOptions, holes: int = 1, fixed_tokens: int = 0) -> SampleOptions:
    """`opts` shrunk to what the engine's model holds (Engine.fit); ValueError with the reason when nothing fits."""
    if engine is None:
        return opts
    fit = engine.fit(opts, holes, fixed_tokens)
    if fit.opts is None:
        raise ValueError(fit.reason)
    return fit.opts


@dataclass(frozen=True)
class CompletionPlan:
    context: Context
    opts: SampleOptions
    repo: str = ""  # cross-file context from the workspace index (the service asks for it only when the model reads it)

    def finish(self, raw: str) -> str:
        return clean(raw, self.context)


def plan_completion(text: str, offset: int, settings: Settings, engine: Engine | None = None,
                    base: SampleOptions | None = None, repo: str = "", elsewhere: Iterable[str] = ()) -> CompletionPlan:
    """The request for a completion at `offset`, fitted to `engine` (none: as the settings ask); `elsewhere`: the
    workspace's other files, where copy hints are also looked for."""
    base = base or SampleOptions()
    ctx = build_context(text, offset, settings.mode, base.prefix_budget, base.suffix_budget, elsewhere)
    opts = sample_options(settings, base, doc_end=ctx.doc_end, mode=ctx.mode, block_indent=ctx.block_indent)
    return CompletionPlan(ctx, fitted(engine, opts), repo)


def run_completion(engine: Engine, plan: CompletionPlan, cancel: threading.Event | None = None) -> tuple[str, Stats]:
    """(cleaned text, engine stats); raises the engine's Cancelled."""
    ctx = plan.context
    if plan.repo or ctx.hints:
        res = engine.fill([ctx.prefix, ctx.suffix], plan.opts, cancel, context=plan.repo, hint=list(ctx.hints))
    else:
        res = engine.infill(ctx.prefix, ctx.suffix, plan.opts, cancel)
    return plan.finish(res.texts[0]), res.stats


def complete_file(engine: Engine, text: str, line: int, col: int, settings: Settings | None = None) -> str:
    """The completion at 0-based `line` and `col` (UTF-16 code units, as LSP counts) of `text`."""
    doc = Document("file", text)
    plan = plan_completion(text, doc.offset_at(line, col), settings or Settings(), engine, engine_defaults(engine))
    return run_completion(engine, plan)[0]


@dataclass(frozen=True)
class SpanPlan:
    """Pieces around holes, and where each hole's text goes in the document (code point offsets)."""

    pieces: list[str]
    spans: list[tuple[int, int]]
    opts: SampleOptions
    eol: str

    def finish(self, texts: list[str]) -> list[str]:
        return [clean_span(t, self.eol) for t in texts]

    def fit(self, engine: Engine) -> SpanPlan:
        """The plan with its canvas fitted to the engine's model (Engine.fit)."""
        fixed = sum(engine.count_tokens(p) for p in self.pieces[1:-1])
        return replace(self, opts=fitted(engine, self.opts, len(self.spans), fixed))


def _command_deadline(settings: Settings) -> dict:
    return {"deadline_s": COMMAND_DEADLINE_S if settings.deadline_ms else None}


def find_holes(text: str) -> list[int]:
    out, i = [], text.find(HOLE)
    while i != -1:
        out.append(i)
        i = text.find(HOLE, i + len(HOLE))
    return out


def plan_fill(text: str, settings: Settings, base: SampleOptions | None = None) -> SpanPlan | None:
    """Every `???` becomes a hole, all filled in one pass; None when there is none. ValueError when the
    holes are too far apart for one canvas (too many for one request: SpanPlan.fit)."""
    holes = find_holes(text)
    if not holes:
        return None
    if holes[-1] - holes[0] > MAX_BETWEEN_HOLES_CHARS:
        raise ValueError(f"the holes span {holes[-1] - holes[0]} characters; keep them within "
                         f"{MAX_BETWEEN_HOLES_CHARS} of each other")
    base = base or SampleOptions()
    first, _ = cut_before(text, holes[0], window_chars(base.prefix_budget))
    last, doc_end = cut_after(text, holes[-1] + len(HOLE), window_chars(base.suffix_budget))
    middles = [text[a + len(HOLE) : b] for a, b in zip(holes, holes[1:])]
    pieces = [sanitize(p) for p in [first, *middles, last]]
    opts = sample_options(settings, base, doc_end=doc_end, mode="free", **_command_deadline(settings))
    return SpanPlan(pieces, [(h, h + len(HOLE)) for h in holes], opts, detect_eol(first + last))


def plan_rewrite(text: str, start: int, end: int, n_tokens: int, settings: Settings,
                 base: SampleOptions | None = None) -> SpanPlan:
    """Replace text[start:end] by a hole of about its token length (n_tokens)."""
    start, end = sorted((max(0, min(start, len(text))), max(0, min(end, len(text)))))
    base = base or SampleOptions()
    before, _ = cut_before(text, start, window_chars(base.prefix_budget))
    after, doc_end = cut_after(text, end, window_chars(base.suffix_budget))
    size = dict(initial_slots=n_tokens, max_tokens=n_tokens + max(8, n_tokens // 2)) if n_tokens > 0 else {}
    opts = sample_options(settings, base, doc_end=doc_end, mode="free", **size, **_command_deadline(settings))
    return SpanPlan([sanitize(before), sanitize(after)], [(start, end)], opts, detect_eol(before + text[start:end] + after))
