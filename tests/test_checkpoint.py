"""Model folders: loading errors name the file and the problem; sharded weights round-trip."""

from __future__ import annotations

import json

import pytest
import torch

from model.checkpoint import CheckpointError, load_model
from model.engine import Engine


def test_loading_errors(tmp_path, tiny_dir):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope")
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    (bad / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="model.safetensors.*corrupt"):
        load_model(bad)
    shutil.copy(tiny_dir / "model.safetensors", bad / "model.safetensors")
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "vocab_size": cfg["vocab_size"] + 1}))
    with pytest.raises(CheckpointError, match="tokenizer.json.*does not match"):
        load_model(bad)
    (bad / "config.json").write_text(json.dumps({**cfg, "d_model": 96, "n_heads": 2}))
    with pytest.raises(CheckpointError, match="shape"):
        load_model(bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json"):
        load_model(bad)
    (bad / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json.*missing"):
        Engine.load(bad, "cpu")
    with pytest.raises(ValueError, match="device"):
        Engine.load(tiny_dir, "tpu")


def test_sharded_weights_round_trip(tmp_path, tiny_dir, monkeypatch):
    import model.checkpoint as ck

    monkeypatch.setattr(ck, "SHARD_BYTES", 64 * 1024)  # force several shards for a tiny network
    model, tok = load_model(tiny_dir)
    ck.save_model(tmp_path / "sharded", model, tok)
    shards = sorted((tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 1 and not (tmp_path / "sharded" / "model.safetensors").exists()
    again, _ = load_model(tmp_path / "sharded")
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    shards[-1].unlink()
    with pytest.raises(CheckpointError, match="shards"):
        load_model(tmp_path / "sharded")
