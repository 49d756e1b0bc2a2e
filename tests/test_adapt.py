"""`hone adapt` (model.training.adapt, model.adapted) on a tiny randomly initialised network."""

from __future__ import annotations

import json

import pytest

from model.adapted import AdaptInfo, adapted_dir, find_adapted, install, model_fingerprint, prune, read_info
from model.testing import make_tiny_model, sample_texts
from model.training.adapt import AdaptConfig, AdaptError, adapt, split


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("adapt") / "base", layout="spm", shifted=True)


@pytest.fixture(scope="module")
def files():
    return {f"/work/proj/pkg/mod{i}.py": text for i, text in enumerate(sample_texts()[:6])}


def test_split_holds_whole_files_out_of_training(files):
    parts = split(files)
    assert parts.spots and set(parts.heldout) == set(parts.spots)
    assert not set(parts.heldout) & set(parts.train) and set(parts.heldout) | set(parts.train) == set(files)
    assert sum(map(len, parts.heldout.values())) <= 0.25 * sum(map(len, files.values()))
    for path, spots in parts.spots.items():
        text = parts.heldout[path]
        for lo, hi in spots:
            assert lo <= hi and text[lo:hi].strip()
    assert split(files) == parts  # the same files on every run
    two = dict(list(files.items())[:2])
    assert len(split(two).heldout) == 1 and len(split(two).train) == 1


def test_adapt_lowers_heldout_loss_and_writes_a_model_folder(base, files, tmp_path):
    from model.engine import Engine

    records = []
    out = tmp_path / "adapted"
    info = adapt(files, base, AdaptConfig(steps=25, lr=3e-3, batch=8, threads=1), root="/work/proj", out=out,
                 progress=records.append)
    assert info.kept and info.steps == 25
    assert sum(info.after.values()) < sum(info.before.values())
    assert [r["event"] for r in records if "event" in r] == ["before", "after"]
    assert {"config.json", "tokenizer.json", "loss.png", "log.jsonl", "adapt.json"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "adapt.json").read_text())["kept"] is True
    engine = Engine.load(out, "cpu", threads=1)  # a plain model folder the model setting accepts
    assert engine.fill(["def f(x):\n    return ", "\n"], engine.default_options()).texts


def test_adapt_in_bf16_trains_and_says_so(base, files, tmp_path):
    """precision bf16 (what auto picks where the CPU computes it natively): the steps run under bf16 autocast, the
    held-out judge still decides, and the record says how it trained."""
    info = adapt(files, base, AdaptConfig(steps=8, lr=3e-3, batch=8, threads=1, precision="bf16"), root="/work/proj",
                 out=tmp_path / "adapted")
    assert info.precision == "bf16 autocast" and info.steps == 8
    assert all(v is not None for v in info.after.values())
    fp32 = adapt(files, base, AdaptConfig(steps=1, batch=8, threads=1, precision="fp32"), root="/work/proj",
                 out=tmp_path / "fp32")
    assert fp32.precision == "fp32"


def test_a_small_repository_is_read_at_most_max_passes_times(base, files, tmp_path):
    """The minutes are a budget, not a target: a repository this small is read twice and adaptation ends long before
    its ten minutes (more passes over a small repository overfit it)."""
    info = adapt(files, base, AdaptConfig(minutes=10, max_passes=2, batch=8, threads=1), root="/work/proj",
                 out=tmp_path / "adapted")
    assert 2 <= info.passes < 3 and info.steps >= 2 and info.minutes < 10  # (a step reads at most one pass)


def test_adapt_refuses_a_worse_result(base, files, tmp_path, monkeypatch):
    monkeypatch.setenv("HONE_CACHE", str(tmp_path / "cache"))
    info = adapt(files, base, AdaptConfig(steps=6, lr=30.0, warmup_steps=1, batch=8, threads=1), root="/work/proj")
    assert not info.kept  # the held-out loss rose: nothing to use
    folder = adapted_dir("/work/proj")
    assert read_info(folder) == info and not (folder / "model").exists()
    assert find_adapted("/work/proj", base) == (None, "the last adaptation did not improve the held-out loss")


def test_too_little_python_is_a_clear_error(base):
    with pytest.raises(AdaptError, match="too little Python"):
        adapt({"/p/a.py": "x = 1\n", "/p/b.py": "y = 2\n"}, base, AdaptConfig(steps=1, threads=1))
    with pytest.raises(AdaptError, match="at least two"):
        adapt({"/p/a.py": "x = 1\n" * 1000}, base, AdaptConfig(steps=1, threads=1))


def _info(root: str, base, kept: bool = True, **kw) -> AdaptInfo:
    return AdaptInfo(root=root, base=str(base), base_fingerprint=model_fingerprint(base), kept=kept,
                     before={"heldout_masked_ce": 2.0}, after={"heldout_masked_ce": 1.9}, **kw)


def test_a_workspace_finds_its_adapted_model_only_for_its_base(base, tmp_path, monkeypatch):
    monkeypatch.setenv("HONE_CACHE", str(tmp_path / "cache"))
    other = make_tiny_model(tmp_path / "other", seed=1)
    staging = make_tiny_model(tmp_path / "staging", seed=2)
    install(staging, "/work/a", _info("/work/a", base))
    folder, why = find_adapted("/work/a", base)
    assert why == "" and folder == adapted_dir("/work/a") / "model" and (folder / "config.json").is_file()
    assert find_adapted("/work/a", other) == (None, "adapted from another base model")
    assert find_adapted("/work/b", base) == (None, "not adapted")


def test_at_most_max_adapted_are_kept(base, tmp_path, monkeypatch):
    monkeypatch.setenv("HONE_CACHE", str(tmp_path / "cache"))
    for i in range(3):
        install(None, f"/work/{i}", _info(f"/work/{i}", base, kept=False))
    gone = prune(keep=2)
    assert [read_info(p) for p in gone] == [None] and read_info(adapted_dir("/work/0")) is None
    assert read_info(adapted_dir("/work/2")) is not None


def test_a_big_repository_is_sampled_to_a_fixed_subset():
    from model.training.adapt import sample_files

    files = {f"/r/m{i}.py": "x = 1\n" * 100 for i in range(50)}  # 600 characters each
    small = sample_files(files, max_chars=6_000)
    assert len(small) == 10 and small == sample_files(files, max_chars=6_000) and set(small) <= set(files)
    assert sample_files(files) == files
