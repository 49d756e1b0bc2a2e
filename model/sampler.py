"""The diffusion sampler: one loop, every option.

A request is a list of fixed text pieces with a hole between each neighbouring pair, and optionally cross-file
context. The sampler hands the segments (model.layout) to the backend, which lays them out for its model; each step
the backend predicts every canvas slot and a commit rule picks which masked slots to fix. Slots the model fills with
the null token are dropped; a hole whose slots all hold content grows (up to max_tokens) because its middle may go on.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass

import msgspec
import torch

from .backends.protocols import CanvasBackend, Session, StreamBackend, TokenPrefixes
from .layout import Segments, clip_context
from .types import BLOCK_SLOTS, LINE_SLOTS, Cancelled, Result, SampleOptions, Stats


def select_commits(conf: torch.Tensor, entropy: torch.Tensor | None, masked: torch.Tensor, opts: SampleOptions) -> torch.Tensor:
    """Which slots to commit this step: conf/entropy/masked (n,) -> bool (n,), never empty if any is masked."""
    chosen = torch.zeros_like(masked)
    if not bool(masked.any()):
        return chosen
    if opts.rule == "threshold":
        chosen = masked & (conf >= opts.threshold)
        chosen[conf.masked_fill(~masked, -1.0).argmax()] = True  # the best one even when none reaches τ
        return chosen
    ent = entropy.masked_fill(~masked, math.inf)
    if opts.rule == "entropy":
        order = ent.argsort()
        n_masked = int(masked.sum())
        # EB rule: take slots in ascending entropy while the running sum stays within γ (at least one)
        csum = ent[order[:n_masked]].cumsum(0)
        k = max(1, int((csum <= opts.gamma).sum()))
        chosen[order[:k]] = True
    else:  # one
        chosen[ent.argmin()] = True
    return chosen


def _pick(logits: torch.Tensor, opts: SampleOptions, gen: torch.Generator | None):
    """logits (n, V) -> token (n,), confidence (n,) = p(token), entropy (n,) in nats (None when the commit rule does
    not read it: on a 64-slot canvas the entropy alone cost ~1 ms of a ~12 ms step)."""
    logits = logits.float()
    entropy = None
    if opts.rule in ("entropy", "one"):
        probs = torch.softmax(logits, dim=-1)
        entropy = -torch.special.xlogy(probs, probs).sum(-1)  # xlogy: 0·log 0 = 0 for banned ids
    if opts.temperature <= 0:
        best, tok = logits.max(-1)
        return tok, (best - torch.logsumexp(logits, dim=-1)).exp(), entropy
    p = torch.softmax(logits / opts.temperature, dim=-1)
    if opts.top_p < 1.0:
        sp, idx = p.sort(-1, descending=True)
        keep = (sp.cumsum(-1) - sp) < opts.top_p  # smallest prefix whose mass reaches top_p
        p = torch.zeros_like(p).scatter(-1, idx, sp * keep)
    tok = torch.multinomial(p, 1, generator=gen).squeeze(-1)
    return tok, (logits.gather(-1, tok[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)).exp(), entropy


PREFIX_SLIDE = 32  # the prefix window moves in steps of this many tokens (it keeps 161-192 of a 192 budget), so a
# cached causal context (spm) survives the keystrokes between steps instead of re-encoding at every token typed


def prefix_window_start(n_tokens: int, budget: int) -> int:
    """First prefix token kept: the window start snaps to multiples of PREFIX_SLIDE from the piece's start."""
    excess = n_tokens - budget
    return 0 if excess <= 0 else -(-excess // PREFIX_SLIDE) * PREFIX_SLIDE


def suffix_anchor(after: str) -> str:
    """The first line with a letter or digit in the text after a hole, stripped ("" when none): a middle that
    writes it as a line of its own has reached the code after the hole (its stream has no stop token)."""
    for line in after.split("\n"):
        if any(c.isalnum() for c in line):
            return line.strip()
    return ""


def cut_text(text: str, mode: str, block_indent: int, first_line_prefix: str = "", anchor: str = "") -> tuple[str, bool]:
    """Apply the mode's end rule: (kept text, whether the rule ended it). Line: the end of the line. Otherwise the
    text ends before a complete line that repeats `anchor` (the code after the hole), and in block mode at the
    first line indented less than `block_indent` after some content."""
    if mode == "line":
        i = text.find("\n")
        return (text, False) if i < 0 else (text[:i], True)
    lines = text.split("\n")
    if anchor:
        pos = 0
        for i, line in enumerate(lines[:-1]):  # the last line may still be incomplete
            if ((first_line_prefix if i == 0 else "") + line).strip() == anchor:
                return text[:pos], True
            pos += len(line) + 1
    if mode == "block":
        pos = len(lines[0]) + 1
        seen_content = bool((first_line_prefix + lines[0]).strip())
        for line in lines[1:-1]:
            if line.strip():
                if seen_content and len(line) - len(line.lstrip(" \t")) < block_indent:
                    return text[: pos - 1], True
                seen_content = True
            pos += len(line) + 1
    return text, False


@dataclass(eq=False)
class _Hole:
    slots: list[int]  # current token per slot (mask id while undecided)
    line_prefix: str = ""  # the text before the hole on its line
    anchor: str = ""  # the first line with content after the hole (suffix_anchor), "" for line completions
    done: bool = False
    text: str = ""
    cut: bool = False


def sample(
    backend: CanvasBackend,
    pieces: list[str],
    opts: SampleOptions,
    cancel: threading.Event | None = None,
    seed: int | None = None,
    context: str = "",
    hint: str | list[str] = "",
) -> Result:
    """Fill the holes between `pieces` (len(pieces) - 1 of them); returns one text per hole and stats. `context`:
    cross-file snippets (the workspace index's), kept up to opts.context_budget tokens; `hint`: copy hints
    (drafts.copy_hints): rule ar verifies the one its model finds likeliest as its first draft."""
    opts.validate()
    if len(pieces) < 2:
        raise ValueError("need at least two pieces (prefix and suffix) around one hole")
    if backend.max_holes is not None and len(pieces) - 1 > backend.max_holes:
        return _sample_in_turn(backend, pieces, opts, cancel, seed, context)
    if opts.rule == "auto":
        line_ar = opts.mode == "line" and backend.streams
        opts = msgspec.structs.replace(opts, rule="ar" if line_ar else "threshold")
    if opts.rule == "ar" and not backend.streams:
        raise ValueError("commit rule 'ar' (autoregressive decoding) needs a Hone model with the spm layout")
    req = _Request(backend, pieces, opts, cancel, seed, context, hint)
    if opts.rule == "ar":
        req.holes[0].text = _sample_ar(req)
        req.holes[0].done = True
    else:
        while True:  # denoise the canvas; grow the holes that filled up with content, and again
            req.check_cancel()
            session = backend.session(req.segments(), opts.cached)
            req.stats.context_encodes += 1
            req.stats.context_tokens += session.encoded
            req.denoise(session)
            if req.stats.deadline_hit or not req.grow():
                break
    return req.result()


class _Request:
    """One sample() call: its token pieces, holes, clock and counters, and the steps that move them on."""

    def __init__(self, backend: CanvasBackend, pieces: list[str], opts: SampleOptions, cancel, seed, context: str = "",
                 hint: str | list[str] = ""):
        self.backend, self.opts, self.cancel = backend, opts, cancel
        self.t0 = time.perf_counter()
        self.deadline = None if opts.deadline_s is None else self.t0 + opts.deadline_s
        self.gen = None if seed is None else torch.Generator().manual_seed(seed)
        toks = [backend.encode(p) for p in pieces]
        toks[0] = toks[0][prefix_window_start(len(toks[0]), opts.prefix_budget) :] if opts.prefix_budget else []
        self.at_end = opts.doc_end and len(toks[-1]) <= opts.suffix_budget
        toks[-1] = toks[-1][: opts.suffix_budget]
        self.toks = toks
        elsewhere = backend.encode(context) if context else []
        self.context = clip_context(elsewhere, opts.context_budget, backend.newline_ids)  # what the model reads
        self.elsewhere = elsewhere  # rule ar's lookup drafts search all of it, read by the model or not
        start = opts.initial_slots or (LINE_SLOTS if opts.mode == "line" else BLOCK_SLOTS)
        self.holes = [_Hole([backend.mask_id] * min(start, opts.max_tokens), before.rsplit("\n", 1)[-1],
                            "" if opts.mode == "line" else suffix_anchor(after)) for before, after in zip(pieces, pieces[1:])]
        self.stats = Stats()
        self.hint = hint  # copy hints (drafts.copy_hints): rule ar drafts the likeliest first

    def segments(self, pieces: list[list[int]] | None = None, holes: list[list[int]] | None = None) -> Segments:
        """The request's segments as they stand (or with other pieces and holes: rule ar's stream)."""
        return Segments(pieces or self.toks, [h.slots for h in self.holes] if holes is None else holes, self.at_end,
                        self.context)

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline

    def finish(self, hole: _Hole, final: bool) -> None:
        """Decide whether a hole is complete: content run before the first null/undecided slot."""
        b = self.backend
        run: list[int] = []
        closed = False
        for t in hole.slots:
            if t == b.mask_id:
                break
            if t in b.null_ids:
                closed = True
                break
            run.append(t)
        else:
            closed = final
        kept, cut = cut_text(b.decode(run), self.opts.mode, self.opts.block_indent, hole.line_prefix, hole.anchor)
        hole.text, hole.cut = kept, cut
        hole.done = closed or cut

    def masked(self, canvas: torch.Tensor) -> torch.Tensor:
        """Undecided slots of open holes (the slots of finished holes are frozen)."""
        masked = canvas == self.backend.mask_id
        for h, sl in _spans(self.holes):
            if h.done:
                masked[sl] = False
        return masked

    def denoise(self, session: Session) -> None:
        """Commit slots step by step until every hole is finished or fully decided (or the deadline passes)."""
        b, opts, holes, stats = self.backend, self.opts, self.holes, self.stats
        last_logits = None
        while any(not h.done for h in holes):
            self.check_cancel()
            canvas = torch.tensor([t for h in holes for t in h.slots])
            masked = self.masked(canvas)
            if not bool(masked.any()):
                break
            if self.past_deadline() and last_logits is not None:  # the best draft: every undecided slot at once
                stats.deadline_hit = True
                _scatter(holes, torch.where(masked, last_logits.argmax(-1), canvas).tolist())
                for h in holes:
                    self.finish(h, final=True)
                break
            logits = session.predict(canvas)  # (n, V)
            logits[:, b.mask_id] = -math.inf  # a committed slot must leave the mask state
            stats.forwards += 1
            last_logits = logits
            tok, conf, ent = _pick(logits, opts, self.gen)
            _no_unsure_empty(logits, tok, conf, masked, holes, b.null_ids, opts.empty_threshold)
            chosen = select_commits(conf, ent, _window(masked, holes, opts.window), opts)
            chosen |= _null_tail(tok, masked, holes, b.null_ids)
            stats.slots += int(chosen.sum())
            stats.log_prob += float(conf[chosen].clamp_min(1e-30).log().sum())
            _scatter(holes, torch.where(chosen, tok, canvas).tolist())
            for h in holes:
                if h.done:
                    continue
                # nulls close a hole: content is left-aligned, so every later slot is unused too
                for i, t in enumerate(h.slots):
                    if t in b.null_ids:
                        h.slots[i + 1 :] = [t] * (len(h.slots) - i - 1)
                        break
                self.finish(h, final=False)

    def grow(self) -> bool:
        """Enlarge the open holes whose slots all hold content (their middle may go on); False if none can."""
        opts, mask = self.opts, self.backend.mask_id
        grow = [h for h in self.holes if not h.done and mask not in h.slots and len(h.slots) < opts.max_tokens]
        for h in grow:
            h.slots += [mask] * min(opts.grow_by, opts.max_tokens - len(h.slots))
            self.stats.grew += 1
        return bool(grow)

    def result(self) -> Result:
        for h in self.holes:
            if not h.done:
                self.finish(h, final=True)
        texts = [h.text for h in self.holes]
        s = self.stats
        s.tokens = sum(len(self.backend.encode(t)) for t in texts)
        s.tokens_per_forward = s.tokens / max(1, s.forwards)
        s.wall_ms = (time.perf_counter() - self.t0) * 1000
        return Result(texts, s)


def _sample_in_turn(backend: CanvasBackend, pieces: list[str], opts: SampleOptions, cancel, seed, context: str) -> Result:
    """Holes one after another, left to right, for backends that take fewer per canvas: each hole sees the
    text before it (earlier holes filled) and the text up to the next hole."""
    t0 = time.perf_counter()
    texts, total = [], Stats()
    before = pieces[0]
    for i, after in enumerate(pieces[1:], 1):
        left = None if opts.deadline_s is None else max(0.0, opts.deadline_s - (time.perf_counter() - t0))
        sub = msgspec.structs.replace(opts, doc_end=opts.doc_end and i == len(pieces) - 1, deadline_s=left)
        r = sample(backend, [before, after], sub, cancel, seed, context)
        texts.append(r.texts[0])
        before += r.texts[0] + after
        total.add(r.stats)
    total.tokens = sum(len(backend.encode(t)) for t in texts)
    total.tokens_per_forward = total.tokens / max(1, total.forwards)
    total.wall_ms = (time.perf_counter() - t0) * 1000
    return Result(texts, total)


LOOKUP_NGRAMS = (3, 2, 1)  # the tail lengths a lookup draft tries, longest first
WEAK_DRAFT = 3  # tokens drafted from a weak source: a 1-token match in the document, or the corpus n-gram table.
# A compiled CPU step costs about the same for 1 to 4 new tokens (4.5 ms on 2 EPYC cores), then more (6.4 ms for
# 6, 7.5 ms for 10): a guess accepted ~0.5-1 token deep earns its rows only when it is short


LOOP_UNIT = 16  # a unit of up to this many tokens ...
LOOP_COPIES = 3  # ... ending the output in at least this many copies ...
LOOP_SPAN = 8  # ... that cover at least this many tokens: the model is looping ("1.0, 1.0, 1.0, 1.0,")


def loop_tail(tokens: list[int]) -> int:
    """When `tokens` end in a loop (LOOP_COPIES or more copies of a unit of 1..LOOP_UNIT tokens, LOOP_SPAN tokens or
    more in all), how many to drop to keep one copy; else 0."""
    for p in range(1, LOOP_UNIT + 1):
        copies = max(LOOP_COPIES, -(-LOOP_SPAN // p))
        if len(tokens) < p * copies:
            break
        unit = tokens[-p:]
        if all(tokens[len(tokens) - (k + 1) * p : len(tokens) - k * p] == unit for k in range(1, copies)):
            return p * (copies - 1)
    return 0


def lookup_draft(tokens: list[int], k: int, ngrams: tuple[int, ...] = LOOKUP_NGRAMS, after: list[int] = ()) -> list[int]:
    """Prompt-lookup draft: the `k` tokens that followed the latest earlier occurrence of the last n tokens, for the
    longest n of `ngrams` that occurs, in `tokens` or else in `after` (the text after the cursor)."""
    for n in ngrams:
        if len(tokens) < n:
            continue
        tail = tokens[-n:]
        for i in range(len(tokens) - n - 1, -1, -1):
            if tokens[i : i + n] == tail:
                return tokens[i + n : i + n + k]
        for i in range(len(after) - n):
            if after[i : i + n] == tail:
                return after[i + n : i + n + k]
    return []


HEAL_TOKENS = 4  # at most this many prefix tokens are backed up to heal the word the cursor is in
_WORD = re.compile(r"[A-Za-z0-9_]+")
_PUNCT = re.compile(r"[!-/:-@\[-^`{-~]+")  # ASCII punctuation but _ (every ASCII character is a token of its own)


def heal_split(texts: list[str], prefix: list[int]) -> int:
    """How many of the prefix's last tokens to back up so that the model, not the cursor, decides where the last
    tokens end (token healing). A word cut by the cursor ("self.appen") is tokenized as the model rarely saw it in
    training ("app" "en" where "append" is one token); so is a run of punctuation ("(" where "()" follows) and a
    space typed after code (the tokenizer joins a space to the word after it: "x =" " 1", never "x = " "1").
    Backed up: the run of word tokens (ASCII letters, digits, _) or of ASCII punctuation tokens the prefix ends in,
    its leading space included, at most HEAL_TOKENS; or one whitespace token after code on the line. Indentation is
    left alone: training cuts middles right after it too, and healing it lost block ES (0.230 -> 0.191 on 40
    held-out blocks). Rule ar then makes its first tokens spell the backed-up text again."""
    if not prefix:
        return 0
    last = texts[prefix[-1]]
    if last.isspace():  # a space after code on the line; not indentation, which training cuts before as well
        inline = last[-1] in " \t" and "\n" not in last and len(prefix) > 1 and not texts[prefix[-2]].endswith("\n")
        return int(inline)
    kind = next((c for c in (_WORD, _PUNCT) if c.fullmatch(last.lstrip(" "))), None)
    if kind is None:
        return 0
    k = 0
    while k < min(HEAL_TOKENS, len(prefix)):
        t = texts[prefix[-1 - k]]
        if not kind.fullmatch(t[1:] if t.startswith(" ") else t):
            break
        k += 1
        if t.startswith(" "):  # the run's first token
            break
    return k


def spell_on(need: str, spelled: str) -> str | None:
    """What is left of `need` (backed-up text still to spell) after a token whose text is `spelled`; None when the
    token does not spell on it."""
    if spelled and spelled.startswith(need):
        return ""
    if spelled and need.startswith(spelled):
        return need[len(spelled):]
    return None


def spell_rows(texts: list[str], draft: list[int], need: str) -> tuple[list[int], list[str]]:
    """Healing with a draft: the draft cut before its first token that does not spell on `need`, and what is left
    to spell before each verified row (len(draft) + 1 of them)."""
    needs = [need]
    for j, d in enumerate(draft):
        if need and (need := spell_on(need, texts[d])) is None:
            return draft[:j], needs
        needs.append(need)
    return draft, needs


def accept_draft(logits: torch.Tensor, best: int, drafted: int, share: float, null_ids: frozenset[int]) -> int:
    """The token kept where the model's pick is `best` and the draft says `drafted`: the draft's when the model gives
    it at least `share` of the best token's probability (share 0: never unless equal), else the model's. A null
    (the end of the middle) is never drafted into the text."""
    if drafted == best or share <= 0 or drafted in null_ids:
        return best
    return drafted if float(logits[drafted] - logits[best]) >= math.log(share) else best


@dataclass(frozen=True)
class Draft:
    """Tokens to verify in the next forward of the stream."""

    tokens: list[int]
    strong: bool = False  # a 3- or 2-token match in the document: its tokens may be kept below the model's best
    forwards: int = 0  # forwards drafting cost (a canvas step)
    first: bool = False  # a copy hint: strong from the completion's first token on


def next_draft(backend: StreamBackend, opts: SampleOptions, so_far: list[int], after: list[int], room: int,
               canvas_after: list[int] | None) -> Draft:
    """The draft chain of greedy rule ar, first source that drafts: a 3- or 2-token match in the document (strong:
    prompt lookup in `so_far`, the prefix and the output, else in `after`, the suffix and the cross-file context:
    names another file defines come in as drafts the model verifies), a 1-token match, the corpus
    n-gram table (weak: WEAK_DRAFT tokens at most), one canvas step after the stream `canvas_after` (None: no canvas
    draft). At most `room` tokens (the verify pass adds the model's own next token)."""
    if opts.temperature > 0 or room <= 0:
        return Draft([])
    k = min(room, opts.draft_tokens)
    if opts.draft in ("lookup", "ngram", "both"):
        if tokens := lookup_draft(so_far, k, LOOKUP_NGRAMS[:-1], after=after):
            return Draft(tokens, strong=True)
        if tokens := lookup_draft(so_far, min(k, WEAK_DRAFT), LOOKUP_NGRAMS[-1:], after=after):
            return Draft(tokens)
        table = backend.drafts if opts.draft != "lookup" else None
        if table is not None and (tokens := table.draft(so_far, min(k, WEAK_DRAFT))):
            return Draft(tokens)
    if canvas_after is not None and opts.draft in ("canvas", "both"):
        # its first slot is read off the stream's last token, so the verify pass always keeps it
        return Draft(backend.canvas_draft(canvas_after, k), forwards=1)
    return Draft([])


def heal_rows(logits: torch.Tensor, needs: list[str], prefixes: TokenPrefixes) -> None:
    """In place, the healing constraint: each row (len(needs), V) with backed-up text left to spell keeps only the
    tokens that spell on it."""
    for row, left in enumerate(needs):
        if left:
            agreeing = torch.tensor(prefixes.agreeing(left))
            logits[row] = torch.full_like(logits[row], -math.inf).index_copy_(0, agreeing, logits[row, agreeing])


def ends_before(backend: StreamBackend, opts: SampleOptions, t: int, out: list[int], n_stream: int, stats: Stats) -> bool:
    """Whether the middle ends before token `t`, which would follow `out` after the first `n_stream` tokens of the
    stream: a null; beyond line completions, a line break where the canvas puts p(null) at or above
    opts.empty_threshold (one forward, counted in `stats`). The stream hardly ever predicts null (it is trained on
    it only where a middle is empty); the canvas is, after every middle."""
    if t in backend.null_ids:
        return True
    if opts.mode != "line" and out and t in backend.newline_ids:
        stats.forwards += 1
        return backend.canvas_null_prob(n_stream, out) >= opts.empty_threshold
    return False


def _chosen_hint(backend: StreamBackend, stream: list[int], healed: str, hints: str | list[str],
                 stats: Stats) -> tuple[list[int], torch.Tensor | None]:
    """The copy hint rule ar drafts first, as tokens, and when several were scored the chosen one's logits (its
    len + 1 rows: what verifying it would compute). Of several, the one the model finds most likely as the rest of
    the line: mean log-probability per token, its end (null or a line break next) included, one stream forward each
    (counted in `stats`; shared beginnings are encoded once)."""
    hints = [h for h in ([hints] if isinstance(hints, str) else hints) if h]
    lines = [backend.encode(healed + h) for h in hints]
    if len(lines) < 2:
        return (lines[0] if lines else []), None
    ends = sorted(backend.null_ids | backend.newline_ids)
    best, best_score, best_logits = [], -math.inf, None
    for line in lines:
        logits, encoded = backend.stream_logits(stream + line, len(line) + 1)  # row j: the token after line[:j]
        logp = logits.float().log_softmax(-1)
        score = float(logp[torch.arange(len(line)), line].sum() + torch.logsumexp(logp[-1, ends], -1)) / (len(line) + 1)
        stats.forwards += 1
        stats.context_tokens += encoded
        if score > best_score:
            best, best_score, best_logits = line, score, logits
    return best, best_logits


def _sample_ar(req: _Request) -> str:
    """Left-to-right decoding through the causal context stream of an spm model, until the model predicts null,
    the mode's end rule cuts, the output loops (one copy of the loop is kept), or (beyond line completions) the
    canvas says the middle ends at a line break. Greedy decoding drafts several tokens (next_draft) and verifies them
    in one forward of the stream (the longest run it agrees with is kept, plus its own next token). Drafts change
    the text only through `draft_accept`: a document draft's token the model finds nearly as likely as its best one
    is kept (0: exactly the greedy text), and through `copy_accept`: the copy hint is the first draft, verified from
    the first token, each of its tokens kept unless the model finds it far less likely than its own."""
    backend: StreamBackend = req.backend  # sample() checked its `streams` answer
    toks, opts, stats, hole = req.toks, req.opts, req.stats, req.holes[0]
    prefix, healed = toks[0], ""  # healing: the text of the backed-up tokens, which the output must spell first
    if opts.heal and (k := heal_split(backend.token_texts, prefix)):
        prefix, healed = prefix[:-k], backend.decode(prefix[-k:])
    need = healed  # what of it is still to spell
    stream = backend.stream(req.segments([prefix, toks[1]], [[]]))
    out: list[int] = []
    text = ""
    stats.context_encodes += 1
    hint, scored = _chosen_hint(backend, stream, healed, req.hint, stats)
    while len(out) < opts.max_tokens:
        req.check_cancel()
        if req.past_deadline() and out:
            stats.deadline_hit = True
            break
        if hint and not out:
            draft = Draft(hint[: opts.max_tokens - 1], strong=True, first=True)
        else:
            draft = next_draft(backend, opts, prefix + out, toks[1] + req.elsewhere, opts.max_tokens - len(out) - 1,
                               None if need else stream + out)
        stats.forwards += draft.forwards
        drafted, needs = spell_rows(backend.token_texts, draft.tokens, need)
        if draft.first and scored is not None:  # choosing the hint already ran this forward
            logits, scored = scored[: len(drafted) + 1], None
        else:
            logits, encoded = backend.stream_logits(stream + out + drafted, len(drafted) + 1)  # (len(drafted) + 1, V)
            stats.context_tokens += encoded
            stats.forwards += 1
        logits[:, backend.mask_id] = -math.inf
        heal_rows(logits, needs, backend.token_prefixes)
        tok, conf, _ = _pick(logits, opts, req.gen)
        if not out and not healed:  # the empty-hole rule of the diffusion path: stay empty only when null is likely enough
            _content_unless_sure(logits, tok, conf, 0, backend.null_ids, opts.empty_threshold)
        ended = False
        for i, t in enumerate(tok.tolist()):  # the verified draft, then the model's own token after it
            if draft.first and i < len(drafted):  # a copy hint, from the first token on
                t = accept_draft(logits[i], t, drafted[i], opts.copy_accept, backend.null_ids)
            elif draft.strong and out and i < len(drafted):  # (the first token of a completion is always the model's own)
                t = accept_draft(logits[i], t, drafted[i], opts.draft_accept, backend.null_ids)
            stats.slots += 1
            if ends_before(backend, opts, t, out, len(stream), stats):
                ended = True
                break
            out.append(t)
            stats.log_prob += float(logits[i].float().log_softmax(-1)[t])
            if need:  # the row was constrained to tokens that spell on it
                need = spell_on(need, backend.token_texts[t])
            if looped := loop_tail(out):  # a loop only grows (lookup drafts even speed it up): one copy, then stop
                del out[-looped:]
            text, cut = cut_text(backend.decode(out)[len(healed):], opts.mode, opts.block_indent, hole.line_prefix,
                                 hole.anchor)
            if cut or looped or len(out) >= opts.max_tokens:
                ended = True
                break
            if i >= len(drafted) or drafted[i] != t:
                break
        if ended:
            break
    return text


def _spans(holes: list[_Hole]):
    """(hole, slice of its slots in the flat canvas) for each hole."""
    i = 0
    for h in holes:
        yield h, slice(i, i + len(h.slots))
        i += len(h.slots)


def _scatter(holes: list[_Hole], flat: list[int]) -> None:
    for h, sl in _spans(holes):
        h.slots = flat[sl]


def _window(masked: torch.Tensor, holes: list[_Hole], window: int) -> torch.Tensor:
    """masked (n,) -> the slots a commit rule may pick: the first `window` undecided slots of each hole."""
    if window <= 0:
        return masked
    allowed = torch.zeros_like(masked)
    for _, sl in _spans(holes):
        idx = masked[sl].nonzero().squeeze(-1)[:window] + sl.start
        allowed[idx] = True
    return allowed


def _no_unsure_empty(logits, tok, conf, masked, holes: list[_Hole], null_ids: frozenset[int], threshold: float) -> None:
    """In place: the undecided first slot of each open hole takes its best content token unless it is sure of null."""
    for h, sl in _spans(holes):
        if not h.done and len(h.slots) and bool(masked[sl.start]):
            _content_unless_sure(logits, tok, conf, sl.start, null_ids, threshold)


def _content_unless_sure(logits, tok, conf, i: int, null_ids: frozenset[int], threshold: float) -> None:
    """The empty-hole rule, in place on slot i of logits (n, V), tok and conf (n,): a pick of null below `threshold`
    becomes the best content token (null is often the argmax at ~10% while content spreads thin)."""
    if int(tok[i]) not in null_ids or float(conf[i]) >= threshold:
        return
    probs = torch.softmax(logits[i].float(), dim=-1)
    probs[list(null_ids)] = 0.0
    conf[i], tok[i] = probs.max(-1)


def _null_tail(tok: torch.Tensor, masked: torch.Tensor, holes: list[_Hole], null_ids: frozenset[int]) -> torch.Tensor:
    """Close a hole in one step when the model predicts null for every undecided slot from its first one on."""
    close = torch.zeros_like(masked)
    for h, sl in _spans(holes):
        m = masked[sl]
        if h.done or not bool(m.any()):
            continue
        first = int(m.nonzero()[0])
        tail_masked = m[first:]
        if all(int(t) in null_ids for t in tok[sl][first:][tail_masked].tolist()) and bool(tail_masked.all()):
            close[sl.start + first : sl.stop] = True
    return close
