"""Settings: defaults, the accepted wrappers, per-key rejection, and trustRemoteCode's one way in."""

import json
from pathlib import Path

import msgspec
import pytest

from lsp_server.settings import Settings, merge, needs_reload, unwrap
from model.types import DEVICES, MAX_TOKENS, RULES, SampleOptions


def test_defaults_match_the_extension():
    """Settings is the one source of the defaults: every hone.* setting the server knows has the same default
    (and the same choices) in the extension's package.json; the engine's sampling defaults are Settings' own."""
    manifest = json.loads((Path(__file__).parents[1] / "extension" / "package.json").read_text())
    props = manifest["contributes"]["configuration"]["properties"]
    ours = msgspec.to_builtins(Settings())
    assert set(ours) <= {k.removeprefix("hone.") for k in props}
    for key, value in ours.items():
        assert props[f"hone.{key}"]["default"] == value, key
    assert props["hone.commitRule"]["enum"] == list(RULES)
    assert props["hone.device"]["enum"] == list(DEVICES) and props["hone.maxTokens"]["maximum"] == MAX_TOKENS
    ts = (Path(__file__).parents[1] / "extension" / "src" / "settings.ts").read_text()  # the extension's own checks
    assert f"DEVICES = {list(DEVICES)} as const" in ts and f"intIn(1, {MAX_TOKENS})" in ts
    engine = SampleOptions()
    assert (ours["maxTokens"], ours["threshold"], ours["commitRule"]) == (engine.max_tokens, engine.threshold, engine.rule)


@pytest.mark.parametrize("raw", [{"settings": {"hone": {"maxTokens": 12}}}, {"hone": {"maxTokens": 12}},
                                 {"maxTokens": 12}, {"settings": {"maxTokens": 12}}])
def test_wrappers_are_accepted(raw):
    s, problems = merge(Settings(), raw, allow_trust=False)
    assert s.max_tokens == 12 and problems == []


def test_none_and_unknown_keys_change_nothing():
    assert merge(Settings(), None, allow_trust=False) == (Settings(), [])
    s, problems = merge(Settings(), {"pylsp": {"x": 1}, "someOtherKey": 3}, allow_trust=False)
    assert s == Settings() and problems == []
    assert unwrap({"settings": None, "hone": {"a": 1}}) == {"a": 1}


@pytest.mark.parametrize("key,value", [("maxTokens", 0), ("maxTokens", 5000), ("maxTokens", "64"), ("maxTokens", True),
                                       ("threshold", 0), ("threshold", 1.5), ("device", "tpu"), ("commitRule", "x"),
                                       ("mode", "word"), ("debounceMs", -1), ("deadlineMs", 10**9), ("enabled", "yes"),
                                       ("model", 3)])
def test_invalid_value_is_reported_and_previous_kept(key, value):
    prev = Settings(max_tokens=17, threshold=0.5, device="cpu", mode="line")
    s, problems = merge(prev, {key: value, "debounceMs": 99} if key != "debounceMs" else {key: value}, allow_trust=False)
    assert len(problems) == 1 and key in problems[0]
    assert getattr(s, _attr(key)) == getattr(prev, _attr(key))
    if key != "debounceMs":
        assert s.debounce_ms == 99  # the valid key in the same update still applies


def _attr(camel):
    return next(f.name for f in msgspec.structs.fields(Settings) if f.encode_name == camel)


def test_not_an_object():
    s, problems = merge(Settings(max_tokens=3), [1, 2], allow_trust=True)
    assert s.max_tokens == 3 and problems


def test_huge_value_is_shortened_in_the_message():
    _, problems = merge(Settings(), {"device": "x" * 100_000}, allow_trust=False)
    assert len(problems[0]) < 400


def test_trust_remote_code_only_from_initialization():
    s, problems = merge(Settings(), {"trustRemoteCode": True}, allow_trust=False)
    assert s.trust_remote_code is False and "trustRemoteCode" in problems[0]
    s, problems = merge(Settings(), {"trustRemoteCode": True}, allow_trust=True)
    assert s.trust_remote_code is True and problems == []
    s, problems = merge(s, {"trustRemoteCode": False}, allow_trust=False)  # turning it off is always allowed
    assert s.trust_remote_code is False and problems == []
    s2, problems = merge(Settings(trust_remote_code=True), {"trustRemoteCode": True}, allow_trust=False)
    assert s2.trust_remote_code is True and problems == []  # already on: no change, no complaint


def test_reload_keys():
    assert needs_reload(Settings(), Settings(model="/m"))
    assert needs_reload(Settings(), Settings(device="cpu"))
    assert not needs_reload(Settings(), Settings(max_tokens=3, threshold=0.5, mode="block"))


def test_idle_adaptation_is_a_user_level_setting():
    user, problems = merge(Settings(), {"adapt": "idle"}, allow_trust=True)
    assert user.adapt == "idle" and problems == []
    s, problems = merge(Settings(), {"adapt": "idle", "useAdapted": False}, allow_trust=False)
    assert s.adapt == "off" and not s.use_adapted  # a workspace may turn the adapted model off, not adaptation on
    assert len(problems) == 1 and "hone.adapt" in problems[0]
