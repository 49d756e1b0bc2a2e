"""Editor-shaped training examples: prefix, canvas (middle + null slots), suffix, laid out per model layout.

Prefix, middle and suffix are tokenized separately, exactly as the engine does at request time,
so a cursor in the middle of a word looks the same in training and in use.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .. import layout as lay
from ..layout import Budgets
from ..tokenizer import HoneTokenizer
from ..types import GROW_SLOTS, LINE_SLOTS

MIDDLE_KINDS = ("rest_of_line", "lines", "line_and_more", "span", "empty")
MIDDLE_WEIGHTS = (0.40, 0.25, 0.10, 0.15, 0.10)
# masking-rate ranges: uniform over (0.02, 1] (MDLM, today's), or clipped away from the extremes,
# where a row carries almost no signal (t≈0) or almost no context (t≈1)
MASK_SCHEDULES = {"uniform": (0.02, 1.0), "clipped": (0.2, 0.8)}
ContextFn = Callable[[str, int], str]  # (the document without its middle, cursor offset) -> cross-file context text
Spot = tuple[int, int]  # a line that uses a name another file of its package defines: (first cursor offset, name's)
CROSS_SHARE = 0.5  # examples with context and such lines: the share whose middle is the rest of one of them
DRAFT_SLOTS = 8  # a draft row's canvas holds at most this many slots (the engine drafts up to draft_tokens, 8)


def _line_bounds(text: str, pos: int) -> tuple[int, int]:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return start, len(text) if end < 0 else end


def choose_middle(text: str, rng: random.Random, kind: str | None = None, spots: list[Spot] = ()) -> tuple[int, int]:
    """(start, end) character offsets of the middle, shaped like an editor request; with `spots`, the rest of one
    of those lines from a cursor at or before its cross-file name (the repository-level evaluation's cases)."""
    if spots:
        lo, at = rng.choice(spots)
        return rng.randint(lo, at), _line_bounds(text, at)[1]
    n = len(text)
    kind = kind or rng.choices(MIDDLE_KINDS, MIDDLE_WEIGHTS)[0]
    pos = rng.randrange(n + 1)
    ls, le = _line_bounds(text, pos)
    indent_end = ls + len(text[ls:le]) - len(text[ls:le].lstrip(" \t"))
    if kind == "rest_of_line":  # cursor somewhere in a line, finish the line
        c = rng.randint(indent_end, le) if le > indent_end else le
        return c, le
    if kind in ("lines", "line_and_more"):  # whole lines from the indentation on (block completion)
        c = indent_end if kind == "lines" else rng.randint(indent_end, le)
        e = le
        for _ in range(rng.randint(1, 8) - (kind == "lines")):
            nxt = text.find("\n", e + 1)
            if nxt < 0:
                e = n
                break
            e = nxt
        return c, e
    if kind == "span":
        return pos, min(n, pos + int(rng.expovariate(1 / 40)) + 1)
    return pos, pos  # empty middle: the canvas must fill with nulls


@dataclass
class Example:
    """One editor-shaped request, layout-free: token lists as the engine would build them."""

    prefix: list[int]  # up to Budgets.prefix tokens before the cursor
    canvas: list[int]  # canvas targets: the middle's tokens, then null slots (or a cut middle: content only)
    suffix: list[int]  # up to Budgets.suffix tokens after the middle
    doc_end: bool  # the suffix reaches the end of the document (EOS follows it)
    context: list[int] = field(default_factory=list)  # up to Budgets.context tokens of cross-file context

    def segments(self) -> lay.Segments:
        return lay.Segments([self.prefix, self.suffix], [self.canvas], self.doc_end, self.context)


def build_example(tok: HoneTokenizer, text: str, rng: random.Random, b: Budgets, context: ContextFn | None = None,
                  spots: list[Spot] = (), cross_share: float = CROSS_SHARE) -> Example:
    """One example from `text`; `context` (the workspace's retrieval, as the server runs it) gives it cross-file
    context, asked with the middle removed (the snippets must not hold the answer). With `spots`, `cross_share` of
    the examples complete a line that uses a name of another file."""
    cross = bool(spots) and rng.random() < cross_share
    c, e = choose_middle(text, rng, spots=spots if cross else ())
    pre_t, mid_t, suf_t = tok.encode_batch([text[max(0, c - 6 * b.prefix) : c], text[c:e], text[e : e + 6 * b.suffix]])
    ends = e + 6 * b.suffix >= len(text) and len(suf_t) <= b.suffix
    L = len(mid_t)
    if L > b.middle or (L > 2 and rng.random() < 0.08):
        # canvas shorter than the middle: the model must fill every slot with content (the engine then grows it)
        canvas = mid_t[: rng.randint(1, min(L - 1, b.middle))]
    else:
        n = min(b.middle, max(1, L + rng.randint(0, max(4, L))))
        if rng.random() < 0.5:  # the engine's canvases: 8 slots, grown by 8 while content fills them
            n = min(b.middle, max(LINE_SLOTS, -(-L // GROW_SLOTS) * GROW_SLOTS))
        canvas = mid_t + [tok.null_id] * (n - L)
    ctx = []
    if context is not None and b.context > 0:
        ctx = lay.clip_context(tok.encode(context(text[:c] + text[e:], c)), b.context, tok.newline_ids)
    return Example(pre_t[-b.prefix :] if b.prefix else [], canvas, suf_t[: b.suffix], ends, ctx)


def draft_example(tok: HoneTokenizer, ex: Example, rng: random.Random, b: Budgets) -> tuple[Example, int] | None:
    """The drafting regime (issue #24) from an example: the stream runs on into the middle (its first c tokens join
    the prefix, then the next k are teacher tokens: the stream's teacher-forced predictions there are the canvas'
    distillation targets) and a fully masked canvas of those k tokens follows, placed where the teacher tokens are
    and blind to them, as the engine reads a canvas right after the stream's last token. -> (the example, its
    prefix ending with the k teacher tokens and its canvas holding them, k); None for a middle under two tokens."""
    content = [t for t in ex.canvas if t != tok.null_id]
    if len(content) < 2:
        return None
    c = rng.randint(0, len(content) - 2)
    teacher = content[c : c + DRAFT_SLOTS]
    prefix = (ex.prefix + content[:c])[-b.prefix :] if b.prefix else content[:c]
    return Example(prefix + teacher, list(teacher), ex.suffix, ex.doc_end, ex.context), len(teacher)


def layout_ids(tok: HoneTokenizer, ex: Example, layout: str) -> tuple[list[int], int]:
    """-> (ids with the canvas holding its targets, canvas start), laid out by model.layout."""
    ids, slot_pos = lay.sequence(layout, ex.segments(), lay.Specials(tok.bos_id, tok.eos_id))
    return ids, slot_pos[0]


@dataclass
class InfillBatch:
    ids: torch.Tensor  # (B, T) clean ids: the canvas holds its targets, pad_id after the end
    canvas: torch.Tensor  # (B, T) bool: canvas slots
    valid: torch.Tensor  # (B, T) bool: not padding
    start: torch.Tensor  # (B,) first canvas position
    width: int  # canvas slots per row at most (mask draws are made over this width, whatever the layout)
    cross: torch.Tensor  # (B, T) bool: the cross-file context's part of the opening (read, never a target)
    teacher: torch.Tensor | None = None  # (B, T) bool: draft rows' teacher tokens (draft_example), hidden from the canvas
    positions: torch.Tensor | None = None  # (B, T) position ids where draft rows' canvases sit on their teacher tokens

    @property
    def is_context(self) -> torch.Tensor:
        return self.valid & ~self.canvas

    @property
    def draft_rows(self) -> torch.Tensor | None:
        """(B,) bool: the rows in the drafting regime, or None when the batch has none."""
        return None if self.teacher is None else self.teacher.any(1)

    def to(self, device) -> InfillBatch:
        moved = [None if t is None else t.to(device) for t in (self.teacher, self.positions)]
        return InfillBatch(self.ids.to(device), self.canvas.to(device), self.valid.to(device), self.start.to(device),
                           self.width, self.cross.to(device), *moved)


def infill_batch(tok: HoneTokenizer, texts: list[str], rng: random.Random, b: Budgets, batch: int,
                 layout: str = "infill", pairs: bool = False, repos=None,
                 contexts: dict[str, ContextFn] | None = None, spots: dict[str, list[Spot]] | None = None,
                 cross_share: float = CROSS_SHARE, draft_share: float = 0.0) -> InfillBatch:
    """`batch` editor-shaped rows, as wide as the longest; pairs=True draws batch/2 examples, each twice (for
    complementary masks). Cross-file context: `repos` (training.repos.RepoContexts) draws the files, some with
    their retrieval and cross-file lines; or `contexts` and `spots` give those of some of `texts` (the same draws
    as without them). spm layout: `draft_share` of the rows are in the drafting regime (draft_example)."""
    if draft_share and layout != "spm":
        raise ValueError("draft rows need the spm layout (a canvas read right after the stream)")
    examples = []
    with_context = repos is not None and repos.batch_has_context(rng)
    for _ in range(batch // 2 if pairs else batch):
        if repos is not None:
            text, context, where = repos.draw(rng, with_context)
        else:
            text = rng.choice(texts)
            context, where = (contexts or {}).get(text), (spots or {}).get(text, ())
        examples.append(build_example(tok, text, rng, b, context, where, cross_share))
    if pairs:
        examples = [ex for ex in examples for _ in (0, 1)]
    drafts = [0] * len(examples)  # teacher tokens per row (0: not a draft row)
    if draft_share > 0:
        for i, ex in enumerate(examples):
            if rng.random() < draft_share and (d := draft_example(tok, ex, rng, b)) is not None:
                examples[i], drafts[i] = d
    rows = [layout_ids(tok, ex, layout) for ex in examples]
    width = max(len(row) for row, _ in rows)
    ids = torch.full((batch, width), tok.pad_id, dtype=torch.long)
    canvas = torch.zeros((batch, width), dtype=torch.bool)
    valid = torch.zeros((batch, width), dtype=torch.bool)
    start = torch.zeros(batch, dtype=torch.long)
    cross = torch.zeros((batch, width), dtype=torch.bool)
    specials = lay.Specials(tok.bos_id, tok.eos_id)
    for i, (ex, (row, s)) in enumerate(zip(examples, rows)):
        ids[i, : len(row)] = torch.tensor(row)
        valid[i, : len(row)] = True
        canvas[i, s : s + len(ex.canvas)] = True
        start[i] = s
        a, z = lay.context_span(specials, ex.context)
        cross[i, a:z] = True
    if not any(drafts):
        return InfillBatch(ids, canvas, valid, start, b.middle, cross)
    teacher = torch.zeros((batch, width), dtype=torch.bool)
    positions = torch.arange(width).repeat(batch, 1)
    for i, k in enumerate(drafts):
        if k:
            s = int(start[i])
            teacher[i, s - k : s] = True
            positions[i, s : s + k] -= k  # the canvas sits where its teacher tokens are
    return InfillBatch(ids, canvas, valid, start, b.middle, cross, teacher, positions)


def mask_times(batch: int, u: torch.Tensor, schedule: str, complementary: bool) -> torch.Tensor:
    """Masking rates t (batch,): low-discrepancy t_i = (u + i/B) mod 1 over the schedule's range.

    complementary: odd rows take 1 - t of the row before (their masks are its complement)."""
    if schedule not in MASK_SCHEDULES:
        raise ValueError(f"unknown mask schedule {schedule!r}; choose one of {list(MASK_SCHEDULES)}")
    lo, hi = MASK_SCHEDULES[schedule]
    n = (batch + 1) // 2 if complementary else batch
    t = lo + (hi - lo) * ((u + torch.arange(n) / n) % 1.0)
    if complementary:
        t = torch.stack((t, 1 - t), 1).flatten()[:batch]
    return t


def mask_canvas(batch: InfillBatch, mask_id: int, rng: torch.Generator, schedule: str = "uniform",
                complementary: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """MDLM corruption of canvas slots: mask each slot of row i with probability t_i.

    The draws are made per canvas slot (B, width) on the CPU generator, so a given generator state
    masks the same slots whatever the layout and device. -> noisy ids (B, T), masked (B, T) bool."""
    B, T = batch.ids.shape
    t = mask_times(B, torch.rand((), generator=rng), schedule, complementary)
    r = torch.rand((B, batch.width), generator=rng)
    if complementary:  # the odd row of each pair masks exactly what the even row keeps
        r[1::2] = 1 - r[0::2][: B // 2]
    rel = (torch.arange(T) - batch.start.cpu()[:, None]).clamp(0, batch.width - 1)  # (B, T) slot index
    m = (r.gather(1, rel) < t[:, None]).to(batch.ids.device) & batch.canvas
    if (draft := batch.draft_rows) is not None:  # the drafting regime: every slot masked
        m |= batch.canvas & draft[:, None]
    # at least one masked slot per row so every row carries signal
    first = batch.canvas.float().argmax(1)
    none = ~m.any(1)
    m[none, first[none]] = True
    return batch.ids.masked_fill(m, mask_id), m


def ar_batch(tok: HoneTokenizer, texts: list[str], rng: random.Random, seq_len: int, batch: int):
    """Plain next-token windows for the autoregressive phase: ids (B, T) starting with BOS."""
    out = torch.full((batch, seq_len), tok.pad_id, dtype=torch.long)
    for i in range(batch):
        text = rng.choice(texts)
        s = rng.randrange(max(1, len(text) - 4 * seq_len)) if rng.random() < 0.8 else 0
        s = text.rfind("\n", 0, s) + 1
        row = [tok.bos_id] + tok.encode(text[s : s + 5 * seq_len])[: seq_len - 1]
        if len(row) < seq_len:
            row.append(tok.eos_id)
        out[i, : len(row)] = torch.tensor(row[:seq_len])
    return out
