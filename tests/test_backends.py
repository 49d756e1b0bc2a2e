"""Backends: Hone's exact context caches (both layouts) against full recomputes, and third-party adapters."""

from __future__ import annotations

import json

import pytest
import torch

from model.backends import SWITCH_SHARED, CanvasBackend
from model.backends.stream import _shared
from model.checkpoint import CheckpointError
from model.engine import Engine
from model.layout import Segments
from model.testing import make_tiny_hf_model
from model.types import SampleOptions
from sampling import PREFIX, SUFFIX, protocol_members


@pytest.mark.parametrize("rule", ["threshold", "one"])
def test_cached_equals_uncached(engine, rule):
    a = engine.infill(PREFIX, SUFFIX, SampleOptions(rule=rule, cached=True, max_tokens=16))
    b = engine.infill(PREFIX, SUFFIX, SampleOptions(rule=rule, cached=False, max_tokens=16))
    assert a.texts == b.texts and a.stats.forwards == b.stats.forwards


def test_cached_logits_match_full_forward(engine):
    be = engine.backend
    seg = Segments([be.encode(PREFIX), be.encode(SUFFIX)], [[be.mask_id] * 6])
    canvas = torch.tensor([be.mask_id, 5, 6, be.mask_id, 7, be.mask_id])
    c = be.session(seg, True).predict(canvas)
    u = be.session(seg, False).predict(canvas)
    assert torch.allclose(c, u, atol=1e-4)


def _spm_logits(be, prefix: str, suffix: str, canvas: torch.Tensor, cached: bool):
    seg = Segments([be.encode(prefix), be.encode(suffix)], [[be.mask_id] * len(canvas)], doc_end=True)
    sess = be.session(seg, cached)
    return sess.predict(canvas), sess.encoded


def test_spm_cached_stream_equals_recompute_when_the_retrieved_context_changes(spm_dir):
    """Cross-file context opens the stream: another retrieved set re-encodes from where they differ, exactly."""
    be = Engine.load(spm_dir, "cpu", threads=1).backend
    canvas = torch.tensor([be.mask_id, 5, be.mask_id, 7])
    pre, suf = be.encode(PREFIX), be.encode(SUFFIX)
    contexts = ["# a.py\ndef helper(x): ...\n", "# a.py\ndef helper(x): ...\n\n# b.py\nLIMIT = 3\n", "", "# c.py\nclass C: ...\n"]
    for ctx in contexts:
        seg = Segments([pre, suf], [[be.mask_id] * len(canvas)], doc_end=True, context=be.encode(ctx))
        cached = be.session(seg, True)
        fresh = be.session(seg, False)
        assert torch.allclose(cached.predict(canvas), fresh.predict(canvas), atol=1e-4)
    # the last one shares only its opening tokens with the streams before: encoded afresh, not as one long extension
    assert cached.encoded == len(fresh.stream) and SWITCH_SHARED < len(fresh.stream)


def test_spm_cached_context_equals_recompute_after_every_kind_of_edit(spm_dir):
    be = Engine.load(spm_dir, "cpu", threads=1).backend  # its own engine: the first request meets an empty cache
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


def test_spm_streams_set_aside_by_a_jump_resume_on_return(spm_dir):
    """A jump to another place sets the stream aside; going back resumes it without encoding (SAVED_STREAMS kept,
    the least recent dropped), and every answer equals a recompute."""
    from model.backends import SAVED_STREAMS

    be = Engine.load(spm_dir, "cpu", threads=1).backend
    canvas = torch.tensor([be.mask_id, 5, be.mask_id, be.mask_id])
    places = [(f"import mod{i}\n" + PREFIX * 2, f"\n\nclass Place{i}:\n    pass\n" + SUFFIX) for i in range(SAVED_STREAMS + 2)]
    assert len(be.encode(places[0][1])) > SWITCH_SHARED  # the stream opens with the suffix: a jump shares ~nothing

    def visit(i: int) -> int:
        cached, n = _spm_logits(be, *places[i], canvas, cached=True)
        full, _ = _spm_logits(be, *places[i], canvas, cached=False)
        assert torch.allclose(cached, full, atol=1e-4), i
        return n

    visit(0)
    first = visit(1)
    assert first > SWITCH_SHARED and visit(0) == 0 and visit(1) == 0  # back and forth: both resumed
    assert _spm_logits(be, places[0][0] + "x = 1", places[0][1], canvas, cached=True)[1] <= 5  # typing at 0 again
    for i in range(2, SAVED_STREAMS + 2):
        visit(i)
    assert len(be.context.saved) == SAVED_STREAMS
    stats = be.context.stats()  # what hone/stats reports
    assert stats["entries"] == stats["maxEntries"] and 0 < stats["bytes"] <= stats["maxBytes"]
    assert visit(1) == first  # used longest ago: dropped, encoded afresh


def test_a_jump_sharing_a_few_tokens_with_a_saved_stream_is_encoded_afresh(spm_dir):
    """A saved stream is resumed only for a run of at least SWITCH_SHARED tokens: one that shares its [BOS] and a
    line break or two with the new place is left aside, and the new stream is encoded afresh (not run as one long
    extension, which no compiled step takes), with the same answer as a recompute."""
    be = Engine.load(spm_dir, "cpu", threads=1).backend
    canvas = torch.tensor([be.mask_id, 5, be.mask_id, be.mask_id])
    a = ("import a\n" + PREFIX * 2, "\n\nclass Place:\n    pass\n" + SUFFIX)
    b = ("import b\n" + PREFIX * 2, "x = 1\n" + SUFFIX)
    c = ("import c\n" + PREFIX * 2, "\n\nclass Other:\n    pass\n" + SUFFIX)
    _spm_logits(be, *a, canvas, cached=True)
    _spm_logits(be, *b, canvas, cached=True)  # a set aside
    tc = be.encode(c[1])
    shares_a = _shared(be.encode(a[1]), tc)  # the suffixes open the streams
    assert 1 <= shares_a < SWITCH_SHARED and be.encode(b[1])[0] != tc[0]  # more in common with a than with b
    calls = []
    encode, extend = be.context.encode, be.context.extend
    be.context.encode = lambda ids, pos: calls.append(("encode", ids.shape[1])) or encode(ids, pos)
    be.context.extend = lambda ids, pos, past: calls.append(("extend", ids.shape[1])) or extend(ids, pos, past)
    cached, n = _spm_logits(be, *c, canvas, cached=True)
    assert calls[0] == ("encode", n) and not any(kind == "extend" for kind, _ in calls)
    assert torch.allclose(cached, _spm_logits(be, *c, canvas, cached=False)[0], atol=1e-4)
    assert len(be.context.saved) == 2  # a and b both kept aside


def test_canvas_end_probability_is_the_canvas_view_while_the_stream_runs_on(spm_engine):
    """Autoregressive decoding asks the canvas whether the middle ends after its tokens, with the stream already
    holding them: the answer is the diffusion path's p(null) for that slot, and the stream stays as it was."""
    be = spm_engine.backend
    content = be.encode("x = a + b")
    logits, _ = _spm_logits(be, PREFIX, SUFFIX, torch.tensor(content + [be.mask_id]), cached=False)
    logits[:, be.mask_id] = -float("inf")
    want = float(torch.softmax(logits[-1], -1)[list(be.null_ids)].sum())
    stream = be.stream(Segments([be.encode(PREFIX), be.encode(SUFFIX)], [[]], doc_end=True))
    be.stream_logits(stream + content + [7, 8])  # the stream has run on: decoded tokens and a draft
    kept = be.context.h.clone()
    assert be.canvas_null_prob(len(stream), content) == pytest.approx(want, abs=1e-4)
    assert torch.equal(be.context.h, kept)


def test_spm_canvas_never_changes_the_context(spm_engine):
    be = spm_engine.backend
    a, _ = _spm_logits(be, PREFIX, SUFFIX, torch.tensor([be.mask_id] * 4), cached=False)
    b, _ = _spm_logits(be, PREFIX, SUFFIX, torch.tensor([be.mask_id, 9, 10, 11]), cached=False)
    assert torch.allclose(a[0], b[0], atol=1e-5)  # slot 0 is read off the causal context alone
    assert not torch.allclose(a[1:], b[1:], atol=1e-3)  # later slots see the canvas


def test_compiled_steps_equal_eager(spm_dir):
    compiled, eager = Engine.load(spm_dir, "cpu", threads=1), Engine.load(spm_dir, "cpu", threads=1)
    assert compiled.compile() == "compiled"
    be = compiled.backend
    edits = ((PREFIX, SUFFIX, 6), (PREFIX + "a", SUFFIX, 6), (PREFIX + "a + b", SUFFIX, 11),  # typing: compiled extension
             (PREFIX + "a +", SUFFIX, 1), ("x = 1\n", "", 3))
    for prefix, suffix, n in edits:
        canvas = torch.tensor([be.mask_id, 5, be.mask_id, 7, be.mask_id, 9, 4, be.mask_id, 8, 8, 3][:n])
        got, _ = _spm_logits(be, prefix, suffix, canvas, cached=True)
        want, _ = _spm_logits(be, prefix, suffix, canvas, cached=False)  # the eager full forward
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    for rule in ("threshold", "ar"):
        opts = SampleOptions(max_tokens=24, mode="block", rule=rule)
        assert compiled.infill(PREFIX, SUFFIX, opts).texts == eager.infill(PREFIX, SUFFIX, opts).texts
    # requests together run in turn through the compiled steps (an eager padded batch is slower), answered as alone
    assert eager.backend.batches and not be.batches
    calls = [([PREFIX, SUFFIX], SampleOptions(max_tokens=12, rule="ar"), None, None), (["x = ", "\n"], opts, None, None)]
    assert [r.texts for r in compiled.fill_many(calls)] == [eager.fill(*c[:2]).texts for c in calls]


@pytest.mark.parametrize("style,shifted", [("llada", False), ("dream", True)])
def test_third_party_adapters(tmp_path, style, shifted):
    folder = make_tiny_hf_model(tmp_path / style, style)
    eng = Engine.load(folder, "cpu", style=style)
    assert eng.backend.shifted is shifted
    assert eng.backend.mask_id == eng.backend.tok.mask_token_id
    assert all(hasattr(eng.backend, m) for m in protocol_members(CanvasBackend))
    assert eng.backend.max_len == 512 and not eng.backend.streams and not eng.backend.batches  # (its config's)
    assert eng.backend.network is None and eng.backend.default_options() == SampleOptions()
    res = eng.infill("def f(x):\n    return ", "\n", SampleOptions(max_tokens=8, mode="line"))
    assert "\n" not in res.texts[0] and res.stats.forwards >= 1
    bos = [eng.backend.bos_id] if eng.backend.bos_id is not None else []
    sess = eng.backend.session(Segments([[2, 3], [4]], [[9, 9]]), cached=False)
    first = len(bos) + 2  # the first slot's position
    assert sess.src.tolist() == ([first - 1, first] if shifted else [first, first + 1])


def test_remote_code_needs_opt_in(tmp_path):
    folder = make_tiny_hf_model(tmp_path / "remote", "dream")
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="evil-diffusion", architectures=["EvilLM"])  # not a family Hone runs natively
    cfg["auto_map"] = {"AutoModel": "modeling_evil.Evil"}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(CheckpointError, match="trustRemoteCode"):
        Engine.load(folder, "cpu", style="dream")
