"""Bounded caches: recent contexts, and the suggestion each document last showed (typed-through).

Every cache of the server is bounded in entries and in bytes, and the bounds are named here (hone/stats reports each
cache's size beside them; the model's context streams are bounded in model.backends.stream)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

ANCHOR_CHARS = 512  # text either side of a shown suggestion that must be unchanged for it to stay valid
ENTRY_OVERHEAD = 200  # bytes counted per entry besides its text (the key, the node, the objects' headers)

RECENT_ENTRIES, RECENT_BYTES = 256, 2 << 20  # recent contexts (a 16-byte digest) -> the completion shown for them
TYPED_DOCS, TYPED_BYTES = 64, 1 << 20  # per document: the suggestion shown and ANCHOR_CHARS either side of it
DEBOUNCE_DOCS, DEBOUNCE_BYTES = 256, 256 << 10  # per document: the last request's time and the mean gap (two floats
# under the document's URI, which can be of any length; lsp_server.debounce)


def text_bytes(*texts: str | bytes) -> int:
    """What an entry of these texts costs, roughly: UTF-8 length (a str of ASCII holds one byte per character)."""
    return ENTRY_OVERHEAD + sum(len(t) if isinstance(t, bytes) else len(t.encode("utf-8", "surrogatepass"))
                                for t in texts)


class LRU(Generic[K, V]):
    """A dict that forgets its least recently used entries beyond `maxsize` entries or `max_bytes` (each entry's
    bytes as `size(key, value)` says)."""

    def __init__(self, maxsize: int, max_bytes: int | None = None,
                 size: Callable[[K, V], int] = lambda k, v: ENTRY_OVERHEAD) -> None:
        self.maxsize, self.max_bytes, self._size = maxsize, max_bytes, size
        self._d: OrderedDict[K, V] = OrderedDict()
        self._bytes: dict[K, int] = {}
        self.nbytes = 0
        self.evicted = 0

    def get(self, key: K) -> V | None:
        if key not in self._d:
            return None
        self._d.move_to_end(key)
        return self._d[key]

    def put(self, key: K, value: V) -> None:
        self.pop(key)
        n = self._size(key, value)
        self._d[key], self._bytes[key] = value, n
        self.nbytes += n
        while len(self._d) > self.maxsize or (self.max_bytes is not None and self.nbytes > self.max_bytes
                                               and len(self._d) > 1):
            old, _ = self._d.popitem(last=False)
            self.nbytes -= self._bytes.pop(old)
            self.evicted += 1

    def pop(self, key: K) -> V | None:
        if key not in self._d:
            return None
        self.nbytes -= self._bytes.pop(key)
        return self._d.pop(key)

    def __len__(self) -> int:
        return len(self._d)

    def stats(self) -> dict:
        """Entries and bytes held, against their bounds."""
        return {"entries": len(self._d), "bytes": self.nbytes, "maxEntries": self.maxsize, "maxBytes": self.max_bytes,
                "evicted": self.evicted}


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

    def __init__(self, max_docs: int = TYPED_DOCS, max_bytes: int = TYPED_BYTES) -> None:
        self._shown: LRU[str, Shown] = LRU(max_docs, max_bytes, lambda uri, s: text_bytes(uri, s.before, s.after, s.text))

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

    def stats(self) -> dict:
        return self._shown.stats()
