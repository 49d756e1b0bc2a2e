"""Server-side debounce that follows the user's typing speed and the model's."""

from __future__ import annotations

import statistics
from collections import deque

from .cache import DEBOUNCE_BYTES, DEBOUNCE_DOCS, LRU, text_bytes

PAUSE_S = 1.0  # a gap longer than this is a pause, not typing
FAST_S = 0.25  # typing faster than this (mean gap) may wait for the next key
MAX_DELAY_S = 0.3
KEEPS_UP = 0.8  # the model keeps up with typing when its recent run time is below this share of the mean gap
RECENT_RUNS = 8  # the model's recent run time: the median of this many completed runs (one slow block completion
# must not switch waiting on: while the server waits, only the runs at pauses complete, and those are the long ones)


class Debouncer:
    """Per document, a moving mean of the gap between requests, and for the model the median of its recent
    completed runs. A request waits the configured base, unless the user types faster than the model answers:
    then the wait grows to a little more than one gap, so a request the next keystroke would cancel never reaches
    the model. A model that keeps up answers during typing. A base of 0 turns debouncing off."""

    def __init__(self, max_docs: int = DEBOUNCE_DOCS, max_bytes: int = DEBOUNCE_BYTES) -> None:
        self._seen: LRU[str, tuple[float, float | None]] = LRU(max_docs, max_bytes, lambda uri, _: text_bytes(uri))
        # uri -> (last time, mean gap)
        self._runs: deque[float] = deque(maxlen=RECENT_RUNS)  # the model's last completed runs, seconds

    def stats(self) -> dict:
        """The per-document cache's size against its bounds (hone/stats)."""
        return self._seen.stats()

    def ran(self, seconds: float) -> None:
        """A model run finished (not superseded) after `seconds`."""
        self._runs.append(seconds)

    @property
    def run_s(self) -> float | None:
        return statistics.median(self._runs) if self._runs else None

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
        run_s = self.run_s
        if mean is None or mean > FAST_S or (run_s is not None and run_s < KEEPS_UP * mean):
            return base_s
        return min(max(base_s, 1.5 * mean), max(base_s, MAX_DELAY_S))
