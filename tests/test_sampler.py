"""The sampler on a real (tiny, randomly initialised) network: commit rules, windows, nulls, growth,
cancellation, deadlines, several holes, the AR rule and its drafts."""

from __future__ import annotations

import math
import threading

import msgspec
import pytest
import torch

from model.backends import HoneBackend
from model.sampler import cut_text, select_commits
from model.types import Cancelled, SampleOptions
from sampling import PREFIX, SUFFIX, run


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
    """The real backend with the null token forced to win every slot (on the canvas: rule ar is not forced)."""

    streams = False

    def __init__(self, inner: HoneBackend):
        self.inner = inner
        self.forwards = 0
        for name in ("mask_id", "bos_id", "eos_id", "null_ids", "newline_ids", "max_holes", "encode", "decode"):
            setattr(self, name, getattr(inner, name))

    def session(self, seg, cached):
        real, outer = self.inner.session(seg, cached), self
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


def test_a_middle_ends_where_it_writes_the_code_after_the_hole():
    from model.sampler import suffix_anchor

    after = "\n\n    )\n    return total\n"
    assert suffix_anchor(after) == "return total" and suffix_anchor("\n  )\n") == ""
    body = "x = 1\n    y = 2\n    return total\n    more"
    assert cut_text(body, "free", 0, anchor="return total") == ("x = 1\n    y = 2\n", True)
    assert cut_text(body, "block", 4, anchor="return total") == ("x = 1\n    y = 2\n", True)
    assert cut_text("x = 1\n    return total", "free", 0, anchor="return total") == ("x = 1\n    return total", False)  # not a whole line yet
    assert cut_text("total\nz", "free", 0, first_line_prefix="    return ", anchor="return total") == ("", True)
    assert cut_text("return total", "line", 0, anchor="return total") == ("return total", False)  # lines end at their end


def test_spm_autoregressive_rule_decodes_through_the_stream(spm_engine, engine):
    r = spm_engine.infill(PREFIX, SUFFIX, SampleOptions(rule="ar", draft="none", max_tokens=10, mode="line"))
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


def test_prefix_window_slides_in_steps():
    from model.sampler import PREFIX_SLIDE, prefix_window_start

    assert prefix_window_start(100, 192) == 0
    starts = [prefix_window_start(n, 192) for n in range(193, 193 + 3 * PREFIX_SLIDE)]
    for n, s in zip(range(193, 193 + 3 * PREFIX_SLIDE), starts):
        assert 192 - PREFIX_SLIDE < n - s <= 192
    assert len(set(starts)) == 3  # one move per PREFIX_SLIDE tokens typed, not one per token


def test_draft_chain_takes_the_first_source_that_drafts_and_says_its_strength():
    from types import SimpleNamespace

    from model.sampler import WEAK_DRAFT, Draft, next_draft

    table = SimpleNamespace(draft=lambda tokens, k: [70, 71, 72, 73, 74][:k])
    b = SimpleNamespace(drafts=table, canvas_draft=lambda stream, n: [90] * n)
    opts = SampleOptions(draft="both", draft_tokens=5)
    assert next_draft(b, opts, [1, 2, 3, 4, 1, 2], [], 8, [0]) == Draft([3, 4, 1, 2], strong=True)  # 2-token match
    assert next_draft(b, opts, [5, 1, 6, 1], [], 8, [0]) == Draft([6, 1])  # 1-token match: weak, capped
    assert next_draft(b, opts, [5, 6], [], 8, [0]) == Draft([70, 71, 72][:WEAK_DRAFT])  # the corpus table
    assert next_draft(b, SampleOptions(draft="lookup"), [5, 6], [], 8, [0]) == Draft([])  # lookup: no table
    assert next_draft(b, SampleOptions(draft="canvas", draft_tokens=5), [5, 6], [], 3, [0]) == Draft([90] * 3, forwards=1)
    assert next_draft(b, SampleOptions(draft="canvas"), [5, 6], [], 3, None) == Draft([])  # healing: no canvas draft
    assert next_draft(b, SampleOptions(draft="both", temperature=0.5), [1, 2, 1], [], 8, [0]) == Draft([])  # sampling
    assert next_draft(b, opts, [1, 2, 1], [], 0, [0]) == Draft([])  # no room left


def test_heal_rows_keep_only_tokens_that_spell_on_what_is_left():
    from types import SimpleNamespace

    from model.sampler import heal_rows

    logits = torch.zeros(3, 6)
    heal_rows(logits, ["ab", "", "b"], SimpleNamespace(agreeing=lambda need: [1, 2] if need == "ab" else [4]))
    assert torch.isinf(logits[0, [0, 3, 4, 5]]).all() and (logits[0, [1, 2]] == 0).all()
    assert (logits[1] == 0).all() and logits[2].isfinite().tolist() == [False] * 4 + [True, False]


def test_lookup_draft_finds_the_latest_earlier_match():
    from model.sampler import lookup_draft

    assert lookup_draft([1, 2, 3, 4, 5, 9, 1, 2, 3], 2) == [4, 5]
    assert lookup_draft([7, 1, 2, 3, 8, 1, 2, 3, 6, 6, 1, 2, 3], 3) == [6, 6, 1]  # the latest match wins
    assert lookup_draft([1, 2, 3], 4) == [] and lookup_draft([5, 6, 7, 8], 4) == []
    assert lookup_draft([4, 2, 3, 9, 5, 2, 3], 2) == [9, 5]  # no earlier (5, 2, 3): the longest tail that recurs
    assert lookup_draft([8, 3, 7, 1, 3], 2) == [7, 1]  # down to the last token alone
    assert lookup_draft([4, 5, 6], 2, after=[0, 5, 6, 7, 8]) == [7, 8]  # the text after the cursor, too
    assert lookup_draft([5, 6, 1, 0, 5, 6], 1, after=[6, 2]) == [1]  # a longer tail wins, wherever it is
    assert lookup_draft([1, 6, 4, 9, 6], 1, after=[4, 9, 6, 3]) == [3]


def test_a_loop_keeps_one_copy():
    from model.sampler import LOOP_COPIES, LOOP_SPAN, LOOP_UNIT, loop_tail

    unit = [5, 6, 7, 8]
    assert loop_tail([1, 2] + unit * LOOP_COPIES) == 4 * (LOOP_COPIES - 1)  # drop all but one copy
    assert loop_tail([1, 2] + unit * (LOOP_COPIES - 1)) == 0  # not yet a loop
    assert loop_tail([3] * LOOP_SPAN) == LOOP_SPAN - 1  # short units need more copies
    assert loop_tail([1] + [3] * (LOOP_SPAN - 1)) == 0
    long_unit = list(range(10, 10 + LOOP_UNIT + 1))
    assert loop_tail(long_unit * LOOP_COPIES) == 0  # units longer than LOOP_UNIT are not looked for
    assert loop_tail([7, 5, 6, 5, 6, 6, 5, 6]) == 0


@pytest.mark.parametrize("draft", ["lookup", "ngram", "canvas", "both"])
def test_drafts_change_nothing_but_the_forward_count(spm_engine, draft):
    prefix = PREFIX + "    x = add(1, 2)\n    y = add(1, 2)\n    z = add("  # repeats give lookup drafts something to find
    plain = spm_engine.infill(prefix, SUFFIX, SampleOptions(rule="ar", draft="none", max_tokens=24))
    drafted = spm_engine.infill(prefix, SUFFIX, SampleOptions(rule="ar", draft=draft, max_tokens=24, draft_accept=0.0))
    assert drafted.texts == plain.texts  # a draft the model rejects changes nothing
    if draft == "lookup":
        assert drafted.stats.forwards <= plain.stats.forwards


def test_a_drafted_token_is_kept_only_when_the_model_finds_it_likely_enough():
    from model.sampler import accept_draft

    logits = torch.log(torch.tensor([0.5, 0.3, 0.04, 0.16]))  # the model's best: token 0
    assert accept_draft(logits, 0, 1, 0.5, frozenset()) == 1  # 0.3 >= 0.5 * 0.5
    assert accept_draft(logits, 0, 3, 0.5, frozenset()) == 0  # 0.16 < 0.25
    assert accept_draft(logits, 0, 3, 0.1, frozenset()) == 3
    assert accept_draft(logits, 0, 2, 0.1, frozenset()) == 0  # 0.04 < 0.05
    assert accept_draft(logits, 0, 1, 0.0, frozenset()) == 0  # share 0: only the model's own token
    assert accept_draft(logits, 0, 1, 0.1, frozenset({1})) == 0  # a null is never drafted into the text
    logits[3] = -math.inf  # a banned id (the mask)
    assert accept_draft(logits, 0, 3, 1e-9, frozenset()) == 0


def test_document_drafts_kept_below_the_best_token_still_decode_consistently(spm_engine):
    """A share of 1 keeps only ties: the greedy text; a tiny share keeps (nearly) every document draft: no more
    forwards than without drafts."""
    prefix = PREFIX + "    x = add(1, 2)\n    y = add(1, 2)\n    z = add("
    plain = spm_engine.infill(prefix, SUFFIX, SampleOptions(rule="ar", draft="none", max_tokens=24))
    strict = spm_engine.infill(prefix, SUFFIX, SampleOptions(rule="ar", draft="lookup", max_tokens=24, draft_accept=1.0))
    loose = spm_engine.infill(prefix, SUFFIX, SampleOptions(rule="ar", draft="lookup", max_tokens=24, draft_accept=1e-6))
    assert strict.texts == plain.texts
    assert loose.stats.forwards <= plain.stats.forwards
    with pytest.raises(ValueError, match="draft_accept"):
        SampleOptions(draft_accept=1.5).validate()


def test_auto_rule_is_ar_for_spm_lines_and_threshold_otherwise(spm_engine, engine):
    for eng, mode, same_as in ((spm_engine, "line", "ar"), (spm_engine, "free", "threshold"), (engine, "line", "threshold")):
        auto = eng.infill(PREFIX, SUFFIX, SampleOptions(mode=mode, max_tokens=12))
        explicit = eng.infill(PREFIX, SUFFIX, SampleOptions(mode=mode, max_tokens=12, rule=same_as))
        assert auto.texts == explicit.texts and auto.stats.forwards == explicit.stats.forwards


def test_heal_split_backs_up_the_word_the_cursor_is_in():
    from model.sampler import HEAL_TOKENS, heal_split

    texts = ["", "self", ".", "app", "en", " py", "gmen", " ", "\n", "x1", "_", "(", "\n    ", " [", ":", "\n\n"]
    assert heal_split(texts, [1, 2, 3, 4]) == 2  # "self.appen": back to the "."
    assert heal_split(texts, [2, 5, 6]) == 2  # ".pygmen": " py" opens the word, its space included
    assert heal_split(texts, [11] + [3, 10, 9, 4, 4]) == HEAL_TOKENS  # a long run: at most HEAL_TOKENS
    assert heal_split(texts, [0, 9]) == 1 and heal_split(texts, []) == 0
    assert heal_split(texts, [1, 2]) == 1 and heal_split(texts, [1, 13, 11]) == 2  # punctuation: "." / " [("
    assert heal_split(texts, [3, 7]) == 1 and heal_split(texts, [14, 7]) == 1  # a space typed after code
    assert heal_split(texts, [14, 12]) == 0 and heal_split(texts, [8, 7]) == 0  # indentation stays
    assert heal_split(texts, [1, 8]) == 0 and heal_split(texts, [1, 15]) == 0  # line breaks stay
    assert heal_split(texts + ["→"], [1, 16]) == 0  # not ASCII: its bytes may not be tokens that spell it


def test_token_prefixes_name_the_tokens_that_agree_with_a_text():
    from model.tokenizer import TokenPrefixes

    index = TokenPrefixes(["", "a", "ab", "abc", "b", " ab", "abd", "ac"])
    assert sorted(index.agreeing("ab")) == [1, 2, 3, 6]  # spell all of "ab" (ab, abc, abd) or start it (a)
    assert sorted(index.agreeing(" a")) == [5] and index.agreeing("z") == []


def test_healing_spells_the_cut_word_before_the_completion(spm_engine):
    """A prefix ending inside a word: the stream stops before the word's tokens, the first decoded tokens spell
    the word again, and the completion is what follows it."""
    from model.sampler import heal_split

    be = spm_engine.backend
    prefix = PREFIX + "    value = comput"
    toks = be.encode(prefix)
    k = heal_split(be.token_texts, toks)
    word = be.decode(toks[-k:])
    assert k >= 1 and " comput".endswith(word)
    streams, decoded = [], []
    real_logits, real_decode = be.stream_logits, be.decode

    def logits_spy(stream, last=1):
        streams.append(list(stream))
        return real_logits(stream, last)

    def decode_spy(ids):
        decoded.append(real_decode(ids))
        return decoded[-1]

    be.stream_logits, be.decode = logits_spy, decode_spy
    try:
        r = spm_engine.infill(prefix, SUFFIX, SampleOptions(rule="ar", mode="line", max_tokens=12, heal=True))
    finally:
        be.stream_logits, be.decode = real_logits, real_decode
    assert streams[0][-(len(toks) - k):] == toks[:-k]  # the stream ends where the word starts
    out = decoded[-1]  # the sampler's last look at its output tokens
    assert out.startswith(word) and out[len(word):].startswith(r.texts[0])  # the completion goes on from the cursor


def test_a_draft_while_healing_keeps_only_tokens_that_spell_the_cut_text():
    from model.sampler import spell_rows

    texts = ["", "app", "append", "en", "d", "(", "apple"]
    assert spell_rows(texts, [2, 5], "appen") == ([2, 5], ["appen", "", ""])  # "append" spells it all at once
    assert spell_rows(texts, [1, 3, 4], "appen") == ([1, 3, 4], ["appen", "en", "", ""])
    assert spell_rows(texts, [6, 5], "appen") == ([], ["appen"])  # "apple" does not spell "appen"
    assert spell_rows(texts, [1, 0], "appen") == ([1], ["appen", "en"])  # a special token spells nothing
    assert spell_rows(texts, [5], "") == ([5], ["", ""])  # nothing to heal: the draft as it is


def test_a_copy_hint_is_verified_from_the_first_token(spm_engine):
    """copy_accept 0 keeps exactly the greedy text whatever the hint; a share of ~0 takes the hint whole (the random
    network finds none of it impossible); a hint never costs a forward beyond the one that verifies it."""
    prefix, hint = PREFIX + "    total = ", "sum(values) + offset"
    line = SampleOptions(rule="ar", mode="line", max_tokens=24, draft="none")
    plain = spm_engine.fill([prefix, SUFFIX], line)
    strict = spm_engine.fill([prefix, SUFFIX], msgspec.structs.replace(line, copy_accept=0.0), hint=hint)
    assert strict.texts == plain.texts
    loose = spm_engine.fill([prefix, SUFFIX], msgspec.structs.replace(line, copy_accept=1e-30), hint=hint)
    assert loose.texts[0].startswith(hint)
    assert loose.stats.forwards <= plain.stats.forwards
    with pytest.raises(ValueError, match="copy_accept"):
        SampleOptions(copy_accept=-0.1).validate()


def test_of_several_copy_hints_the_model_drafts_its_likeliest(spm_engine):
    """With copy_accept ~0 the first hint drafted is taken whole: it must be the one with the highest mean
    log-probability per token (its end included) under the stream, scored here independently; one hint costs no
    scoring forward, each of several one (the chosen one's is its verifying forward)."""
    from model.sampler import _Request

    prefix = PREFIX + "    total = "
    hints = ["sum(values) + offset", "len(values)", "values[0] * 2", "offset"]
    line = SampleOptions(rule="ar", mode="line", max_tokens=24, draft="none", copy_accept=1e-30, heal=False)
    backend = spm_engine.backend
    req = _Request(backend, [prefix, SUFFIX], line, None, None)
    stream = backend.stream(req.segments([req.toks[0], req.toks[1]], [[]]))
    ends = sorted(backend.null_ids | backend.newline_ids)

    def mean_logprob(text):
        ids = backend.encode(text)
        logp = backend.stream_logits(stream + ids, len(ids) + 1)[0].float().log_softmax(-1)
        return (sum(float(logp[j, t]) for j, t in enumerate(ids)) + float(logp[-1, ends].logsumexp(-1))) / (len(ids) + 1)

    best = max(hints, key=mean_logprob)
    got = spm_engine.fill([prefix, SUFFIX], line, hint=hints)
    assert got.texts[0].startswith(best)
    one = spm_engine.fill([prefix, SUFFIX], line, hint=[best])
    assert one.texts == got.texts and got.stats.forwards == one.stats.forwards + len(hints) - 1  # (its verify is reused)


@pytest.mark.parametrize("rule", ["ar", "threshold"])
def test_results_say_how_probable_the_model_found_them(spm_engine, rule):
    """Stats.log_prob: the log-probability of what was decided, finite and ≤ 0, lower for more tokens decided."""
    short = spm_engine.fill([PREFIX, SUFFIX], SampleOptions(rule=rule, mode="free", max_tokens=2, draft="none"))
    long = spm_engine.fill([PREFIX, SUFFIX], SampleOptions(rule=rule, mode="free", max_tokens=12, draft="none"))
    for r in (short, long):
        assert math.isfinite(r.stats.log_prob) and r.stats.log_prob <= 0
    assert long.stats.log_prob <= short.stats.log_prob + 1e-4 or long.stats.slots <= short.stats.slots
