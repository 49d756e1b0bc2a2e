"""How one request is laid out for the network, in one place: segments -> ids, slot positions, overhead, budgets.

Training examples, the sampler's canvases, the backends' sessions and context streams, `Engine.max_len` and the
fitting of requests all read this module, so adding a segment is one change here. The segments of a request:

    context  cross-file (repository) context: snippets of other files, [] when there is none
    pieces   the fixed text between holes: the prefix first, the suffix last (one hole: [prefix, suffix])
    holes    each hole's canvas slots (mask ids while undecided; training: the targets)
    doc_end  the last piece reaches the end of the document: EOS follows it

Layouts (a model's config.json says which one it was trained with):
    infill   [BOS] ([CTX] context [BOS])? piece0 [hole0] piece1 … pieceK [EOS?]: bidirectional context
    spm      [BOS] ([CTX] context [BOS])? suffix [EOS?] [BOS] prefix [canvas]: one causal stream, suffix first, then
             the prefix, and a bidirectional canvas after it (one hole per canvas)
The context opens the sequence so that its keys/values stay cached while the user types (it changes when the file's
imports or the lines before the cursor do, not per keystroke). Without context both layouts are what every model
before it was trained on. [CTX] is the BOS token again: the tokenizer has no spare special token, and a second BOS
right after the first marks the context as plainly as a new token would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import LAYOUTS, ModelConfig

_MODEL = ModelConfig()  # the budgets' one source: a model folder records what it was trained with
MAX_SPECIALS = 3  # special tokens a one-hole request adds without context: two BOS (spm) or BOS + EOS (infill),
# plus the EOS of the spm layout's document end: 2 + 1
CONTEXT_SPECIALS = 2  # [CTX] before the context and the BOS after it


@dataclass
class Segments:
    """One request's token segments, layout-free."""

    pieces: list[list[int]]
    holes: list[list[int]]
    doc_end: bool = False
    context: list[int] = field(default_factory=list)

    def __post_init__(self):
        if len(self.pieces) != len(self.holes) + 1:
            raise ValueError(f"{len(self.pieces)} pieces need {len(self.pieces) - 1} holes, got {len(self.holes)}")


@dataclass(frozen=True)
class Specials:
    """The special ids a layout places (None where a third-party model has none)."""

    bos: int | None
    eos: int | None


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {list(LAYOUTS)}")


def _head(sp: Specials, context: list[int]) -> list[int]:
    """The sequence's opening: [BOS], and the context between [CTX] and a BOS when there is one."""
    bos = [] if sp.bos is None else [sp.bos]
    return bos + bos + context + bos if context else list(bos)


def context_span(sp: Specials, context: list[int]) -> tuple[int, int]:
    """Positions [start, end) of the context's part of the opening ([CTX], the context, the BOS after it): the
    model reads it, nothing there is a target of training; (0, 0) without context."""
    if not context:
        return 0, 0
    first = 0 if sp.bos is None else 1
    return first, first + len(context) + 2 * first


def _end(sp: Specials, doc_end: bool) -> list[int]:
    return [sp.eos] if doc_end and sp.eos is not None else []


def stream(seg: Segments, sp: Specials) -> list[int]:
    """The spm layout's causal context stream: [BOS] ([CTX] context [BOS])? suffix [EOS?] [BOS] prefix."""
    if len(seg.holes) != 1:
        raise ValueError("the spm layout takes one hole per canvas")
    bos = [] if sp.bos is None else [sp.bos]
    return _head(sp, seg.context) + seg.pieces[1] + _end(sp, seg.doc_end) + bos + seg.pieces[0]


def sequence(layout: str, seg: Segments, sp: Specials) -> tuple[list[int], list[int]]:
    """-> (ids with each hole's slots in place, the position of every slot, holes in order)."""
    check_layout(layout)
    if layout == "spm":
        ids = stream(seg, sp)
        return ids + seg.holes[0], list(range(len(ids), len(ids) + len(seg.holes[0])))
    ids = _head(sp, seg.context)
    slot_pos: list[int] = []
    for i, piece in enumerate(seg.pieces):
        ids += piece
        if i < len(seg.holes):
            slot_pos += range(len(ids), len(ids) + len(seg.holes[i]))
            ids += seg.holes[i]
    return ids + _end(sp, seg.doc_end), slot_pos


def overhead(context: bool = False) -> int:
    """Special tokens one request adds at most to its text and slots (either layout, with or without context)."""
    return MAX_SPECIALS + (CONTEXT_SPECIALS if context else 0)


def clip_context(tokens: list[int], budget: int, newline_ids: frozenset[int] = frozenset()) -> list[int]:
    """The context's first `budget` tokens (snippets come most useful first), cut after the last line break that
    fits when there is one (a snippet's half line tells the model little and moves with every new token)."""
    if budget <= 0:
        return []
    if len(tokens) <= budget:
        return list(tokens)
    kept = tokens[:budget]
    for i in range(len(kept) - 1, -1, -1):
        if kept[i] in newline_ids:
            return kept[: i + 1]
    return kept


@dataclass
class Budgets:
    """Token budgets of one request: what training examples are cut to and what the engine keeps of a request."""

    prefix: int = _MODEL.prefix_tokens  # tokens of prefix kept (from its end)
    middle: int = _MODEL.middle_tokens  # canvas slots at most (training)
    suffix: int = _MODEL.suffix_tokens  # tokens of suffix kept (from its start)
    context: int = _MODEL.context_tokens  # tokens of cross-file context kept (from its start); 0: none

    @property
    def seq_len(self) -> int:
        """The longest sequence one training example (or a one-hole request at these budgets) takes."""
        return overhead(self.context > 0) + self.prefix + self.middle + self.suffix + self.context
