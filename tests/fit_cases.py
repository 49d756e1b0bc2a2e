"""Engine.fit's cases in one table: the language server's tests (it shrinks with the answer) and the service's (it
refuses with the reason) both run them, so the two cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from model.types import MAX_HOLES, MAX_TOKENS, Fit, SampleOptions


@dataclass(frozen=True)
class FitCase:
    name: str
    opts: SampleOptions
    max_len: int | None  # the engine's (None: the model does not say)
    holes: int = 1
    fixed: int = 0  # tokens of text between the holes
    fits: tuple[int, int, int] | None = None  # (max_tokens, prefix_budget, suffix_budget) that fit; None: nothing fits
    reason: str = ""  # a part of the reason the options do not fit as asked ("" when they do)

    def check(self, fit: Fit, again: Callable[[SampleOptions], Fit]) -> None:
        """`fit` is what this case expects, and `again(fitted options)` takes them as they are (the server sends
        fitted options to the service, which refuses any that do not fit)."""
        assert (self.reason in fit.reason) if self.reason else fit.reason == "", fit.reason
        if self.fits is None:
            assert fit.opts is None
            return
        assert fit.opts is not None
        assert (fit.opts.max_tokens, fit.opts.prefix_budget, fit.opts.suffix_budget) == self.fits
        assert fit.opts.initial_slots <= fit.opts.max_tokens
        assert again(fit.opts) == Fit(fit.opts)

    def pieces(self) -> list[str]:
        """Pieces around the holes whose middles count `fixed` tokens with conftest.FakeEngine (4 characters each)."""
        middles = self.holes - 1
        assert middles > 0 or self.fixed == 0, "text between holes needs two holes"
        sizes = [self.fixed // middles + (i < self.fixed % middles) for i in range(middles)] if middles else []
        return ["def f():\n    ", *("x" * 4 * n for n in sizes), "\n"]


B = dict(prefix_budget=192, suffix_budget=64)
FIT_CASES = [
    FitCase("fits as asked", SampleOptions(max_tokens=32, **B), 1024, fits=(32, 192, 64)),
    FitCase("no model length", SampleOptions(max_tokens=500, **B), None, fits=(500, 192, 64)),
    FitCase("over the ceiling", SampleOptions(max_tokens=MAX_TOKENS + 1, **B), None, fits=(MAX_TOKENS, 192, 64),
            reason=f"max_tokens {MAX_TOKENS + 1} is over the limit of {MAX_TOKENS}"),
    # 512 - 3 special tokens - 192 - 64 = 253 slots
    FitCase("slots shrink", SampleOptions(max_tokens=500, initial_slots=500, **B), 512, fits=(253, 192, 64),
            reason="the context leaves 253 slots per hole"),
    # below 16 slots per hole the budgets shrink: 200 - 3 - 20 - 3 x 16 = 129 tokens, 3 : 1
    FitCase("budgets shrink", SampleOptions(max_tokens=64, **B), 200, holes=3, fixed=20, fits=(16, 96, 33),
            reason="does not fit the model's 200-token context"),
    FitCase("nothing fits", SampleOptions(**B), 100, holes=2, fixed=90, reason="leave 0 tokens for the prefix and suffix"),
    FitCase("too many holes", SampleOptions(max_tokens=4, **B), 1024, holes=MAX_HOLES + 1,
            reason=f"{MAX_HOLES + 1} holes; at most {MAX_HOLES}"),
    # a context budget and its 2 markers count: 600 - 5 - 128 - 192 - 64 = 211 (without context 341 would fit 300)
    FitCase("context counts", SampleOptions(max_tokens=300, context_budget=128, **B), 600, fits=(211, 192, 64),
            reason="budgets 192 + 64 + 128 (cross-file context)"),
    FitCase("context fits", SampleOptions(max_tokens=64, context_budget=128, **B), 600, fits=(64, 192, 64)),
]
FIT_IDS = [c.name for c in FIT_CASES]
