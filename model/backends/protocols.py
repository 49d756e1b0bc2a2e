"""What a backend provides, in full: a new family implements these and reads no sampler code.

CanvasBackend is what the diffusion loop calls, plus the answers every backend gives so that the engine, the sampler
and the reports never probe (max_len, default_options, batches, streams, network). StreamBackend adds what rule ar
calls: a causal context stream decoded left to right, its drafts and the canvas asked where the middle ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol

import torch

from ..layout import Segments, Specials
from ..types import SampleOptions

if TYPE_CHECKING:  # Hone's own classes: a backend of another family never loads them
    from ..network import Denoiser
    from ..tokenizer import HoneTokenizer


class Session(Protocol):
    """One canvas layout of a request: its fixed context encoded (or not), then one prediction per step."""

    encoded: int  # context tokens this session ran through the network when it was made (0: none cached)

    def predict(self, canvas: torch.Tensor) -> torch.Tensor:
        """canvas ids (n,) -> logits (n, V) for each canvas slot."""


class Network(NamedTuple):
    """Hone's own network and tokenizer, for reports that score or measure the network itself (held-out CE, step
    FLOPs); a backend of a third-party model answers None."""

    model: Denoiser
    tokenizer: HoneTokenizer


class CanvasBackend(Protocol):
    """What the diffusion loop needs, and what every backend answers."""

    mask_id: int
    bos_id: int | None
    eos_id: int | None
    specials: Specials  # the special ids its layout places
    null_ids: frozenset[int]  # ids that mean "unused slot"
    newline_ids: frozenset[int]  # tokens that open a line break (context is cut after one; rule ar's end checks)
    max_holes: int | None  # holes one canvas may hold (None: any); more are filled one after another
    max_len: int | None  # most tokens one request's sequence may hold (None: the model does not say)
    batches: bool  # Engine.fill_many may run several calls together (model.batching, which today drives Hone's
    # spm network through HoneBackend.job_view: a family that batches brings its own batcher)
    streams: bool  # rule ar can run: the backend is a StreamBackend whose model has a causal context stream
    network: Network | None  # Hone's own network and tokenizer, None for a third-party model

    def default_options(self) -> SampleOptions:
        """Sampling defaults with the token budgets the model was trained with."""

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...

    def session(self, seg: Segments, cached: bool) -> Session:
        """Lay the segments out for the model and encode their fixed context (cached: once, not every step)."""


class DraftTable(Protocol):
    """A corpus table of likely next tokens (model.drafts.NgramDrafts)."""

    def draft(self, tokens: list[int], k: int) -> list[int]:
        """Up to k tokens likely to follow `tokens` ([] when the table knows none)."""


class TokenPrefixes(Protocol):
    """Tokens by the text they spell (model.tokenizer.TokenPrefixes)."""

    def agreeing(self, need: str) -> list[int]:
        """Tokens whose text starts with `need` (they spell all of it), or is a shorter start of it."""


class StreamBackend(CanvasBackend, Protocol):
    """What rule ar needs besides the canvas (its `streams` answer says whether the model has a causal stream)."""

    drafts: DraftTable | None  # the corpus n-gram table drafts come from, when the model ships one
    token_texts: list[str]  # each token's text ("" for special tokens): healing spells the backed-up text with them
    token_prefixes: TokenPrefixes

    def stream(self, seg: Segments) -> list[int]:
        """The causal context stream of a one-hole request (holes empty)."""

    def stream_logits(self, stream: list[int], last: int = 1) -> tuple[torch.Tensor, int]:
        """Logits (last, V) for the tokens after each of the stream's `last` final positions, and how many tokens
        had to be encoded (only what is new since the last stream)."""

    def canvas_draft(self, stream: list[int], n: int) -> list[int]:
        """One canvas step after the stream: the best token of each of `n` fully masked slots."""

    def canvas_null_prob(self, n_stream: int, content: list[int]) -> float:
        """p(null) for the canvas slot after `content`, laid after the first `n_stream` tokens of the last stream:
        whether the middle ends there."""
