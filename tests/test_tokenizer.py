"""The byte-level BPE: any text round-trips, special-token text stays text."""

from __future__ import annotations


import pytest
from hypothesis import given, settings, strategies as st

from model.tokenizer import HoneTokenizer


@given(st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_tokenizer_round_trip(tokenizer_text):
    tok = _TOK
    assert tok.decode(tok.encode(tokenizer_text)) == tokenizer_text


_TOK: HoneTokenizer


@pytest.fixture(autouse=True, scope="module")
def _tok(tiny_dir):
    global _TOK
    _TOK = HoneTokenizer.from_file(tiny_dir / "tokenizer.json")


@pytest.mark.parametrize("text", ["\t\tx = 1\r\n", "naïve = '日本語' # 🎉🐍", "   \n\n    ", "<|mask|><|null|>", "\x0b\x0c\x1f"])
def test_tokenizer_round_trip_edge_cases(text):
    ids = _TOK.encode(text)
    assert _TOK.decode(ids) == text
    assert _TOK.mask_id not in ids and _TOK.null_id not in ids  # special-token text stays text
