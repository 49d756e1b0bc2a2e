"""Real (tiny) training runs: losses fall, budgets end runs, runs resume exactly, schedules, fine-tuning, DDP."""

from __future__ import annotations

import json
import math

import pytest
import torch

from model.training.curves import read_log
from tiny_runs import TINY, tiny_corpus


@pytest.mark.parametrize("route", ["spm", "ar-diffusion"])
def test_each_loss_is_finite_and_falls(tmp_path, tok, route):
    from model.training.trainer import TrainConfig, Trainer

    corpus = tiny_corpus(tmp_path, tok)
    cfg = TrainConfig(route=route, tokens=60 * 4 * 67, ar_fraction=0.0, **{**TINY, "lr": 3e-3})
    tr = Trainer(cfg, corpus, tmp_path / "tok.json", tmp_path / "run")
    first = tr.evaluate()
    tr.run()
    last = tr.evaluate()
    assert all(math.isfinite(v) for v in (*first.values(), *last.values()))
    assert last["heldout_masked_ce"] < first["heldout_masked_ce"] - 0.3
    assert ("heldout_next_ce" in last) is (route == "spm")
    if route == "spm":
        assert last["heldout_next_ce"] < first["heldout_next_ce"] - 0.3
        recs = [r for r in read_log(tmp_path / "run" / "log.jsonl") if "supervised" in r and "loss" in r]
        assert recs and recs[-1]["supervised"] > recs[-1]["tokens"] / 2  # nearly every position carries a loss


@pytest.mark.parametrize("route", ["diffusion", "ar-diffusion"])
def test_tiny_training_run_resumes(tmp_path, tok, route):
    from model.checkpoint import load_model
    from model.training.trainer import TrainConfig, Trainer

    corpus = tiny_corpus(tmp_path, tok)
    with open(corpus / "train.jsonl", "a") as f:
        f.write("{not json\n")  # a corrupt record is skipped and counted, never crashes the run
    cfg = TrainConfig(route=route, model_preset="tiny", hours=3 / 3600, batch=2, warmup_steps=2, eval_every_s=1.0,
                      prefix_tokens=32, middle_tokens=16, suffix_tokens=16, ar_fraction=0.5)
    tr = Trainer(cfg, corpus, tmp_path / "tok.json", tmp_path / "run")
    assert tr.skipped == 1
    tr.run()
    first_step = tr.step
    assert first_step > 0 and (tmp_path / "run" / "model" / "loss.png").stat().st_size > 1000
    model, _ = load_model(tmp_path / "run" / "model")
    assert model.cfg.shifted is (route == "ar-diffusion")
    cfg2 = TrainConfig(**{**{f: getattr(cfg, f) for f in cfg.__struct_fields__}, "hours": 5 / 3600})
    tr2 = Trainer(cfg2, corpus, tmp_path / "tok.json", tmp_path / "run")
    assert tr2.step == first_step  # resumed, not restarted
    tr2.run()
    assert tr2.step > first_step
    logs = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("heldout_masked_ce" in r for r in logs)


def test_precision_choice():
    from model.training.trainer import bf16_speedup, use_bf16

    cpu = torch.device("cpu")
    assert use_bf16("bf16", cpu) and not use_bf16("fp32", cpu)
    with pytest.raises(ValueError, match="precision"):
        use_bf16("fp8", cpu)
    assert 0 < bf16_speedup(rows=64, d=32, ff=64, reps=2) < float("inf")  # measured, whatever this CPU is


def test_finetune_starts_from_a_model_folder(tmp_path, tok):
    from model.testing import make_tiny_model
    from model.training.trainer import TrainConfig, Trainer

    corpus = tiny_corpus(tmp_path, tok)
    src = make_tiny_model(tmp_path / "src", shifted=True)
    with pytest.raises(ValueError, match="diffusion"):
        Trainer(TrainConfig(route="ar-diffusion", **TINY), corpus, tmp_path / "tok.json", tmp_path / "bad", init_from=src)
    tr = Trainer(TrainConfig(route="diffusion", tokens=500, **TINY), corpus, tmp_path / "tok.json", tmp_path / "ft", init_from=src)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    assert tr.model.cfg.shifted and tr.tok.vocab_size != tok.vocab_size  # the source's network and tokenizer
    tr.run()
    after = tr.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_torchrun_ddp_two_processes(tmp_path, tok):
    """Two gloo processes under torchrun train one model in step (DistributedDataParallel)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    corpus = tiny_corpus(tmp_path, tok)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "lsp_server.cli", "train", "--preset", "smoke",
           "--route", "diffusion", "--tokens", "2000", "--threads", "1", "--corpus", str(corpus),
           "--tokenizer", str(tmp_path / "tok.json"), "--run-dir", str(tmp_path / "ddp")]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 process(es)" in out.stdout
    state = json.loads((tmp_path / "ddp" / "model" / "train_state.json").read_text())
    assert state["tokens_seen"] >= 2000 and state["step"] > 0


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resumed_run_equals_uninterrupted(tmp_path, tok, optimizer):
    from model.training.trainer import TrainConfig, Trainer

    corpus = tiny_corpus(tmp_path, tok)
    cfg = TrainConfig(route="spm", optimizer=optimizer, tokens=12 * 2 * 50, precision="fp32", **TINY)  # batches are
    # as wide as their longest row (<= 67 here): about 12 steps
    whole = Trainer(cfg, corpus, tmp_path / "tok.json", tmp_path / "whole")
    whole.run()
    part = Trainer(cfg, corpus, tmp_path / "tok.json", tmp_path / "parts")
    part.run(steps=5)  # as if interrupted: checkpoints and stops
    assert part.step == 5
    rest = Trainer(cfg, corpus, tmp_path / "tok.json", tmp_path / "parts")
    assert rest.step == 5
    rest.run()
    assert rest.step == whole.step > 5 and rest.tokens_seen == whole.tokens_seen
    for (name, a), b in zip(whole.model.state_dict().items(), rest.model.state_dict().values()):
        # moments are stored in bf16 on disk, so the resumed run may differ by their rounding only
        assert torch.allclose(a, b, atol=2e-3, rtol=0), name


def test_wsd_schedule_holds_the_peak_and_a_cooldown_ends_where_asked(tmp_path, tok):
    from model.training.trainer import TrainConfig, Trainer, lr_at

    cfg = TrainConfig(schedule="wsd", decay_share=0.25, lr=1e-3, min_lr_ratio=0.1, warmup_steps=1)
    assert lr_at(cfg, 10, 0.5) == lr_at(cfg, 10, 0.75) == pytest.approx(1e-3)
    assert lr_at(cfg, 10, 0.875) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert lr_at(cfg, 10, 1.0) == pytest.approx(1e-4)
    corpus = tiny_corpus(tmp_path, tok)
    tr = Trainer(TrainConfig(route="spm", schedule="wsd", hours=8.0, **TINY), corpus, tmp_path / "tok.json", tmp_path / "run")
    tr.elapsed = 3600.0  # one hour into an 8-hour run
    tr.cool_down(0.5)
    assert tr.cfg.hours == pytest.approx(1.5) and tr.progress == pytest.approx(2 / 3)
    assert lr_at(tr.cfg, 100, tr.progress) == pytest.approx(tr.cfg.lr)  # the decay starts now


def test_muon_float32_iteration_follows_torch():
    """Our Muon runs torch's update with the Newton-Schulz iteration in float32: the same step as torch's bf16 one
    within bf16 error, and the same state (checkpoints carry over)."""
    from model.training.trainer import Muon, _orthogonalize

    g = torch.randn(48, 20, generator=torch.Generator().manual_seed(0))
    coef = (3.4445, -4.775, 2.0315)
    ours = _orthogonalize(g, coef, 5, 1e-7)
    assert ours.dtype == torch.float32 and ours.shape == g.shape
    torchs = torch.optim._muon._zeropower_via_newtonschulz
    theirs = torchs(g, coef, 5, 1e-7).float()
    torch.testing.assert_close(ours, theirs, atol=0.03, rtol=0.05)

    params = []
    for _ in range(2):
        w = torch.nn.Parameter(torch.ones(20, 48))
        w.grad = g.T.clone()
        params.append(w)
    ref, mine = torch.optim.Muon([params[0]], lr=0.1), Muon([params[1]], lr=0.1)
    ref.step()
    mine.step()
    assert not torch.equal(params[1].detach(), torch.ones(20, 48))
    torch.testing.assert_close(params[1].detach(), params[0].detach(), atol=3e-3, rtol=1e-2)
    assert mine.state_dict()["state"][0].keys() == ref.state_dict()["state"][0].keys()
    assert torch.optim._muon._zeropower_via_newtonschulz is torchs  # torch's own is back after the step


def test_training_with_cross_file_context(tmp_path, tok):
    """--context-tokens: a package's other files give examples context (the workspace index's retrieval); the
    model records its budget and the held-out losses come with and without context, on the same examples."""
    from model.checkpoint import load_config
    from model.training.trainer import TrainConfig, Trainer

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    models = "class Store:\n    def __init__(self, root):\n        self.root = root\n\n    def get_item(self, key):\n        return key\n"
    app = "from .models import Store\n\n\ndef main():\n    store = Store('.')\n    return store.get_item('a')\n" * 4
    with open(corpus / "train.jsonl", "w") as f:
        for name, text in (("models.py", models), ("app.py", app), ("util.py", app.replace("main", "run"))):
            f.write(json.dumps({"path": f"/src/pkg/{name}", "text": text}) + "\n")
    (corpus / "heldout.jsonl").write_text(json.dumps({"path": "/src/pkg/cli.py", "text": app.replace("main", "cli")}) + "\n")
    (corpus / "corpus.json").write_text(json.dumps({"roots": ["/src"]}))
    tok.save(tmp_path / "tok.json")
    cfg = TrainConfig(route="spm", tokens=3000, precision="fp32", context_tokens=48, context_share=1.0, **TINY)
    tr = Trainer(cfg, corpus, tmp_path / "tok.json", tmp_path / "run")
    held = tr.run()
    assert {"heldout_masked_ce", "heldout_ctx_masked_ce", "heldout_next_ce", "heldout_ctx_next_ce"} <= set(held)
    # cli.py's `store.get_item(...)` lines use a member models.py defines: the cross-file held-out, without and with context
    assert {"heldout_xf_masked_ce", "heldout_xfctx_masked_ce", "heldout_xfctx_next_ce"} <= set(held)
    assert tr.repos.built >= 1 and load_config(tmp_path / "run" / "model").context_tokens == 48


def test_a_paused_step_counts_as_a_typical_one():
    """A trainer stopped (SIGSTOP) in the middle of a step does not count the pause as training time: the schedule
    follows training time, so a paused run would jump ahead (and a cooldown end early)."""
    from model.training.trainer import PAUSED_STEP, step_seconds

    assert step_seconds(0.9, None) == 0.9  # nothing to compare the first step with
    assert step_seconds(1.2, 1.0) == 1.2  # a slower step is still counted
    assert step_seconds(PAUSED_STEP * 1.0 + 0.1, 1.0) == 1.0 and step_seconds(600.0, 0.8) == 0.8
