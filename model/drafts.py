"""Drafts from the training corpus: for each pair of tokens, the token that most often followed it there.

A draft is verified by the model in one forward (sampler._sample_ar), so a wrong guess costs nothing but a few rows
of that forward, and the text stays the model's own greedy text. A small model's greedy choices follow the corpus's
common sequences (`self.`, `) -> None:`, `return `, closing brackets and line ends), which the document itself
(prompt lookup) often lacks: chaining the table's best next tokens drafts them.

The table lives in the model folder as `drafts.npz` (it is tied to the model's tokenizer): `keys` (a * V + b, sorted,
int32) and `next` (int16/int32), built by `hone drafts` from a corpus's training split only.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterable
from itertools import chain
from pathlib import Path

import numpy as np

DRAFTS_FILE = "drafts.npz"
COPY_KEY_CHARS = 12  # a copy hint looks up this many characters before the cursor (about 4 tokens)
MAX_HINTS = 3  # copy hints rule ar chooses among (a stream forward each)
MAX_HINTS_ELSEWHERE = 1  # of those, from other files: the repository held-out (700 lines, seeds 0 and 7), EM / ES
# 10.9 % / 0.427 with 4 (any source), 11.4 % / 0.433 with 3 and 1 from other files (0.6 fewer forwards); 400-line
# single-file held-out (two seeds) 25.0 % / 0.513 -> 24.75 % / 0.511, within its noise
MIN_COUNT = 2  # a pair seen once says little about what follows it (and keeps the file small)
BATCH_FILES = 256  # files tokenized per batch while building
MERGE_TOKENS = 20_000_000  # triples collected before they are folded into the running counts (bounds memory)


class NgramDrafts:
    """The corpus's most frequent next token after each pair of tokens (seen at least MIN_COUNT times)."""

    def __init__(self, keys: np.ndarray, nxt: np.ndarray, vocab_size: int):
        if keys.shape != nxt.shape or keys.ndim != 1:
            raise ValueError("drafts table: keys and next must be 1-d arrays of one length")
        if len(keys) > 1 and not bool((keys[1:] > keys[:-1]).all()):
            raise ValueError("drafts table: keys must be sorted and unique")
        self.keys, self.next, self.vocab_size = keys, nxt, vocab_size

    def __len__(self) -> int:
        return len(self.keys)

    def draft(self, tokens: list[int], k: int) -> list[int]:
        """Up to k tokens after `tokens`: the table's next token for the last two, then for the last two of that,
        and so on until a pair is missing."""
        if len(tokens) < 2 or not len(self.keys):
            return []
        a, b = tokens[-2], tokens[-1]
        out: list[int] = []
        keys, v, as_key = self.keys, self.vocab_size, self.keys.dtype.type
        while len(out) < k:
            key = a * v + b
            i = int(keys.searchsorted(as_key(key)))  # a Python int would cast the whole table first (~0.5 ms)
            if i == len(keys) or int(keys[i]) != key:
                break
            a, b = b, int(self.next[i])
            out.append(b)
        return out

    @classmethod
    def load(cls, path: str | Path, vocab_size: int) -> NgramDrafts:
        """Read a table; a file that is not one (or is for another vocabulary) raises ValueError naming it."""
        try:
            with np.load(path, allow_pickle=False) as f:
                keys, nxt, v = f["keys"], f["next"], int(f["vocab_size"])
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path}: not a drafts table ({type(e).__name__}: {e})") from e
        if v != vocab_size:
            raise ValueError(f"{path}: drafts for a vocabulary of {v} tokens, the model has {vocab_size}")
        if len(keys) and (int(keys.min()) < 0 or int(keys.max()) >= v * v or int(nxt.min()) < 0 or int(nxt.max()) >= v):
            raise ValueError(f"{path}: drafts table holds ids outside the vocabulary")
        return cls(keys, nxt, v)  # int32 keys and int16 tokens as stored: ~7 MB in memory for the default table

    def save(self, path: str | Path) -> None:
        small = np.int16 if self.vocab_size <= 2**15 else np.int32
        np.savez_compressed(path, keys=self.keys.astype(np.int32 if self.vocab_size**2 < 2**31 else np.int64),
                            next=self.next.astype(small), vocab_size=np.int64(self.vocab_size))

    @classmethod
    def build(cls, token_lists: Iterable[list[int]], vocab_size: int, min_count: int = MIN_COUNT) -> NgramDrafts:
        """Count every (a, b, c) in the token lists; keep, per pair (a, b) seen ≥ min_count times, its most frequent c."""
        v = vocab_size
        uniq, counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
        chunk: list[np.ndarray] = []

        def merge():  # fold the collected triples into the running unique counts (bounded memory)
            nonlocal uniq, counts, chunk
            if not chunk:
                return
            u, c = np.unique(np.concatenate(chunk), return_counts=True)
            allk, allc = np.concatenate([uniq, u]), np.concatenate([counts, c])
            uniq, inv = np.unique(allk, return_inverse=True)
            counts = np.bincount(inv, weights=allc).astype(np.int64)
            chunk = []

        held = 0
        for ids in token_lists:
            t = np.asarray(ids, dtype=np.int64)
            if len(t) >= 3:
                chunk.append((t[:-2] * v + t[1:-1]) * v + t[2:])
                held += len(t)
            if held > MERGE_TOKENS:
                merge()
                held = 0
        merge()
        pair, nxt = uniq // v, uniq % v
        order = np.lexsort((-counts, pair))  # per pair, the most frequent next token first
        pair, nxt, counts = pair[order], nxt[order], counts[order]
        first = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]]) if len(pair) else np.zeros(0, np.int64)
        seen = np.add.reduceat(counts, first) if len(first) else np.zeros(0, np.int64)
        keep = first[seen >= min_count]
        return cls(pair[keep], nxt[keep], v)


def copy_hint(before: str, after: str, elsewhere: Iterable[str] = ()) -> str:
    """Where the last COPY_KEY_CHARS characters before the cursor occur elsewhere, the rest of that occurrence's
    line: the nearest occurrence before the cursor first, then the first after it, then in each of `elsewhere`
    (other files' text, in order); "" when they occur nowhere or are blank. A repeated line is the one thing a
    grep completes better than a small model: rule ar verifies the hint as a draft the model may overrule."""
    return next(iter(copy_hints(before, after, elsewhere, 1)), "")


def copy_hints(before: str, after: str, elsewhere: Iterable[str] = (), limit: int = MAX_HINTS,
               key_chars: int = COPY_KEY_CHARS, limit_elsewhere: int | None = MAX_HINTS_ELSEWHERE) -> list[str]:
    """Up to `limit` different rests of line that followed the last `key_chars` characters before the cursor
    elsewhere, in copy_hint's order (before the cursor nearest first, after it, then `elsewhere` in order, at most
    `limit_elsewhere` of them from there; None: no such bound); blank rests are skipped. Rule ar lets the model
    choose among them (the most likely line under the stream)."""
    key = before[-key_chars:]
    if len(key) < key_chars or not key.strip():
        return []
    out: list[str] = []

    def rest(text: str, at: int) -> bool:
        start = at + len(key)
        end = text.find("\n", start)
        line = text[start:] if end < 0 else text[start:end]
        if line.strip() and line not in out:
            out.append(line)
        return len(out) >= limit

    at = before.rfind(key, 0, len(before) - 1)
    while at >= 0:
        if rest(before, at):
            return out
        at = before.rfind(key, 0, at + len(key) - 1) if at > 0 else -1
    for i, text in enumerate(chain((after,), elsewhere)):  # other files read only as far as needed
        if i == 1 and limit_elsewhere is not None:  # the document's are in: the other files' now
            limit = min(limit, len(out) + limit_elsewhere)
            if len(out) >= limit:
                return out
        at = text.find(key)
        while at >= 0:
            if rest(text, at):
                return out
            at = text.find(key, at + 1)
    return out


def build_from_corpus(corpus: str | Path, model_dir: str | Path, min_count: int = MIN_COUNT,
                      progress: Callable[[int, int], None] = lambda done, total: None) -> tuple[NgramDrafts, Path]:
    """Build the table from `corpus`/train.jsonl with the tokenizer of `model_dir` and write it there."""
    from .tokenizer import HoneTokenizer

    corpus, model_dir = Path(corpus), Path(model_dir)
    train = corpus / "train.jsonl"
    if not train.is_file():
        raise FileNotFoundError(f"{train}: no training split (build one with `hone corpus`)")
    tok = HoneTokenizer.from_file(model_dir / "tokenizer.json")
    total = sum(1 for _ in train.open(encoding="utf-8"))

    def token_lists():
        batch: list[str] = []
        done = 0
        with train.open(encoding="utf-8") as f:
            for line in f:
                batch.append(json.loads(line)["text"])
                if len(batch) == BATCH_FILES:
                    yield from tok.encode_batch(batch)
                    done += len(batch)
                    progress(done, total)
                    batch = []
        if batch:
            yield from tok.encode_batch(batch)
            progress(total, total)

    table = NgramDrafts.build(token_lists(), tok.vocab_size, min_count)
    path = model_dir / DRAFTS_FILE
    table.save(path)
    return table, path
