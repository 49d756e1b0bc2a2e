"""The engine's option and result types, torch-free: what the language server imports to talk to an engine."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from .config import ModelConfig
from .layout import overhead

_MODEL = ModelConfig()  # the token budgets' one source
LINE_SLOTS = 8  # a hole starts with this many canvas slots for one line,
BLOCK_SLOTS = 32  # this many for a block,
GROW_SLOTS = 8  # and grows by this many while content fills it (training sizes canvases the same way)

MAX_TOKENS = 1024  # most canvas slots one hole may grow to: hone.maxTokens, the service's n_predict and max_tokens
MAX_HOLES = 32  # holes filled in one request: hone.fillHoles, POST /hone/fill
MIN_SLOTS = 16  # a hole keeps this many slots (or max_tokens, when fewer) before Engine.fit shrinks the budgets
MIN_BUDGET = 8  # fewer prefix + suffix tokens than this beside the slots: nothing fits

DEVICES = ("auto", "cpu", "cuda", "mps")  # where a model may run (model.engine.resolve_device)
RULES = ("auto", "threshold", "entropy", "one", "ar")
MODES = ("free", "line", "block")
DRAFTS = ("ngram", "lookup", "canvas", "both", "none")


class Cancelled(Exception):
    """Raised between denoising steps when the request's cancel event is set."""


class SampleOptions(msgspec.Struct, kw_only=True):
    rule: str = "auto"  # threshold | entropy | one (one-per-step lowest entropy: the quality reference) |
    # ar (spm models: left to right through the causal context stream, one token per forward, KV-cached) |
    # auto: ar for line completions of spm models (their causal stream predicts lines best), else threshold
    threshold: float = 0.9  # τ for rule=threshold: commit every slot whose top probability ≥ τ
    gamma: float = 0.5  # γ for rule=entropy: commit in confidence order while summed entropy (nats) ≤ γ
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0  # nucleus mass when temperature > 0
    max_tokens: int = 64  # most canvas slots one hole may grow to
    initial_slots: int = 0  # slots per hole at the start; 0 = LINE_SLOTS for a line, BLOCK_SLOTS otherwise
    grow_by: int = GROW_SLOTS  # slots added when a hole fills with content
    window: int = 4  # commit only among the first `window` undecided slots of each hole (0 = anywhere): in any
    # order the model fills the easy trailing nulls first and cuts multi-line middles short (ES 0.02 -> 0.16)
    empty_threshold: float = 0.5  # a hole may stay empty only when p(null) at its first slot reaches this; below
    # it the first slot takes the best content token (null is often the argmax at ~10% while content spreads thin).
    # Rule ar, beyond line completions: the middle ends at a line break where the canvas puts p(null) this high
    mode: str = "free"  # free | line (stop at the end of the current line) | block (stop when the block dedents)
    block_indent: int = 0  # with mode=block: a completed line indented less than this ends the block
    cached: bool = True  # encode fixed context once and run only the canvas each step
    prefix_budget: int = _MODEL.prefix_tokens  # tokens kept from the end of the first piece; an engine serves
    suffix_budget: int = _MODEL.suffix_tokens  # its model's own (config.json); tokens kept from the start of the last
    context_budget: int = _MODEL.context_tokens  # cross-file context tokens kept (model.layout; 0: none): the engine
    # serves the budget its model was trained with
    draft: str = "ngram"  # rule=ar, greedy: the drafts verified. lookup: from the document (prompt lookup); ngram: from
    # the document, else from the model's corpus n-gram table (model.drafts; lookup when it ships none); canvas: one
    # canvas step; both: ngram, else canvas; none
    draft_tokens: int = 8  # longest draft verified in one forward
    draft_accept: float = 0.1  # rule ar: a token drafted from a 3- or 2-token match in the document is kept when the
    # model gives it at least this share of its best token's probability (not only when it is the best); 0 keeps
    # exactly the greedy text. Held-out (2 x 200 lines, 2 x 40 blocks): 0.1 left EM and ES as good or better
    # (lines EM +0.5 point, ES +0.006 / +0.009) with 5-8 % fewer forwards on lines, up to 20 % on blocks
    copy_accept: float = 1e-4  # rule ar: a copy hint's token (drafts.copy_hint: the rest of the line that followed
    # the cursor's last characters elsewhere) is kept when the model gives it at least this share of its best token's
    # probability, from the first token on; 0 keeps exactly the greedy text
    heal: bool = True  # rule ar: back up the prefix's last word, punctuation run or space after code and make the
    # first tokens spell it again (token healing, sampler.heal_split: "appen" is not the tokens the model saw before
    # "d("). Held-out single lines (2 x 200): EM 6.5 -> 18.5 % and 7.0 -> 21.5 %, ES 0.300 -> 0.462 and 0.336 -> 0.489
    doc_end: bool = True  # the last piece reaches the end of the document: EOS follows it unless truncated
    deadline_s: float | None = None  # wall-clock budget; past it the best draft so far is returned

    def validate(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown commit rule {self.rule!r}; choose one of {list(RULES)}")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {list(MODES)}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")
        if not 0.0 <= self.draft_accept <= 1.0 or not 0.0 <= self.copy_accept <= 1.0:
            raise ValueError("draft_accept and copy_accept must be in [0, 1]")
        if not 0.0 <= self.empty_threshold <= 1.0:
            raise ValueError("empty_threshold must be in [0, 1]")
        if self.gamma < 0 or self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("gamma and temperature must be ≥ 0 and top_p in (0, 1]")
        if self.draft not in DRAFTS:
            raise ValueError(f"unknown draft source {self.draft!r}; choose one of {list(DRAFTS)}")
        if self.draft_tokens < 1:
            raise ValueError("draft_tokens must be ≥ 1")
        if self.max_tokens < 1 or self.grow_by < 1 or self.initial_slots < 0 or self.window < 0:
            raise ValueError("max_tokens and grow_by must be ≥ 1, initial_slots and window ≥ 0")


class Stats(msgspec.Struct):
    forwards: int = 0  # denoiser calls over the canvas
    context_encodes: int = 0  # context (prefix/suffix) passes: once per request, again when a hole grows
    context_tokens: int = 0  # context tokens those passes ran (spm: only what changed since the last request)
    tokens: int = 0  # content tokens in the returned text(s)
    slots: int = 0  # canvas slots resolved (content + null)
    tokens_per_forward: float = 0.0
    wall_ms: float = 0.0
    grew: int = 0  # times a hole's canvas was enlarged
    deadline_hit: bool = False
    log_prob: float = 0.0  # the model's log-probability of what it decided: the sum over the tokens rule ar wrote,
    # or over the slots a diffusion rule committed (a confidence gate reads it)

    def add(self, other: Stats) -> None:
        """Add another call's figures to these, every field (a flag is set when either is): holes filled in turn.
        The ratio and the clock add up too; whoever sums calls sets them afresh for the whole."""
        for f in self.__struct_fields__:
            mine, theirs = getattr(self, f), getattr(other, f)
            setattr(self, f, (mine or theirs) if isinstance(mine, bool) else mine + theirs)


@dataclass
class Result:
    texts: list[str]
    stats: Stats = field(default_factory=Stats)


class Engine(Protocol):
    """What the language server needs of an engine (model.engine.Engine, or a stand-in in tests)."""

    name: str
    device: object  # where the model runs (shown in the status)

    def fill(self, pieces: list[str], opts: SampleOptions, cancel: threading.Event | None = None,
             seed: int | None = None, context: str = "", hint: str = "") -> Result: ...
    def infill(self, prefix: str, suffix: str, opts: SampleOptions, cancel: threading.Event | None = None,
               seed: int | None = None) -> Result: ...
    def count_tokens(self, text: str) -> int: ...
    def fit(self, opts: SampleOptions, holes: int = 1, fixed_tokens: int = 0) -> Fit: ...

    @property
    def max_len(self) -> int | None: ...

    @property
    def limits(self) -> Limits: ...

    def default_options(self) -> SampleOptions: ...


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """What one request may ask of an engine. The service sends its engine's in GET /hone/info, so that a client
    fits requests as the service would."""

    max_len: int | None = None  # the engine's max_len (None: the model does not say); layout.overhead (the most special
    # tokens either layout adds) comes off it, which leaves one position unused: the spm backend's max_len already
    # leaves out the stream's second BOS, and the infill layout adds two special tokens, not three
    max_tokens: int = MAX_TOKENS  # most canvas slots one hole may grow to
    max_holes: int = MAX_HOLES  # most holes in one request


class Fit(msgspec.Struct, frozen=True):
    """What Engine.fit answers: the options that fit the model, and why the asked ones did not ("" when they did).
    The language server goes on with `opts` (and fails with `reason` only when it is None); the service refuses
    any request with a reason."""

    opts: SampleOptions | None  # as asked, or with max_tokens (then the prefix/suffix budgets) shrunk; None: nothing fits
    reason: str = ""


def _slots(opts: SampleOptions, n: int, **over: int) -> SampleOptions:
    return msgspec.structs.replace(opts, max_tokens=n, initial_slots=min(opts.initial_slots, n), **over)


def fit_options(opts: SampleOptions, limits: Limits, holes: int = 1, fixed_tokens: int = 0) -> Fit:
    """Fit a request of `holes` holes, with `fixed_tokens` tokens of text between them, to `limits`: budgets + slots
    + special tokens (+ the context budget and its markers, when opts has one) within max_len. Shrinks max_tokens
    first; below MIN_SLOTS per hole it shrinks the prefix and suffix budgets instead (3 : 1); nothing fits when
    fewer than MIN_BUDGET tokens would be left for them."""
    if holes > limits.max_holes:
        return Fit(None, f"{holes} holes; at most {limits.max_holes} are filled in one request")
    n = min(opts.max_tokens, limits.max_tokens)
    why = f"max_tokens {opts.max_tokens} is over the limit of {limits.max_tokens}" if n < opts.max_tokens else ""
    if limits.max_len is None:
        return Fit(_slots(opts, n), why)
    context = max(opts.context_budget, 0)
    specials = overhead(context > 0)
    room = limits.max_len - specials - context - fixed_tokens  # for the prefix, the suffix and every hole's slots
    per_hole = (room - opts.prefix_budget - opts.suffix_budget) // holes
    if per_hole >= n:
        return Fit(_slots(opts, n), why)
    budgets = f"{opts.prefix_budget} + {opts.suffix_budget}" + (f" + {context} (cross-file context)" if context else "")
    why = (f"{why}{'; ' if why else ''}the request does not fit the model's {limits.max_len}-token context: {holes} × "
           f"{n} slots, budgets {budgets}, {fixed_tokens} tokens between holes, {specials} special tokens; the context "
           f"leaves {max(per_hole, 0)} slots per hole")
    want = min(n, MIN_SLOTS)
    if per_hole >= want:
        return Fit(_slots(opts, per_hole), why)
    budget = room - holes * want
    if budget < MIN_BUDGET:
        return Fit(None, f"{why}; {holes} × {want} slots leave {max(budget, 0)} tokens for the prefix and suffix, "
                         f"fewer than {MIN_BUDGET}")
    prefix = budget * 3 // 4
    return Fit(_slots(opts, want, prefix_budget=prefix, suffix_budget=budget - prefix), why)
