"""Editor-shaped training examples: [BOS] prefix [canvas: middle + null slots] suffix [EOS?].

Prefix, middle and suffix are tokenized separately, exactly as the engine does at request time,
so a cursor in the middle of a word looks the same in training and in use.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .tokenizer import HoneTokenizer

MIDDLE_KINDS = ("rest_of_line", "lines", "line_and_more", "span", "empty")
MIDDLE_WEIGHTS = (0.40, 0.25, 0.10, 0.15, 0.10)
ENGINE_SLOTS = 8  # the sampler starts a hole at this many slots and grows it by as many


@dataclass
class Budgets:
    prefix: int = 192  # tokens of prefix kept (from its end)
    middle: int = 64  # canvas slots at most
    suffix: int = 64  # tokens of suffix kept (from its start)

    @property
    def seq_len(self) -> int:
        return 2 + self.prefix + self.middle + self.suffix  # + BOS + EOS


def _line_bounds(text: str, pos: int) -> tuple[int, int]:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return start, len(text) if end < 0 else end


def choose_middle(text: str, rng: random.Random, kind: str | None = None) -> tuple[int, int]:
    """(start, end) character offsets of the middle, shaped like an editor request."""
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


def build_example(tok: HoneTokenizer, text: str, rng: random.Random, b: Budgets) -> tuple[list[int], int, int, list[int]]:
    """One infill example -> (ids of length seq_len, canvas start, canvas length, canvas targets)."""
    c, e = choose_middle(text, rng)
    pre_t, mid_t, suf_t = tok.encode_batch([text[max(0, c - 6 * b.prefix) : c], text[c:e], text[e : e + 6 * b.suffix]])
    pre_t = pre_t[-b.prefix :]
    ends = e + 6 * b.suffix >= len(text) and len(suf_t) <= b.suffix
    suf_t = suf_t[: b.suffix]
    L = len(mid_t)
    if L > b.middle or (L > 2 and rng.random() < 0.08):
        # canvas shorter than the middle: the model must fill every slot with content (the engine then grows it)
        n = rng.randint(1, min(L - 1, b.middle))
        targets = mid_t[:n]
    else:
        n = min(b.middle, max(1, L + rng.randint(0, max(4, L))))
        if rng.random() < 0.5:  # the engine's canvases: 8 slots, grown by 8 while content fills them
            n = min(b.middle, max(ENGINE_SLOTS, -(-L // ENGINE_SLOTS) * ENGINE_SLOTS))
        targets = mid_t + [tok.null_id] * (n - L)
    ids = [tok.bos_id] + pre_t
    start = len(ids)
    ids += [tok.mask_id] * n + suf_t + ([tok.eos_id] if ends else [])
    ids += [tok.pad_id] * (b.seq_len - len(ids))
    return ids, start, n, targets


def infill_batch(tok: HoneTokenizer, texts: list[str], rng: random.Random, b: Budgets, batch: int):
    """-> ids (B, T) with canvas = targets, is_context (B, T), targets (B, T) with -100 off-canvas."""
    ids = torch.full((batch, b.seq_len), tok.pad_id, dtype=torch.long)
    targets = torch.full((batch, b.seq_len), -100, dtype=torch.long)
    is_context = torch.ones((batch, b.seq_len), dtype=torch.bool)
    for i in range(batch):
        row, s, n, tgt = build_example(tok, rng.choice(texts), rng, b)
        ids[i] = torch.tensor(row)
        ids[i, s : s + n] = torch.tensor(tgt)
        targets[i, s : s + n] = torch.tensor(tgt)
        is_context[i, s : s + n] = False
    return ids, is_context, targets


def mask_canvas(ids, is_context, targets, mask_id: int, rng: torch.Generator):
    """MDLM corruption of canvas slots: t_i = (u + i/B) mod 1 (low discrepancy), mask each slot w.p. t_i.

    -> noisy ids (B, T), loss targets (B, T) (-100 where not masked), t (B,)."""
    B = ids.shape[0]
    u = torch.rand((), generator=rng)
    t = ((u + torch.arange(B) / B) % 1.0).clamp(min=0.02)
    canvas = ~is_context
    # drawn on the (CPU) generator, then moved: the same masks on every device
    m = (torch.rand(ids.shape, generator=rng) < t[:, None]).to(ids.device) & canvas
    # at least one masked slot per row so every row carries signal
    first = canvas.float().argmax(1)
    none = ~m.any(1)
    m[none, first[none]] = True
    noisy = ids.masked_fill(m, mask_id)
    return noisy, targets.masked_fill(~m, -100), t.to(ids.device)


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
