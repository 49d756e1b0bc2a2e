"""The engine's option and result types, torch-free: what the language server imports to talk to an engine."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from .config import ModelConfig

_MODEL = ModelConfig()  # the token budgets' one source
LINE_SLOTS = 8  # a hole starts with this many canvas slots for one line,
BLOCK_SLOTS = 32  # this many for a block,
GROW_SLOTS = 8  # and grows by this many while content fills it (training sizes canvases the same way)

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
        if not 0.0 <= self.draft_accept <= 1.0:
            raise ValueError("draft_accept must be in [0, 1]")
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


@dataclass
class Result:
    texts: list[str]
    stats: Stats = field(default_factory=Stats)


class Engine(Protocol):
    """What the language server needs of an engine (model.engine.Engine, or a stand-in in tests)."""

    name: str
    device: object  # where the model runs (shown in the status)

    def fill(self, pieces: list[str], opts: SampleOptions, cancel: threading.Event | None = None,
             seed: int | None = None) -> Result: ...
    def infill(self, prefix: str, suffix: str, opts: SampleOptions, cancel: threading.Event | None = None,
               seed: int | None = None) -> Result: ...
    def count_tokens(self, text: str) -> int: ...

    @property
    def max_len(self) -> int | None: ...

    def default_options(self) -> SampleOptions: ...
