"""Reports: edit similarity, the recipe comparison over real runs, and shipping a run with its card."""

from __future__ import annotations

import json

import pytest

from model.reports.evaluate import edit_similarity
from model.testing import sample_texts
from tiny_runs import TINY, tiny_corpus


def test_edit_similarity():
    assert edit_similarity("abc", "abc") == 1.0
    assert edit_similarity("abc", "abd") == pytest.approx(2 / 3)
    assert edit_similarity("", "ab") == 0.0


def test_token_budget_ends_the_run_and_the_route_report_compares(tmp_path, tok):
    """Both routes for the same token budget, then the comparison: curves, quick eval, card section."""
    from model.reports.card import ROUTES_START
    from model.reports.recipes import route_report
    from model.training.trainer import TrainConfig, Trainer

    corpus = tiny_corpus(tmp_path, tok)
    runs = []
    for route in ("spm", "ar-diffusion"):
        cfg = TrainConfig(route=route, tokens=3000, hours=10.0, ar_fraction=0.5, **TINY)
        tr = Trainer(cfg, corpus, tmp_path / "tok.json", tmp_path / f"recipe-{route}")
        tr.run()
        per_step = cfg.batch * tr.budgets.seq_len
        assert 3000 <= tr.tokens_seen < 3000 + per_step  # stopped by tokens, not by the 10 h clock
        runs.append(tmp_path / f"recipe-{route}")
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# card\n")
    rep = route_report(runs, corpus, tmp_path / "routes.png", card, n_line=2, n_multi=1, threads=1)
    assert {r["recipe"] for r in rep["runs"]} == {"spm", "ar-diffusion"}
    assert rep["winner"] in ("spm", "ar-diffusion")
    spm = next(r for r in rep["runs"] if r["recipe"] == "spm")
    assert spm["heldout_next_ce"] > 0 and spm["supervised"] > spm["tokens"] / 2
    assert (tmp_path / "routes.png").stat().st_size > 1000
    assert ROUTES_START in card.read_text() and "ar-diffusion" in card.read_text()


def test_corpus_token_counts_and_ship_card(tmp_path, tok):
    """Token counts land in corpus.json; shipping a run writes a card that keeps the route comparison and notes."""
    from model.reports.card import ship
    from model.training.corpus import count_tokens
    from model.reports.card import ROUTES_START, TABLE_START
    from model.reports.evaluate import write_card_table
    from model.reports.recipes import write_routes_section
    from model.training.trainer import TrainConfig, Trainer

    corpus = tiny_corpus(tmp_path, tok)
    (corpus / "corpus.json").write_text(json.dumps({"roots": ["x"], "candidates": 3, "rejected": {},
                                                    "train": {"files": 2, "bytes": 9}, "heldout": {"files": 1, "bytes": 9}}))
    counts = count_tokens(corpus, tmp_path / "tok.json")
    texts = sample_texts()
    assert counts["heldout"] == len(tok.encode(texts[2])) and counts["train"] > counts["heldout"]
    tr = Trainer(TrainConfig(route="diffusion", tokens=300, **TINY), corpus, tmp_path / "tok.json", tmp_path / "run")
    tr.run()
    res = {"masked_ce": 5.0, "decodings": {"d": {k: dict(exact_match=0.1, edit_similarity=0.5, tokens_per_forward=1.0,
                                                         ms_per_completion=9.0) for k in ("single", "multi")}}}
    write_card_table(tmp_path / "run" / "model" / "MODEL_CARD.md", res)
    dest = tmp_path / "shipped"
    dest.mkdir()
    report = {"runs": [{"recipe": "diffusion", "tokens": 1e6, "minutes": 1.0, "heldout_masked_ce": 4.0, "tokens_per_s": 9.0,
                        "infill": res["decodings"]["d"]}], "winner": "diffusion"}
    write_routes_section(dest / "MODEL_CARD.md", report, "routes.png")
    with open(dest / "MODEL_CARD.md", "a") as f:
        f.write("\n## Notes\nhand-written caveats\n")
    ship(tmp_path / "run" / "model", corpus, dest)
    card = (dest / "MODEL_CARD.md").read_text()
    assert TABLE_START in card and ROUTES_START in card and "hand-written caveats" in card
    assert tr.segments[-1]["precision"] in card and f"{counts['train'] / 1e6:.1f}M tokens" in card
    assert (dest / "config.json").exists() and list(dest.glob("model*.safetensors"))


def test_calibrated_threshold_is_the_most_parallel_tau_that_keeps_quality():
    from model.reports.evaluate import ONE_PER_STEP, THRESHOLDS, calibrated_threshold

    def rec(em, es):
        return {"single": {"exact_match": em}, "multi": {"edit_similarity": es}}

    decodings = {ONE_PER_STEP: rec(0.20, 0.40), THRESHOLDS[0.9]: rec(0.20, 0.40), THRESHOLDS[0.7]: rec(0.195, 0.395),
                 THRESHOLDS[0.5]: rec(0.15, 0.40)}
    assert calibrated_threshold(decodings) == 0.7  # τ=0.5 loses 5 points of EM
    decodings[THRESHOLDS[0.7]] = rec(0.20, 0.35)
    assert calibrated_threshold(decodings) == 0.9  # τ=0.7 loses multi-line ES
    assert calibrated_threshold({THRESHOLDS[0.9]: rec(0.2, 0.4)}) is None  # no reference: no calibration
