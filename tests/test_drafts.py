"""Corpus n-gram drafts (model.drafts): the table, its file, and decoding with it (the text never changes)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from model.drafts import DRAFTS_FILE, NgramDrafts, build_from_corpus
from model.types import SampleOptions
from tests.test_sampler import PREFIX, SUFFIX


def test_the_table_keeps_each_pairs_most_frequent_next_token_and_chains_it():
    lists = [[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 7], [9, 9, 8]]
    t = NgramDrafts.build(lists, vocab_size=10, min_count=2)
    assert len(t) == 2  # (1, 2) seen 3 times, (2, 3) twice; (3, 4), (3, 5), (9, 9) once
    assert t.draft([0, 1, 2], 5) == [3, 4]  # (1, 2) -> 3; (2, 3) -> 4 or 5, tied: the smaller id; (3, 4) unknown
    assert t.draft([0, 1, 2], 1) == [3]
    assert NgramDrafts.build(lists, 10, min_count=4).draft([1, 2], 3) == []  # no pair seen 4 times
    assert t.draft([5, 6], 3) == [] and t.draft([2], 3) == []  # unknown pair, too short
    chain = NgramDrafts.build([[1, 2, 3, 4, 5, 6]] * 2, vocab_size=10)
    assert chain.draft([1, 2], 3) == [3, 4, 5] and chain.draft([1, 2], 10) == [3, 4, 5, 6]


def test_building_in_several_merges_counts_like_one(monkeypatch):
    import model.drafts as drafts

    rng = np.random.default_rng(0)
    lists = [rng.integers(0, 6, size=int(rng.integers(3, 40))).tolist() for _ in range(200)]
    whole = NgramDrafts.build(lists, vocab_size=6)
    monkeypatch.setattr(drafts, "MERGE_TOKENS", 10)  # fold the counts after (nearly) every list
    merged = NgramDrafts.build(lists[::-1], vocab_size=6)
    assert len(whole) > 20
    assert np.array_equal(whole.keys, merged.keys) and np.array_equal(whole.next, merged.next)


def test_file_round_trip_and_bad_files(tmp_path):
    t = NgramDrafts.build([[1, 2, 3, 1, 2, 3, 1, 2, 4]], vocab_size=10)
    t.save(tmp_path / DRAFTS_FILE)
    back = NgramDrafts.load(tmp_path / DRAFTS_FILE, 10)
    assert np.array_equal(back.keys, t.keys) and np.array_equal(back.next, t.next)
    assert back.draft([1, 2], 4) == t.draft([1, 2], 4) == [3, 1, 2, 3]
    with pytest.raises(ValueError, match="vocabulary of 10"):
        NgramDrafts.load(tmp_path / DRAFTS_FILE, 12)
    (tmp_path / "junk.npz").write_bytes(b"not a table")
    (tmp_path / "cut.npz").write_bytes((tmp_path / DRAFTS_FILE).read_bytes()[:-40])  # a truncated download
    for bad in ("junk.npz", "cut.npz"):
        with pytest.raises(ValueError, match="not a drafts table"):
            NgramDrafts.load(tmp_path / bad, 10)
    np.savez(tmp_path / "big.npz", keys=np.array([5]), next=np.array([99]), vocab_size=np.int64(10))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        NgramDrafts.load(tmp_path / "big.npz", 10)


def test_ngram_drafts_keep_the_greedy_text_and_save_forwards(spm_engine):
    """A table built from the model's own greedy text drafts it right: fewer forwards, the same text; then a table
    of wrong guesses: the same text again (a rejected draft changes nothing)."""
    b = spm_engine.backend
    opts = dict(rule="ar", max_tokens=24, mode="free", draft_accept=0.0, heal=False)  # exactly the greedy text
    prefix, suffix = "def main():\n    return", "\n"  # no token repeats: the document offers no first draft
    plain = spm_engine.infill(prefix, suffix, SampleOptions(draft="lookup", **opts))
    # the tiny network repeats one token until the loop rule keeps one copy: its greedy text before the cut
    (t,) = b.encode(plain.texts[0])
    seq = b.encode(prefix) + [t] * 12
    try:
        b.drafts = NgramDrafts.build([seq] * 2, b.tokenizer.vocab_size)
        right = spm_engine.infill(prefix, suffix, SampleOptions(draft="ngram", **opts))
        rng = np.random.default_rng(1)
        wrong = [rng.integers(5, b.tokenizer.vocab_size, size=400).tolist()] * 2
        b.drafts = NgramDrafts.build(wrong, b.tokenizer.vocab_size)
        guessed = spm_engine.infill(prefix, suffix, SampleOptions(draft="ngram", **opts))
        b.drafts = NgramDrafts.build([seq] * 2, b.tokenizer.vocab_size)
        lookup_only = spm_engine.infill(prefix, suffix, SampleOptions(draft="lookup", **opts))
    finally:
        b.drafts = None
    assert right.texts == guessed.texts == lookup_only.texts == plain.texts
    assert right.stats.forwards < plain.stats.forwards
    assert lookup_only.stats.forwards == plain.stats.forwards  # draft="lookup" never reads the table


def test_engine_loads_the_models_table_and_survives_a_broken_one(spm_dir, tmp_path, caplog):
    from model.engine import Engine

    folder = tmp_path / "m"
    shutil.copytree(spm_dir, folder)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    from model.testing import sample_texts

    with open(corpus / "train.jsonl", "w") as f:
        for text in sample_texts():
            f.write(json.dumps({"path": "x.py", "text": text}) + "\n")
    seen = []
    table, path = build_from_corpus(corpus, folder, progress=lambda done, total: seen.append((done, total)))
    assert path == folder / DRAFTS_FILE and len(table) > 100 and seen[-1] == (3, 3)
    eng = Engine.load(folder, "cpu", threads=1)
    assert eng.backend.drafts is not None and len(eng.backend.drafts) == len(table)
    with_table = eng.infill(PREFIX, SUFFIX, SampleOptions(rule="ar", max_tokens=16))
    path.write_bytes(b"\x00broken")
    broken = Engine.load(folder, "cpu", threads=1)  # a broken table is a warning: the model still serves
    assert broken.backend.drafts is None and "n-gram drafts not used" in caplog.text
    assert broken.infill(PREFIX, SUFFIX, SampleOptions(rule="ar", max_tokens=16)).texts == with_table.texts


def test_hone_drafts_command(spm_dir, tmp_path):
    from lsp_server.cli import main

    folder = tmp_path / "m"
    shutil.copytree(spm_dir, folder)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.jsonl").write_text(json.dumps({"path": "a.py", "text": "x = 1\ny = 2\n" * 50}) + "\n")
    assert main(["drafts", "--model", str(folder), "--corpus", str(corpus)]) == 0
    assert len(NgramDrafts.load(folder / DRAFTS_FILE, _vocab(folder))) > 0
    with pytest.raises(FileNotFoundError, match="train.jsonl"):
        main(["drafts", "--model", str(folder), "--corpus", str(tmp_path / "none")])


def _vocab(folder) -> int:
    return json.loads((folder / "config.json").read_text())["vocab_size"]


def test_copy_hint_takes_the_rest_of_the_nearest_repeat():
    from model.drafts import COPY_KEY_CHARS, copy_hint

    before = "a = config.verbose and x\nb = config.verbose or y\nc = config.verbose"
    assert copy_hint(before, "\n") == " or y"  # the nearest earlier occurrence
    assert copy_hint("x\nc = config.verbose", "\nd = config.verbose is None\n") == " is None"  # else after the cursor
    assert copy_hint("c = config.verbose", "", ["e = config.verbose # other file"]) == " # other file"
    assert copy_hint("c = config.verbose", "\n") == ""  # nowhere else
    assert copy_hint("x" + " " * COPY_KEY_CHARS, " " * 40) == ""  # blank keys copy nothing
    assert copy_hint("short", "short") == ""  # fewer characters than a key


def test_copy_hints_are_the_different_rests_in_copy_hint_order():
    from model.drafts import copy_hints

    before = "a = config.verbose or x\nb = config.verbose\nc = config.verbose and y\nd = config.verbose"
    after = "\ne = config.verbose # after\nf = config.verbose and y"
    other = "g = config.verbose is None\nh = config.verbose or x\n"
    got = copy_hints(before, after, [other], limit=8)
    assert got == [" and y", " or x", " # after", " is None"]  # nearest first; blank and repeated rests skipped
    assert copy_hints(before, after, [other], limit=2) == [" and y", " or x"]
    assert copy_hints(before, after, [other], limit=8, key_chars=4) == got  # "bose" finds the same lines here
    assert copy_hints("x = config.verbose", "\n") == []
    two = ["g = config.verbose is None\nh = config.verbose + 2\n"]  # other files give one hint unless told otherwise
    assert copy_hints("x = config.verbose", "", two, limit=8) == [" is None"]
    assert copy_hints("x = config.verbose", "", two, limit=8, limit_elsewhere=None) == [" is None", " + 2"]
    consumed = []

    def lazily():  # other files are read only until the limit is reached
        for t in ("k = config.verbose + 1", "never = config.verbose read"):
            consumed.append(t)
            yield t

    assert copy_hints("x = config.verbose", "", lazily(), limit=1) == [" + 1"] and len(consumed) == 1
