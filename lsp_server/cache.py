"""Bounded caches: recent contexts, and the suggestion each document last showed (typed-through)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

ANCHOR_CHARS = 512  # text either side of a shown suggestion that must be unchanged for it to stay valid


class LRU(Generic[K, V]):
    """A dict that forgets its least recently used entry beyond `maxsize`."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._d: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        if key not in self._d:
            return None
        self._d.move_to_end(key)
        return self._d[key]

    def put(self, key: K, value: V) -> None:
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self.maxsize:
            self._d.popitem(last=False)

    def pop(self, key: K) -> V | None:
        return self._d.pop(key, None)

    def __len__(self) -> int:
        return len(self._d)


def context_key(*parts: object) -> bytes:
    """A short digest of a request's context so cached entries do not hold whole windows."""
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(repr(p).encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.digest()


@dataclass(frozen=True)
class Shown:
    offset: int  # where the suggestion starts
    before: str  # up to ANCHOR_CHARS of document text before `offset` when it was shown
    after: str  # up to ANCHOR_CHARS after `offset`
    text: str  # the suggestion, as it would be inserted


class TypedThrough:
    """When the user types the start of the shown suggestion, the rest is served without the model."""

    def __init__(self, max_docs: int = 64) -> None:
        self._shown: LRU[str, Shown] = LRU(max_docs)

    def remember(self, uri: str, text: str, offset: int, suggestion: str) -> None:
        if not suggestion:
            return
        self._shown.put(uri, Shown(offset, text[max(0, offset - ANCHOR_CHARS) : offset],
                                   text[offset : offset + ANCHOR_CHARS], suggestion))

    def lookup(self, uri: str, text: str, offset: int) -> str | None:
        """The rest of the suggestion if the text typed since it was shown is its start, else None."""
        s = self._shown.get(uri)
        if s is None:
            return None
        typed = offset - s.offset
        if not 0 <= typed < len(s.text) or not s.text.startswith(text[s.offset : offset]):
            return None
        if text[max(0, s.offset - ANCHOR_CHARS) : s.offset] != s.before:
            return None
        if text[offset : offset + ANCHOR_CHARS] != s.after:
            return None
        rest = s.text[typed:]
        return rest if rest.strip() else None

    def forget(self, uri: str) -> None:
        self._shown.pop(uri)
