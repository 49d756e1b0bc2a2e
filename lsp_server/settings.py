"""The `hone` settings: one typed struct, parsed from initializationOptions and didChangeConfiguration."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from model.types import DEVICES, MAX_TOKENS, RULES, SampleOptions

Device = Literal[DEVICES]
CommitRule = Literal[RULES]
Mode = Literal["auto", "line", "block"]
_ENGINE = SampleOptions()  # the sampling defaults are the engine's; the extension's package.json is checked against these


class Settings(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    """Field names are camelCase on the wire (`maxTokens`); the one source of the defaults (a test checks the
    VS Code extension's package.json against them)."""

    enabled: bool = True  # serve completions at all (commands still work)
    model: str = ""  # model folder; "" = the --model flag, else the shipped default
    device: Device = "auto"  # "auto" = the --device flag, else cuda → mps → cpu
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=MAX_TOKENS)] = _ENGINE.max_tokens  # most tokens in one completion (per hole)
    threshold: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = _ENGINE.threshold  # τ of the threshold commit rule
    commit_rule: CommitRule = _ENGINE.rule  # which masked slots the sampler fixes each step
    debounce_ms: Annotated[int, msgspec.Meta(ge=0, le=2000)] = 10  # base wait before running the model
    trust_remote_code: bool = False  # run a third-party model's own Python code (initializationOptions only)
    mode: Mode = "auto"  # auto: finish the line mid-line, a block after ':'; or force line / block
    deadline_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 1500  # wall-clock budget per completion; 0 = none
    # the team service (`hone serve`); user-level only, like trustRemoteCode: a workspace cannot send your code
    # (or your token) elsewhere
    remote: Annotated[str, msgspec.Meta(pattern=r"^(https?://\S+)?$")] = ""  # its URL; "" = the --remote flag, else local
    remote_token: str = ""  # its bearer token ("" = the --remote-token-file flag)
    remote_fallback: bool = False  # while the service is unreachable, the local model answers
    min_confidence: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0  # the confidence gate: hide a suggestion the
    # model gives less than this probability as a whole (0: show every one); docs/server.md has precision vs coverage
    grounding: bool = True  # show a suggestion only up to a name that resolves nowhere (document, workspace, builtins)
    # or a string it leaves open (model.grounding)
    use_adapted: bool = True  # answer with the workspace's adapted model (`hone adapt`, idle adaptation) when it has one
    adapt: Literal["off", "idle"] = "off"  # idle: adapt the model to the workspace while the editor is idle (user-level
    # only: it spends this machine's cores and disk)


FIELDS = {f.encode_name for f in msgspec.structs.fields(Settings)}
USER_ONLY = {"remote", "remoteToken", "remoteFallback", "adapt"}  # only from initializationOptions (and the command line)
SECRET = {"remoteToken"}  # never echoed in messages or logs


def unwrap(raw: Any) -> Any:
    """Accept `{settings: {hone: {...}}}`, `{hone: {...}}` and the bare object."""
    if isinstance(raw, dict) and isinstance(raw.get("settings"), dict):
        raw = raw["settings"]
    if isinstance(raw, dict) and isinstance(raw.get("hone"), dict):
        raw = raw["hone"]
    return raw


def merge(previous: Settings, raw: Any, *, allow_trust: bool) -> tuple[Settings, list[str]]:
    """Apply the valid keys of `raw` on top of `previous`; return the result and one line per rejected value.

    Each key is checked on its own so one bad value does not discard the good ones; a rejected key
    keeps its previous value. `allow_trust=False` (workspace settings) never turns trustRemoteCode on and
    never changes the remote* settings or adapt.
    """
    raw = unwrap(raw)
    if raw is None:
        return previous, []
    if not isinstance(raw, dict):
        return previous, [f"hone settings must be an object, got {type(raw).__name__}"]
    current = msgspec.to_builtins(previous)
    problems: list[str] = []
    for key, value in raw.items():
        if key not in FIELDS:
            continue  # other tools' keys share some clients' settings objects
        if key == "trustRemoteCode" and value is True and not allow_trust and not current["trustRemoteCode"]:
            problems.append("hone.trustRemoteCode can only be turned on in initializationOptions or with "
                            "--trust-remote-code, not from workspace settings; it stays off")
            continue
        if key in USER_ONLY and not allow_trust and value != current[key]:
            problems.append(f"hone.{key} can only be set in user settings (initializationOptions) or on the command "
                            "line, not from workspace settings; ignored")
            continue
        try:
            msgspec.convert({**current, key: value}, Settings)
        except msgspec.ValidationError as e:
            shown, kept = ("(hidden)", "the previous value") if key in SECRET else (_short(value), repr(current[key]))
            problems.append(f"hone.{key}: invalid value {shown} ({_clip(str(e), 120)}); keeping {kept}")
            continue
        current[key] = value
    return msgspec.convert(current, Settings), problems


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(value: Any) -> str:
    return _clip(repr(value), 80)


def needs_reload(old: Settings, new: Settings) -> bool:
    def key(s: Settings) -> tuple:
        return s.model, s.device, s.trust_remote_code, s.remote, s.remote_token, s.remote_fallback, s.use_adapted

    return key(old) != key(new)
