"""Byte-level BPE tokenizer with Hone's named special tokens (exact round trip of any text)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from functools import cached_property
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .config import VOCAB_SIZE

PAD = "<|pad|>"
BOS = "<|bos|>"
EOS = "<|eos|>"
MASK = "<|mask|>"
NULL = "<|null|>"  # fills canvas slots the middle does not need
SPECIAL_TOKENS = (PAD, BOS, EOS, MASK, NULL)  # order fixes their ids 0..4


class HoneTokenizer:
    """Thin wrapper around `tokenizers.Tokenizer` exposing the special ids by name."""

    def __init__(self, tok: Tokenizer):
        self.tok = tok
        # text that happens to contain "<|mask|>" must stay text, never become the special token
        self.tok.encode_special_tokens = True
        ids = {name: tok.token_to_id(name) for name in SPECIAL_TOKENS}
        missing = [name for name, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"tokenizer lacks special tokens {missing}")
        self.pad_id, self.bos_id, self.eos_id = ids[PAD], ids[BOS], ids[EOS]
        self.mask_id, self.null_id = ids[MASK], ids[NULL]
        self.special_ids = frozenset(ids.values())

    @classmethod
    def from_file(cls, path: str | Path) -> HoneTokenizer:
        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: str | Path) -> None:
        self.tok.save(str(path))

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode([i for i in ids if i not in self.special_ids], skip_special_tokens=False)

    @cached_property
    def token_texts(self) -> list[str]:
        """The text of each token id alone ("" for the special tokens); computed once per tokenizer."""
        return [self.decode([i]) for i in range(self.vocab_size)]

    @cached_property
    def prefixes(self) -> TokenPrefixes:
        return TokenPrefixes(self.token_texts)

    @cached_property
    def newline_ids(self) -> frozenset[int]:
        """Tokens that open a line break."""
        return frozenset(i for i, t in enumerate(self.token_texts) if t.startswith("\n"))


class TokenPrefixes:
    """Token ids by their text, to ask which tokens agree with a text that must come next."""

    def __init__(self, texts: list[str]):
        pairs = sorted((t, i) for i, t in enumerate(texts) if t)
        self._texts, self._ids = [t for t, _ in pairs], [i for _, i in pairs]
        self._by_text: dict[str, list[int]] = {}
        for t, i in pairs:
            self._by_text.setdefault(t, []).append(i)

    def agreeing(self, need: str) -> list[int]:
        """Tokens whose text starts with `need` (they spell all of it), or is a shorter start of it."""
        lo = bisect.bisect_left(self._texts, need)
        hi = bisect.bisect_left(self._texts, need + "\U0010ffff")
        ids = self._ids[lo:hi]
        for j in range(1, len(need)):
            ids = ids + self._by_text.get(need[:j], [])
        return ids


def _new_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterator[str] | list[str], vocab_size: int = VOCAB_SIZE, show_progress: bool = True) -> HoneTokenizer:
    """Train a byte-level BPE on `texts`; every byte is in the alphabet, so any text round-trips."""
    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ValueError(f"vocab_size must be at least {len(SPECIAL_TOKENS) + 256}")
    tok = _new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=show_progress,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return HoneTokenizer(tok)
