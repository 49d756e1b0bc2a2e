"""Shared pieces of the training and report tests: a tiny corpus and a tiny run configuration."""

from __future__ import annotations

import json

from model.testing import sample_texts

TINY = dict(model_preset="tiny", batch=2, warmup_steps=2, eval_every_s=1.0, prefix_tokens=32, middle_tokens=16, suffix_tokens=16)


def tiny_corpus(tmp_path, tok):
    corpus = tmp_path / "corpus"
    corpus.mkdir(exist_ok=True)
    texts = sample_texts()
    with open(corpus / "train.jsonl", "w") as f:
        for t in texts[:2]:
            f.write(json.dumps({"path": "x.py", "text": t}) + "\n")
    (corpus / "heldout.jsonl").write_text(json.dumps({"path": "y.py", "text": texts[2]}) + "\n")
    tok.save(tmp_path / "tok.json")
    return corpus
