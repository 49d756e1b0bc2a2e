"""Server-side debounce that follows the user's typing speed."""

from __future__ import annotations

from .cache import LRU

PAUSE_S = 1.0  # a gap longer than this is a pause, not typing
FAST_S = 0.25  # typing faster than this (mean gap) waits for the next key
MAX_DELAY_S = 0.3


class Debouncer:
    """Per document, a moving mean of the gap between requests; during fast typing the wait grows to
    a little more than that gap, so a request the next keystroke would cancel never reaches the model.
    Slow typing waits the configured base; a base of 0 turns debouncing off."""

    def __init__(self, max_docs: int = 256) -> None:
        self._seen: LRU[str, tuple[float, float | None]] = LRU(max_docs)  # uri -> (last time, mean gap)

    def delay(self, uri: str, base_s: float, now: float) -> float:
        last = self._seen.get(uri)
        mean: float | None = None
        if last is not None:
            gap = now - last[0]
            if 0 <= gap < PAUSE_S:
                mean = gap if last[1] is None else 0.5 * gap + 0.5 * last[1]
        self._seen.put(uri, (now, mean))
        if base_s <= 0:
            return 0.0
        if mean is None or mean > FAST_S:
            return base_s
        return min(max(base_s, 1.5 * mean), max(base_s, MAX_DELAY_S))
