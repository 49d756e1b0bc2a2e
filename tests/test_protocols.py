"""model.backends.protocols: a backend that implements only the protocols' members (no Hone class behind it) runs
the sampler through the diffusion loop and rule ar, the proof that the protocols list everything the sampler calls."""

from __future__ import annotations

import string

import pytest
import torch

from model.backends import HFBackend, HoneBackend
from model.backends.protocols import CanvasBackend, StreamBackend
from model.layout import Segments, Specials
from model.sampler import sample
from model.types import SampleOptions
from sampling import protocol_members

MASK, BOS, EOS, NULL = range(4)
ALPHABET = string.printable[:95] + "\n"  # one token per character: digits, letters, punctuation, space, newline
SURE = 10.0  # the logit of the oracle's token (others 0): p ~ 0.996 over ~100 tokens, above every default threshold


class _Prefixes:
    def __init__(self, texts: list[str]):
        self.texts = texts

    def agreeing(self, need: str) -> list[int]:
        return [i for i, t in enumerate(self.texts) if t and (t.startswith(need) or need.startswith(t))]


class OracleBackend:
    """A character-level backend whose 'model' knows the answers: each slot's logits put SURE on the character the
    answer has there (null after its end); the stream predicts the next character of prefix + answer + `goes_on`
    (a causal stream hardly ever predicts null: it writes on into the code after the hole), and the canvas says the
    middle ends right after the answer. It has only the StreamBackend members."""

    def __init__(self, prefix: str, answers: list[str], max_holes: int | None = None, goes_on: str = ""):
        self._prefix, self._answers, self._goes_on = prefix, answers, goes_on
        self._vocab = 4 + len(ALPHABET)
        self._last_stream: list[int] = []
        self.mask_id, self.bos_id, self.eos_id = MASK, BOS, EOS
        self.specials = Specials(BOS, EOS)
        self.null_ids = frozenset({NULL})
        self.newline_ids = frozenset({4 + ALPHABET.index("\n")})
        self.max_holes = max_holes
        self.max_len = 4096
        self.batches = False
        self.streams = True
        self.network = None
        self.drafts = None
        self.token_texts = ["", "", "", ""] + list(ALPHABET)
        self.token_prefixes = _Prefixes(self.token_texts)

    def default_options(self) -> SampleOptions:
        return SampleOptions()

    def encode(self, text: str) -> list[int]:
        return [4 + ALPHABET.index(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(ALPHABET[i - 4] for i in ids if i >= 4)

    def _logits(self, ids: list[int]) -> torch.Tensor:
        out = torch.zeros(len(ids), self._vocab)
        out[torch.arange(len(ids)), torch.tensor(ids, dtype=torch.long)] = SURE
        return out

    def _next(self, written: str, n: int) -> list[int]:
        """The stream's next n tokens after `written` (the text since the prefix's start): the answer's, then null."""
        full = self._prefix + self._answers[0] + self._goes_on
        if not full.startswith(written):
            return [NULL] * n
        return (self.encode(full[len(written) :]) + [NULL] * n)[:n]

    def _written(self, stream: list[int]) -> str:
        """The stream's text after its last BOS: the prefix and what was decoded after it."""
        return self.decode(stream[len(stream) - stream[::-1].index(BOS) :])

    def session(self, seg: Segments, cached: bool):
        answers = [self.encode(a) for a in self._answers[: len(seg.holes)]]
        targets = [(a + [NULL] * len(h))[: len(h)] for a, h in zip(answers, seg.holes)]
        logits = self._logits([t for tgt in targets for t in tgt])

        class Session:
            encoded = sum(map(len, seg.pieces))

            def predict(self, canvas: torch.Tensor) -> torch.Tensor:
                assert len(canvas) == len(logits)
                return logits.clone()

        return Session()

    def stream(self, seg: Segments) -> list[int]:
        return [BOS] + seg.pieces[1] + [BOS] + seg.pieces[0]

    def stream_logits(self, stream: list[int], last: int = 1) -> tuple[torch.Tensor, int]:
        self._last_stream = list(stream)
        rows = [self._next(self._written(stream[: len(stream) - last + 1 + r]), 1)[0] for r in range(last)]
        return self._logits(rows), 1

    def canvas_draft(self, stream: list[int], n: int) -> list[int]:
        return self._next(self._written(stream), n)

    def canvas_null_prob(self, n_stream: int, content: list[int]) -> float:
        written = self._written(self._last_stream[:n_stream]) + self.decode(content)
        return float(written == self._prefix + self._answers[0])


def test_the_oracle_implements_exactly_the_stream_protocol():
    public = {n for n in dir(OracleBackend("", [""])) if not n.startswith("_")}
    assert public == protocol_members(StreamBackend)
    assert protocol_members(CanvasBackend) < protocol_members(StreamBackend)
    assert not issubclass(OracleBackend, (HoneBackend, HFBackend))


def test_hone_backends_answer_every_member(engine, spm_engine):
    for eng in (engine, spm_engine):
        b, cfg = eng.backend, eng.backend.model.cfg
        assert all(hasattr(b, m) for m in protocol_members(StreamBackend))
        spm = cfg.layout == "spm"
        assert b.max_len == cfg.max_seq_len - spm and b.streams is b.batches is spm and b.network.model is b.model
        opts = b.default_options()
        assert (opts.prefix_budget, opts.suffix_budget, opts.context_budget) == (cfg.prefix_tokens, cfg.suffix_tokens,
                                                                                   cfg.context_tokens)


PREFIX = "def add(a, b):\n    return a +"


@pytest.mark.parametrize("rule", ["threshold", "entropy", "one"])
def test_the_diffusion_loop_runs_on_the_protocol_alone(rule):
    backend = OracleBackend(PREFIX, [" b"])
    res = sample(backend, [PREFIX, "\n"], SampleOptions(rule=rule, mode="line"))
    assert res.texts == [" b"] and res.stats.forwards >= 1


def test_several_holes_on_one_canvas_and_in_turn():
    answers = ["1", "22"]
    pieces = ["x = ", "\ny = ", "\n"]
    together = sample(OracleBackend("x = ", answers), pieces, SampleOptions(rule="threshold"))
    assert together.texts == answers and together.stats.context_encodes == 1
    in_turn = sample(OracleBackend("x = ", answers, max_holes=1), pieces, SampleOptions(rule="threshold"))
    assert len(in_turn.texts) == 2 and in_turn.texts[0] == "1" and in_turn.stats.context_encodes == 2  # (the oracle
    # answers each one-hole canvas with the first answer)


@pytest.mark.parametrize("draft", ["none", "lookup", "canvas", "both"])
@pytest.mark.parametrize("mode", ["line", "free"])
def test_rule_ar_runs_on_the_protocol_alone(draft, mode):
    answer = " b\n    print(a)" if mode == "free" else " b"  # the free middle crosses a line break (the canvas's end check)
    backend = OracleBackend(PREFIX, [answer])
    res = sample(backend, [PREFIX, "\n\nadd(1, 2)\n"], SampleOptions(rule="ar", mode=mode, draft=draft, max_tokens=40))
    assert res.texts == [answer]  # healing backed up "+" and spelled it again: the text starts after it
    per_token = 2 if draft in ("canvas", "both") else 1  # a canvas draft costs a forward of its own
    assert res.stats.forwards <= (len(answer) + 3) * per_token  # + the healed "+", the null, a line break's check


def test_rule_ar_ends_where_the_canvas_says_the_middle_ends():
    suffix = "\nadd(1, 2)\n"
    backend = OracleBackend(PREFIX, [" b"], goes_on=suffix)  # the stream writes on into the suffix
    res = sample(backend, [PREFIX, suffix], SampleOptions(rule="ar", mode="free", draft="none"))
    assert res.texts == [" b"]
    line = sample(OracleBackend(PREFIX, [" b"], goes_on=suffix), [PREFIX, suffix], SampleOptions(rule="ar", mode="line"))
    assert line.texts == [" b"]  # a line ends at its line break without asking the canvas


def test_auto_rule_takes_the_stream_for_lines_when_the_backend_streams():
    backend = OracleBackend(PREFIX, [" b"])
    res = sample(backend, [PREFIX, "\n"], SampleOptions(mode="line", draft="none"))
    assert res.texts == [" b"] and res.stats.context_encodes == 1 and res.stats.grew == 0
    backend.streams = False
    with pytest.raises(ValueError, match="'ar'"):
        sample(backend, [PREFIX, "\n"], SampleOptions(rule="ar"))
