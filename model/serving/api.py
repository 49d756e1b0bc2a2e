"""The team service's HTTP API: request and answer structs, their checks, and the engine call each request becomes.

Torch- and Ray-free: the deployment (`app.py`) and the language server's client (`lsp_server/remote.py`) share it.
Three ways to ask for a completion (docs/serve.md has examples):

  POST /infill          llama.cpp's infill: input_prefix, input_suffix, n_predict, temperature… → content, timings
  POST /v1/completions  OpenAI's (legacy) completions with `suffix` for fill-in-the-middle
  POST /hone/fill       Hone's own: the text pieces around one or more holes and full SampleOptions → texts, stats

A body that does not parse or asks for something the model cannot do raises `BadRequest` (400 with the reason).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal, TypeVar

import msgspec

from ..drafts import copy_hints
from ..types import MAX_HOLES, MAX_TOKENS, MODES, Engine, Limits, Result, SampleOptions, Stats
from .batch import CLIENT_GONE, DEADLINE_PASSED, Job, Outcome

MAX_BODY_BYTES = 4 << 20  # larger bodies get 413 unread (the model keeps ~8k characters around a cursor anyway)
MAX_DRAFT_TOKENS = 64  # longest draft the ar rule may verify in one forward
MAX_DEADLINE_S = 60.0  # no request holds a replica's engine longer than this, whatever it asks
MAX_TOKEN_TEXTS = 64  # texts one /hone/tokens call may count
OPENAI_MAX_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions

T = TypeVar("T")
Mode = Literal[MODES]
Temperature = Annotated[float, msgspec.Meta(ge=0.0, le=10.0)]
TopP = Annotated[float, msgspec.Meta(gt=0.0, le=1.0)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=3_600_000)]


class BadRequest(ValueError):
    """A request the service answers with 400 and this message."""


# ---- requests --------------------------------------------------------------------------------------------


class ExtraChunk(msgspec.Struct):
    """llama.cpp's input_extra item: a snippet of another file (repository context)."""

    filename: str = ""
    text: str = ""


def extra_context(chunks: list[ExtraChunk]) -> str:
    """input_extra as Hone's cross-file context: each chunk under a `# filename` line, as the workspace index
    writes its own (model.workspace)."""
    from ..workspace import chunk_block

    return "\n\n".join(chunk_block(c.filename, c.text.rstrip()) for c in chunks if c.text.strip())


class InfillRequest(msgspec.Struct, kw_only=True):
    """llama.cpp's POST /infill. Fields this service does not use (cache_prompt, samplers…) are accepted and
    ignored; input_extra is the model's cross-file context (kept up to its context budget)."""

    input_prefix: str = ""  # the text before the cursor
    input_suffix: str = ""  # the text after it
    prompt: str = ""  # llama.cpp: the start of the middle, already typed: it joins the prefix and is not repeated
    n_predict: Annotated[int, msgspec.Meta(ge=-1, le=MAX_TOKENS)] = -1  # most tokens; -1 = the model's default
    temperature: Temperature | None = None  # None = the engine's default (greedy)
    top_p: TopP | None = None
    seed: int | None = None  # negative (llama.cpp's -1) = unseeded
    stream: bool = False  # not supported: true is refused
    t_max_predict_ms: Millis | None = None  # llama.cpp's time limit: taken as the deadline when deadline_ms is unset
    deadline_ms: Millis | None = None  # wall-clock budget from arrival; past it the best draft comes back
    mode: Mode = "free"  # Hone: free | line (stop at the end of the line) | block (stop when the block dedents)
    doc_end: bool = False  # Hone: input_suffix reaches the end of the file (the model then sees the end)
    input_extra: list[ExtraChunk] = []  # llama.cpp: chunks of other files ({filename, text}), most useful first


class CompletionRequest(msgspec.Struct, kw_only=True):
    """OpenAI's POST /v1/completions: `prompt` is the text before the cursor, `suffix` the text after it."""

    prompt: str | list[str] = ""  # a list must hold exactly one prompt
    suffix: str | None = None
    model: str | None = None  # informational: the service serves one model
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=MAX_TOKENS)] = OPENAI_MAX_TOKENS
    temperature: Temperature | None = None  # None = the engine's default (greedy)
    top_p: TopP | None = None
    seed: int | None = None
    n: int = 1  # only 1
    stream: bool = False  # not supported
    echo: bool = False  # prepend the prompt to the text
    stop: str | list[str] | None = None  # the text ends before the first of these
    logprobs: int | None = None  # not supported
    user: str | None = None
    deadline_ms: Millis | None = None  # Hone: as for /infill
    mode: Mode = "free"
    doc_end: bool = False


class FillRequest(msgspec.Struct, kw_only=True):
    """Hone's POST /hone/fill: fill the len(pieces) - 1 holes between the pieces in one pass."""

    pieces: list[str]
    options: SampleOptions | None = None  # None = the model's defaults (GET /hone/info has them)
    seed: int | None = None
    context: str = ""  # cross-file context from the client's workspace (kept up to options.context_budget tokens)
    hint: str | list[str] = ""  # copy hints (model.drafts.copy_hints over the client's document and workspace): rule
    # ar drafts the one its model finds most likely first


class TokensRequest(msgspec.Struct, kw_only=True):
    """POST /hone/tokens: the token count of each text, with the served model's tokenizer."""

    texts: list[str]


# ---- answers ---------------------------------------------------------------------------------------------


class Timings(msgspec.Struct):
    """llama.cpp's timing names. Hone encodes the context inside its denoising loop: that time is part of
    predicted_ms, and prompt_ms stays 0."""

    prompt_n: int  # context tokens the model encoded (an spm model encodes only what changed since its last request)
    prompt_ms: float
    predicted_n: int  # tokens in the answer
    predicted_ms: float  # the engine's time on this request
    predicted_per_second: float
    queue_ms: float  # Hone: time the request waited for the replica's engine


class InfillAnswer(msgspec.Struct):
    content: str
    model: str
    tokens_predicted: int
    tokens_evaluated: int
    stop_type: str  # eos: the model ended the middle; limit: n_predict or the deadline cut it
    timings: Timings
    hone: Stats  # the engine's counters: forwards, tokens per forward, deadline_hit…
    stop: bool = True


class Choice(msgspec.Struct):
    text: str
    finish_reason: str  # stop | length
    index: int = 0
    logprobs: None = None


class Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionAnswer(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    object: str = "text_completion"


class FillAnswer(msgspec.Struct):
    texts: list[str]
    stats: Stats
    model: str
    queue_ms: float = 0.0


class TokensAnswer(msgspec.Struct):
    counts: list[int]


class Info(msgspec.Struct):
    """GET /hone/info: what a client needs to plan requests for the served model."""

    model: str  # the model folder's name
    device: str  # where a replica runs it
    max_len: int | None  # most tokens one canvas (context + slots) may hold
    default_options: SampleOptions  # sampling defaults with the model's own token budgets
    max_tokens: int = MAX_TOKENS  # most slots one hole may ask for
    max_holes: int = MAX_HOLES  # most holes in one request

    @classmethod
    def of(cls, engine: Engine) -> Info:
        lim = engine.limits
        return cls(engine.name, str(engine.device), lim.max_len, engine.default_options(), lim.max_tokens, lim.max_holes)

    def limits(self) -> Limits:
        """The limits the service's engine fits requests to (a client's Engine.fit answers as the service would)."""
        return Limits(max_len=self.max_len, max_tokens=self.max_tokens, max_holes=self.max_holes)


class Health(msgspec.Struct):
    status: str  # "ok"
    model: str


class ErrorBody(msgspec.Struct):
    message: str
    type: str  # invalid_request_error | authentication_error | not_found_error | timeout_error | server_error
    code: int


class ErrorAnswer(msgspec.Struct):
    """The shape llama.cpp's server and OpenAI both use: {"error": {"message", "type", "code"}}."""

    error: ErrorBody


ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               405: "invalid_request_error", 413: "invalid_request_error", CLIENT_GONE: "cancelled",
               DEADLINE_PASSED: "timeout_error"}


def error_answer(status: int, message: str) -> ErrorAnswer:
    return ErrorAnswer(ErrorBody(message, ERROR_TYPES.get(status, "server_error"), status))


# ---- requests to engine calls ----------------------------------------------------------------------------


def decode(body: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.DecodeError as e:  # validation errors included: "Expected `int`, got `str` - at `$.n_predict`"
        raise BadRequest(f"invalid {kind.__name__} body: {e}") from None


def check_options(opts: SampleOptions) -> None:
    """The engine's own checks, and the limits a shared service puts on one request."""
    try:
        opts.validate()
    except ValueError as e:
        raise BadRequest(f"options: {e}") from None
    if opts.grow_by > MAX_TOKENS or opts.initial_slots > opts.max_tokens:  # max_tokens itself: Engine.fit
        raise BadRequest(f"options: grow_by must be ≤ {MAX_TOKENS}, initial_slots ≤ max_tokens")
    if opts.prefix_budget < 0 or opts.suffix_budget < 0:
        raise BadRequest("options: prefix_budget and suffix_budget must be ≥ 0")
    if opts.draft_tokens > MAX_DRAFT_TOKENS:
        raise BadRequest(f"options: draft_tokens must be ≤ {MAX_DRAFT_TOKENS}")
    if opts.deadline_s is not None and opts.deadline_s < 0:
        raise BadRequest("options: deadline_s must be ≥ 0 (or null)")


def capped_deadline(deadline_s: float | None) -> float:
    """No deadline (None or 0) means the service's longest; a longer one is cut to it."""
    return MAX_DEADLINE_S if not deadline_s else min(deadline_s, MAX_DEADLINE_S)


def _one_hole(engine: Engine, asked: int | None, field: str, *, temperature: float | None, top_p: float | None,
              deadline_ms: int | None, mode: str, doc_end: bool) -> SampleOptions:
    """The model's defaults with what the request asks; `asked` slots must fit (Engine.fit), its default is shrunk."""
    base = engine.default_options()
    over: dict = dict(mode=mode, doc_end=doc_end, deadline_s=capped_deadline(deadline_ms / 1000 if deadline_ms else None))
    if asked is not None:
        over |= dict(max_tokens=asked, initial_slots=min(base.initial_slots, asked))
    if temperature is not None:
        over["temperature"] = temperature
    if top_p is not None:
        over["top_p"] = top_p
    fit = engine.fit(msgspec.structs.replace(base, **over))
    if fit.opts is None or (asked is not None and fit.reason):
        raise BadRequest(f"{field} {asked}: {fit.reason}" if asked is not None else fit.reason)
    check_options(fit.opts)
    return fit.opts


def _seed(seed: int | None) -> int | None:
    return seed if seed is not None and seed >= 0 else None


def infill_job(req: InfillRequest, engine: Engine) -> Job:
    if req.stream:
        raise BadRequest("stream: streaming answers are not supported; send \"stream\": false")
    if req.n_predict == 0:
        raise BadRequest(f"n_predict: 0 asks for nothing; send -1 (the model's default) or 1 to {MAX_TOKENS}")
    deadline = req.deadline_ms if req.deadline_ms is not None else req.t_max_predict_ms
    opts = _one_hole(engine, req.n_predict if req.n_predict > 0 else None, "n_predict", temperature=req.temperature,
                     top_p=req.top_p, deadline_ms=deadline, mode=req.mode, doc_end=req.doc_end)
    before, extra = req.input_prefix + req.prompt, extra_context(req.input_extra)
    return Job([before, req.input_suffix], opts, _seed(req.seed), extra,
               copy_hints(before, req.input_suffix, [c.text for c in req.input_extra]))


def completion_job(req: CompletionRequest, engine: Engine) -> Job:
    if req.stream:
        raise BadRequest("stream: streaming answers are not supported; send \"stream\": false")
    if req.n != 1:
        raise BadRequest("n: only one completion per request (n = 1)")
    if req.logprobs:
        raise BadRequest("logprobs: not supported")
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise BadRequest("prompt: send one prompt (a string, or a list of one string)")
        prompt = prompt[0]
    opts = _one_hole(engine, req.max_tokens, "max_tokens", temperature=req.temperature, top_p=req.top_p,
                     deadline_ms=req.deadline_ms, mode=req.mode, doc_end=req.doc_end)
    return Job([prompt, req.suffix or ""], opts, _seed(req.seed), hint=copy_hints(prompt, req.suffix or ""))


def fill_job(req: FillRequest, engine: Engine) -> Job:
    holes = len(req.pieces) - 1
    if holes < 1:
        raise BadRequest("pieces: need at least two (the text before and after one hole)")
    opts = req.options if req.options is not None else engine.default_options()
    check_options(opts)
    many = holes > engine.limits.max_holes  # then refused (Engine.fit) without reading the text between them
    fit = engine.fit(opts, holes, 0 if many else sum(engine.count_tokens(p) for p in req.pieces[1:-1]))
    if fit.reason:
        raise BadRequest(fit.reason)
    opts = msgspec.structs.replace(opts, deadline_s=capped_deadline(opts.deadline_s))
    return Job(list(req.pieces), opts, _seed(req.seed), req.context, req.hint if holes == 1 else "")


def tokens_answer(req: TokensRequest, engine: Engine) -> TokensAnswer:
    if len(req.texts) > MAX_TOKEN_TEXTS:
        raise BadRequest(f"texts: at most {MAX_TOKEN_TEXTS} per request")
    return TokensAnswer([engine.count_tokens(t) for t in req.texts])


# ---- engine results to answers ---------------------------------------------------------------------------


def _cut_by_limit(result: Result, job: Job) -> bool:
    return result.stats.deadline_hit or result.stats.tokens >= job.opts.max_tokens


def infill_answer(out: Outcome, job: Job, model: str) -> InfillAnswer:
    res = out.result
    assert res is not None
    s = res.stats
    return InfillAnswer(
        content=res.texts[0], model=model, tokens_predicted=s.tokens, tokens_evaluated=s.context_tokens,
        stop_type="limit" if _cut_by_limit(res, job) else "eos",
        timings=Timings(prompt_n=s.context_tokens, prompt_ms=0.0, predicted_n=s.tokens, predicted_ms=round(s.wall_ms, 2),
                        predicted_per_second=round(s.tokens / max(s.wall_ms, 1e-6) * 1000, 2), queue_ms=out.queue_ms),
        hone=s)


def _stop_at(text: str, stop: str | list[str] | None) -> tuple[str, bool]:
    stops = [stop] if isinstance(stop, str) else (stop or [])
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def completion_answer(out: Outcome, job: Job, model: str, req: CompletionRequest) -> CompletionAnswer:
    res = out.result
    assert res is not None
    text, stopped = _stop_at(res.texts[0], req.stop)
    if req.echo:
        text = job.pieces[0] + text
    finish = "stop" if stopped or not _cut_by_limit(res, job) else "length"
    s = res.stats
    return CompletionAnswer(id=f"cmpl-{uuid.uuid4().hex[:24]}", created=int(time.time()), model=model,
                            choices=[Choice(text=text, finish_reason=finish)],
                            usage=Usage(s.context_tokens, s.tokens, s.context_tokens + s.tokens))


def fill_answer(out: Outcome, model: str) -> FillAnswer:
    res = out.result
    assert res is not None
    return FillAnswer(res.texts, res.stats, model, out.queue_ms)
