"""Engine tests on a real (tiny, randomly initialised) network: sampler invariants, caching, loading."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from hypothesis import given, settings, strategies as st

from model.backends import HoneBackend
from model.checkpoint import CheckpointError, load_model
from model.engine import Engine
from model.sampler import cut_text, select_commits
from model.types import Cancelled, SampleOptions
from model.testing import make_tiny_hf_model, make_tiny_model
from model.tokenizer import HoneTokenizer

PREFIX = "def add(a, b):\n    '''Return the sum.'''\n    return "
SUFFIX = "\n\n\nprint(add(1, 2))\n"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def engine(tiny_dir):
    return Engine.load(tiny_dir, "cpu", threads=1)


class Recorder:
    """Wraps the real backend and records every session layout and canvas the sampler sends."""

    def __init__(self, inner: HoneBackend, on_predict=None):
        self.inner, self.on_predict = inner, on_predict
        self.sessions: list[tuple[list[int], list[int]]] = []
        self.canvases: list[list[int]] = []
        for name in ("mask_id", "bos_id", "eos_id", "null_ids", "max_holes", "encode", "decode"):
            setattr(self, name, getattr(inner, name))

    def session(self, ids, slot_pos, cached):
        self.sessions.append((list(ids), list(slot_pos)))
        real = self.inner.session(ids, slot_pos, cached)
        rec = self

        class S:
            encoded = real.encoded
            def predict(self, canvas):
                rec.canvases.append(canvas.tolist())
                if rec.on_predict:
                    rec.on_predict(len(rec.canvases))
                return real.predict(canvas)

        return S()


def run(engine, pieces, opts, on_predict=None, cancel=None):
    from model.sampler import sample

    rec = Recorder(engine.backend, on_predict)
    return sample(rec, pieces, opts, cancel), rec


@given(st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_tokenizer_round_trip(tokenizer_text):
    tok = _TOK
    assert tok.decode(tok.encode(tokenizer_text)) == tokenizer_text


@pytest.mark.parametrize("text", ["\t\tx = 1\r\n", "naïve = '日本語' # 🎉🐍", "   \n\n    ", "<|mask|><|null|>", "\x0b\x0c\x1f"])
def test_tokenizer_round_trip_edge_cases(text):
    ids = _TOK.encode(text)
    assert _TOK.decode(ids) == text
    assert _TOK.mask_id not in ids and _TOK.null_id not in ids  # special-token text stays text


_TOK: HoneTokenizer


@pytest.fixture(autouse=True, scope="module")
def _tok(tiny_dir):
    global _TOK
    _TOK = HoneTokenizer.from_file(tiny_dir / "tokenizer.json")


@pytest.mark.parametrize("rule", ["threshold", "entropy", "one"])
def test_context_untouched_and_progress_every_step(engine, rule):
    res, rec = run(engine, [PREFIX, SUFFIX], SampleOptions(rule=rule, max_tokens=12))
    pre, suf = engine.backend.encode(PREFIX), engine.backend.encode(SUFFIX)
    for ids, slot_pos in rec.sessions:
        context = [t for i, t in enumerate(ids) if i not in set(slot_pos)]
        assert context == [engine.backend.bos_id] + pre + suf + [engine.backend.eos_id]
        assert slot_pos == list(range(1 + len(pre), 1 + len(pre) + len(slot_pos)))
    masks = [c.count(engine.backend.mask_id) for c in rec.canvases]
    grown = {i for i, (a, b) in enumerate(zip(rec.canvases, rec.canvases[1:])) if len(b) != len(a)}
    for i, (a, b) in enumerate(zip(masks, masks[1:])):
        if i not in grown:
            assert b < a, "every step commits at least one slot"
    assert res.stats.forwards == len(rec.canvases) <= 12
    assert len(res.texts) == 1 and engine.backend.mask_id not in engine.backend.encode(res.texts[0])


@pytest.mark.parametrize("window", [1, 4])
def test_window_commits_only_the_leftmost_undecided_slots(engine, window):
    mask = engine.backend.mask_id
    opts = SampleOptions(rule="threshold", threshold=1e-9, window=window, max_tokens=24, initial_slots=16)
    _, rec = run(engine, [PREFIX, SUFFIX], opts)  # τ≈0 would commit every slot at once without the window
    assert len(rec.canvases) > 1
    for before, after in zip(rec.canvases, rec.canvases[1:]):
        if len(after) != len(before):
            continue
        first = before.index(mask)
        changed = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
        assert changed and all(first <= i < first + window for i in changed) or after.count(mask) == 0


class AlwaysNull:
    """The real backend with the null token forced to win every slot."""

    def __init__(self, inner: HoneBackend):
        self.inner = inner
        self.forwards = 0
        for name in ("mask_id", "bos_id", "eos_id", "null_ids", "max_holes", "encode", "decode"):
            setattr(self, name, getattr(inner, name))

    def session(self, ids, slot_pos, cached):
        real, outer = self.inner.session(ids, slot_pos, cached), self
        null = min(self.null_ids)

        class S:
            encoded = real.encoded
            def predict(self, canvas):
                outer.forwards += 1
                logits = real.predict(canvas)
                logits[:, null] = logits.max() + 10
                return logits

        return S()


def test_null_tail_closes_a_hole_in_one_step(engine):
    from model.sampler import sample

    backend = AlwaysNull(engine.backend)
    res = sample(backend, [PREFIX, SUFFIX], SampleOptions(rule="one", window=1, initial_slots=32, max_tokens=32))
    assert res.texts == [""] and backend.forwards == 1 and res.stats.slots == 32


def test_an_unsure_null_first_slot_takes_content():
    from model.sampler import _Hole, _no_unsure_empty

    null, mask = 4, 3
    holes = [_Hole([mask] * 3), _Hole([7, mask])]
    logits = torch.zeros(5, 10)
    logits[0, null], logits[0, 8] = 1.0, 0.9  # hole 1, first slot: null wins but is unsure
    logits[3, null] = 1.0  # hole 2: content already committed, a null here ends the text
    masked = torch.tensor([True, True, True, False, True])
    probs = logits.softmax(-1)
    conf, tok = probs.max(-1)
    _no_unsure_empty(logits, tok, conf, masked, holes, frozenset({null}), 0.5)
    assert int(tok[0]) == 8 and float(conf[0]) < 0.5
    assert int(tok[4]) == int(logits[4].argmax())  # not a first slot: untouched
    sure = torch.zeros(5, 10)
    sure[0, null] = 10.0
    conf, tok = sure.softmax(-1).max(-1)
    _no_unsure_empty(sure, tok, conf, masked, holes, frozenset({null}), 0.5)
    assert int(tok[0]) == null  # a confident "nothing here" stays empty


def test_select_commits_rules():
    conf = torch.tensor([0.95, 0.2, 0.91, 0.5])
    ent = torch.tensor([0.1, 3.0, 0.3, 1.0])
    masked = torch.tensor([True, True, True, False])
    assert select_commits(conf, ent, masked, SampleOptions(rule="threshold")).tolist() == [True, False, True, False]
    low = SampleOptions(rule="threshold", threshold=0.99)
    assert select_commits(conf, ent, masked, low).tolist() == [True, False, False, False]  # always the best one
    assert select_commits(conf, ent, masked, SampleOptions(rule="entropy", gamma=0.45)).tolist() == [True, False, True, False]
    assert select_commits(conf, ent, masked, SampleOptions(rule="entropy", gamma=0.0)).tolist() == [True, False, False, False]
    assert select_commits(conf, ent, masked, SampleOptions(rule="one")).tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match="threshold"):
        SampleOptions(rule="nope").validate()


@pytest.mark.parametrize("rule", ["threshold", "one"])
def test_cached_equals_uncached(engine, rule):
    a = engine.infill(PREFIX, SUFFIX, SampleOptions(rule=rule, cached=True, max_tokens=16))
    b = engine.infill(PREFIX, SUFFIX, SampleOptions(rule=rule, cached=False, max_tokens=16))
    assert a.texts == b.texts and a.stats.forwards == b.stats.forwards


def test_cached_logits_match_full_forward(engine):
    be = engine.backend
    ids = [be.bos_id] + be.encode(PREFIX) + [be.mask_id] * 6 + be.encode(SUFFIX)
    slots = list(range(1 + len(be.encode(PREFIX)), 7 + len(be.encode(PREFIX))))
    canvas = torch.tensor([be.mask_id, 5, 6, be.mask_id, 7, be.mask_id])
    c = be.session(ids, slots, True).predict(canvas)
    u = be.session(ids, slots, False).predict(canvas)
    assert torch.allclose(c, u, atol=1e-4)


def test_cancel_stops_within_one_step(engine):
    ev = threading.Event()
    with pytest.raises(Cancelled):
        run(engine, [PREFIX, SUFFIX], SampleOptions(max_tokens=32, rule="one"), on_predict=lambda n: ev.set(), cancel=ev)
    ev2 = threading.Event()
    ev2.set()
    with pytest.raises(Cancelled):
        engine.infill(PREFIX, SUFFIX, SampleOptions(), cancel=ev2)


def test_cancel_counts_one_forward(engine):
    ev = threading.Event()
    calls = []
    with pytest.raises(Cancelled):
        run(engine, [PREFIX, SUFFIX], SampleOptions(max_tokens=32, rule="one"), on_predict=lambda n: (calls.append(n), ev.set()), cancel=ev)
    assert calls == [1]


def test_deadline_returns_draft(engine):
    res, rec = run(engine, [PREFIX, SUFFIX], SampleOptions(max_tokens=32, rule="one", deadline_s=0.0))
    assert res.stats.deadline_hit and res.stats.forwards == 1
    assert isinstance(res.texts[0], str)


def test_multi_span_fills_every_span(engine):
    pieces = ["x = ", "\ny = ", "\nz = ", "\n"]
    res, rec = run(engine, pieces, SampleOptions(max_tokens=6, initial_slots=6))
    assert len(res.texts) == 3
    ids, slot_pos = rec.sessions[0]
    assert len(slot_pos) == 18
    last = rec.canvases[-1]
    # every hole received commits (the final step leaves at most one mask per still-open hole)
    for h in range(3):
        assert last[h * 6 : h * 6 + 6].count(engine.backend.mask_id) < 6


def test_line_mode_and_growth(engine):
    r = engine.infill(PREFIX, SUFFIX, SampleOptions(mode="line", max_tokens=24, initial_slots=2, grow_by=2))
    assert "\n" not in r.texts[0]
    assert r.stats.forwards <= 24


def test_cut_text_rules():
    assert cut_text("abc\ndef", "line", 0) == ("abc", True)
    body = "    x = 1\n    y = 2\nprint(x)\n"
    assert cut_text(body, "block", 4) == ("    x = 1\n    y = 2", True)
    assert cut_text("a\nb", "free", 0) == ("a\nb", False)


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


@pytest.mark.parametrize("style,shifted", [("llada", False), ("dream", True)])
def test_third_party_adapters(tmp_path, style, shifted):
    folder = make_tiny_hf_model(tmp_path / style, style)
    eng = Engine.load(folder, "cpu", style=style)
    assert eng.backend.shifted is shifted
    assert eng.backend.mask_id == eng.backend.tok.mask_token_id
    res = eng.infill("def f(x):\n    return ", "\n", SampleOptions(max_tokens=8, mode="line"))
    assert "\n" not in res.texts[0] and res.stats.forwards >= 1
    ids = [1, 2, 3, 9, 9, 4]
    sess = eng.backend.session(ids, [3, 4], cached=False)
    assert sess.src.tolist() == ([2, 3] if shifted else [3, 4])


def test_remote_code_needs_opt_in(tmp_path):
    folder = make_tiny_hf_model(tmp_path / "remote", "dream")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_evil.Evil"}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(CheckpointError, match="trustRemoteCode"):
        Engine.load(folder, "cpu")


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


@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("spm"), layout="spm", shifted=True)


@pytest.fixture(scope="module")
def spm_engine(spm_dir):
    return Engine.load(spm_dir, "cpu", threads=1)


def _spm_logits(be, prefix: str, suffix: str, canvas: torch.Tensor, cached: bool):
    pre, suf = be.encode(prefix), be.encode(suffix)
    ids = [be.bos_id] + pre + [be.mask_id] * len(canvas) + suf + [be.eos_id]
    sess = be.session(ids, list(range(1 + len(pre), 1 + len(pre) + len(canvas))), cached)
    return sess.predict(canvas), sess.encoded


def test_spm_cached_context_equals_recompute_after_every_kind_of_edit(spm_engine):
    be = spm_engine.backend
    canvas = torch.tensor([be.mask_id, 5, be.mask_id, 7, be.mask_id, be.mask_id])
    edits = [  # (prefix, suffix) as the user edits: each request reuses what it shares with the one before
        (PREFIX, SUFFIX),
        (PREFIX + "a", SUFFIX),  # typing
        (PREFIX + "a + b", SUFFIX),
        (PREFIX + "a +", SUFFIX),  # deleting
        ("import os\n" + PREFIX + "a +", SUFFIX),  # pasting far before the cursor
        ("import os\n" + PREFIX + "a +", SUFFIX.replace("1, 2", "3, 4")),  # editing the suffix
        (PREFIX[20:] + "a +", SUFFIX),  # the window slid
    ]
    encoded = []
    for prefix, suffix in edits:
        cached, n = _spm_logits(be, prefix, suffix, canvas, cached=True)
        full, _ = _spm_logits(be, prefix, suffix, canvas, cached=False)
        assert torch.allclose(cached, full, atol=1e-4), (prefix, suffix)
        encoded.append(n)
    stream_len = len(be.encode(SUFFIX)) + len(be.encode(PREFIX)) + 3
    assert encoded[0] == stream_len and 0 < encoded[1] <= 3  # a keystroke encodes only the last few tokens
    # the suffix opens the stream: an edit there re-encodes everything after it, the whole prefix included
    assert encoded[5] > len(be.encode("import os\n" + PREFIX + "a +"))


def test_spm_canvas_never_changes_the_context(spm_engine):
    be = spm_engine.backend
    a, _ = _spm_logits(be, PREFIX, SUFFIX, torch.tensor([be.mask_id] * 4), cached=False)
    b, _ = _spm_logits(be, PREFIX, SUFFIX, torch.tensor([be.mask_id, 9, 10, 11]), cached=False)
    assert torch.allclose(a[0], b[0], atol=1e-5)  # slot 0 is read off the causal context alone
    assert not torch.allclose(a[1:], b[1:], atol=1e-3)  # later slots see the canvas


def test_spm_autoregressive_rule_decodes_through_the_stream(spm_engine, engine):
    r = spm_engine.infill(PREFIX, SUFFIX, SampleOptions(rule="ar", max_tokens=10, mode="line"))
    assert "\n" not in r.texts[0] and 1 <= r.stats.forwards <= 10 and r.stats.context_encodes == 1
    # after the first forward every step encodes one new token only
    assert r.stats.context_tokens <= len(spm_engine.backend.encode(PREFIX + SUFFIX)) + 3 + r.stats.forwards
    with pytest.raises(ValueError, match="spm"):
        engine.infill(PREFIX, SUFFIX, SampleOptions(rule="ar"))  # the infill layout has no causal stream


def test_spm_fills_several_holes_one_after_another(spm_engine):
    pieces = ["x = ", "\ny = ", "\nz = ", "\n"]
    res, rec = run(spm_engine, pieces, SampleOptions(max_tokens=6, initial_slots=6))
    assert len(res.texts) == 3 and all(len(slot_pos) <= 6 for _, slot_pos in rec.sessions)
    be = spm_engine.backend
    # the second hole sees the first one filled in its prefix
    second = next(ids for ids, slot_pos in rec.sessions if be.encode("y = ")[0] in ids[: slot_pos[0]])
    assert be.decode(second[1:]).startswith("x = " + res.texts[0])
    assert res.stats.forwards == len(rec.canvases)


def test_speed_bench_compares_diffusion_with_its_ar_twin(spm_dir, capsys):
    from model.reports.bench import run_speed

    figs = run_speed(str(spm_dir), n=2, threads=1)
    for key in ("speedup_vs_ar_block", "speedup_vs_ar_line", "em_diff_block", "em_diff_line"):
        assert isinstance(figs[key], float)
    assert figs["line.ar"]["forwards"] >= 1 and figs["block.diffusion τ=0.9"]["tokens_per_forward"] > 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model"] == figs["model"]


def test_prefix_window_slides_in_steps():
    from model.sampler import PREFIX_SLIDE, prefix_window_start

    assert prefix_window_start(100, 192) == 0
    starts = [prefix_window_start(n, 192) for n in range(193, 193 + 3 * PREFIX_SLIDE)]
    for n, s in zip(range(193, 193 + 3 * PREFIX_SLIDE), starts):
        assert 192 - PREFIX_SLIDE < n - s <= 192
    assert len(set(starts)) == 3  # one move per PREFIX_SLIDE tokens typed, not one per token


def test_lookup_draft_finds_the_latest_earlier_match():
    from model.sampler import lookup_draft

    assert lookup_draft([1, 2, 3, 4, 5, 9, 1, 2, 3], 2) == [4, 5]
    assert lookup_draft([7, 1, 2, 3, 8, 1, 2, 3, 6, 6, 1, 2, 3], 3) == [6, 6, 1]  # the latest match wins
    assert lookup_draft([1, 2, 3], 4) == [] and lookup_draft([5, 6, 7, 8], 4) == []


@pytest.mark.parametrize("draft", ["lookup", "canvas", "both"])
def test_drafts_change_nothing_but_the_forward_count(spm_engine, draft):
    prefix = PREFIX + "    x = add(1, 2)\n    y = add(1, 2)\n    z = add("  # repeats give lookup drafts something to find
    plain = spm_engine.infill(prefix, SUFFIX, SampleOptions(rule="ar", draft="none", max_tokens=24))
    drafted = spm_engine.infill(prefix, SUFFIX, SampleOptions(rule="ar", draft=draft, max_tokens=24))
    assert drafted.texts == plain.texts  # a draft the model rejects changes nothing
    if draft == "lookup":
        assert drafted.stats.forwards <= plain.stats.forwards
