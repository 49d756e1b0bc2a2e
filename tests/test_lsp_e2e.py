"""End to end over stdio: the real server on the tiny model, driven by pytest-lsp's client.

The tiny model writes gibberish, so these tests check structure (ranges, edits, states, counts),
never the text itself."""

import asyncio
import time

import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams, JsonRpcRequestCancelled

from conftest import copy_built_steps, lsp_plain
from lsp_docs import configure, inline, inline_params, open_doc, stats

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

FAST = {"maxTokens": 6, "debounceMs": 0, "deadlineMs": 0, "grounding": False}  # the tiny model writes gibberish names


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(lsp_start_client, lsp_stop_client, lsp_wait_status):
    c = await lsp_start_client(FAST)
    await lsp_wait_status(c, "ready")
    yield c
    await lsp_stop_client(c)


def edit(client, uri: str, version: int, start: tuple, end: tuple, text: str) -> None:
    change = types.TextDocumentContentChangePartial(range=types.Range(types.Position(*start), types.Position(*end)),
                                                    text=text)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        types.VersionedTextDocumentIdentifier(version=version, uri=uri), [change]))


async def test_capabilities(client):
    caps = client.init_result.capabilities
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    assert sorted(caps.execute_command_provider.commands) == ["hone.accepted", "hone.fillHoles", "hone.rewriteSelection"]
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    assert caps.position_encoding == types.PositionEncodingKind.Utf16
    assert client.init_result.server_info.name == "hone"


async def test_status_reports_the_model(client):
    while client.statuses[-1]["steps"] == "compiling":  # settles at once: an infill model has no compiled steps
        await asyncio.wait_for(client.wait_for_notification("hone/status"), 30)
    st = client.statuses[-1]
    assert set(st) == {"state", "model", "device", "lastLatencyMs", "tokensPerForward", "message", "steps"}
    assert st["state"] == "ready" and st["model"] == "tiny" and st["device"] == "cpu"
    assert st["steps"].startswith("eager")  # only spm models have compiled steps; this tiny one is infill


async def test_compiled_steps_while_serving(spm_dir, lsp_start_client, lsp_stop_client, lsp_server_command, tmp_path):
    """By default an spm model answers at once (eager steps) while its steps compile in the background, and
    after. (The server's cache of its own holds a build stopped before its head step: it builds that one.)"""
    from model.checkpoint import load_model
    from model.compiled import STEPS, package_key

    model, _ = load_model(spm_dir)
    copy_built_steps(model, tmp_path / "compiled" / f".building-{package_key(model)}", leave=("head",))
    command = [*lsp_server_command[:3], "--model", str(spm_dir), "--device", "cpu"]
    c = await lsp_start_client(FAST, command=command, env={"HONE_CACHE": str(tmp_path)})
    try:
        uri = open_doc(c, "import os\n\ndef size(path):\n    return \n")

        async def steps(*wanted):
            while not (c.statuses and c.statuses[-1]["steps"] in wanted):
                await c.wait_for_notification("hone/status")
            return c.statuses[-1]["steps"]

        assert await asyncio.wait_for(steps("compiling", "compiled"), 60)
        await inline(c, uri, 3, 11)  # (a random tiny network may well answer nothing: count the model runs)
        assert await asyncio.wait_for(steps("compiled"), 240) == "compiled"
        await inline(c, open_doc(c, "import sys\n\ndef main(argv):\n    return \n"), 3, 11)
        counts = await stats(c)
        assert counts["modelRuns"] == 2 and counts["errors"] == 0
        package = tmp_path / "compiled" / package_key(model)  # finished in the server's cache: four steps
        assert sorted(p.name for p in package.iterdir()) == sorted(f"{s}.pt2" for s in STEPS)
    finally:
        await lsp_stop_client(c)


async def test_inline_completion(client, lsp_wait_status):
    uri = open_doc(client, "import os\n\ndef size(path):\n    return \n")
    seen = len(client.statuses)
    res = await inline(client, uri, 3, 11)
    assert len(res.items) == 1
    item = res.items[0]
    assert item.range.start == item.range.end == types.Position(3, 11)
    assert item.insert_text and "\n" not in item.insert_text  # mid-statement: finish the line only
    st = await lsp_wait_status(client, "ready", after=seen)
    assert any(s["state"] == "busy" for s in client.statuses[seen:])
    assert st["lastLatencyMs"] > 0 and st["tokensPerForward"] >= 1


async def test_inline_completion_extends_the_selected_suggestion(client):
    """With selectedCompletionInfo the ghost text starts with the list's selected item and replaces its range."""
    uri = open_doc(client, "import os\n\ndef size(path):\n    return os.pa\n")
    sel_range = types.Range(types.Position(3, 14), types.Position(3, 16))  # "pa"
    params = inline_params(uri, 3, 16)
    params.context.selected_completion_info = types.SelectedCompletionInfo(range=sel_range, text="path")
    res = await client.text_document_inline_completion_async(params)
    assert len(res.items) == 1
    item = res.items[0]
    assert item.range == sel_range and item.insert_text.startswith("path")
    assert "\n" not in item.insert_text  # still mid-statement in the document as it would read


async def test_completion_item(client):
    uri = open_doc(client, "def f(x):\n    y = \n")
    res = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri), position=types.Position(1, 8)))
    assert res.is_incomplete and len(res.items) == 1
    item = res.items[0]
    assert item.text_edit.range == types.Range(types.Position(1, 8), types.Position(1, 8))
    assert item.text_edit.new_text and item.label
    assert item.insert_text_mode == types.InsertTextMode.AsIs


async def test_incremental_sync_utf16_crlf_and_fill_holes(client):
    uri = open_doc(client, "a = '😀'\r\nb = 1\r\n")
    # UTF-16 columns: the emoji is two units, so the closing quote ends at 8
    edit(client, uri, 2, (0, 8), (0, 8), " + ???")
    edit(client, uri, 3, (1, 4), (1, 5), "???")  # b = ???
    edit(client, uri, 4, (1, 7), (1, 7), "\r\nc = '𝄞' if ??? else 0")
    res = lsp_plain(await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="hone.fillHoles", arguments=[uri])))
    assert res == {"applied": True, "edits": 3, "message": ""}
    change = client.edits[-1].edit.document_changes[0]
    assert change.text_document.uri == uri and change.text_document.version == 4
    ranges = [(e.range.start.line, e.range.start.character, e.range.end.character) for e in change.edits]
    assert ranges == [(0, 11, 14), (1, 4, 7), (2, 12, 15)]
    assert all("\r" not in e.new_text or "\r\n" in e.new_text for e in change.edits)


async def test_rewrite_selection(client):
    uri = open_doc(client, "total = price * 2\nprint(total)\n")
    rng = {"start": {"line": 0, "character": 8}, "end": {"line": 0, "character": 17}}
    res = lsp_plain(await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="hone.rewriteSelection", arguments=[uri, rng])))
    assert res["applied"] is True and res["edits"] == 1
    (e,) = client.edits[-1].edit.document_changes[0].edits
    assert e.range == types.Range(types.Position(0, 8), types.Position(0, 17))


async def test_bad_command_arguments(client):
    for args in ([], [1], ["file:///x.py", {"start": 0}]):
        with pytest.raises(JsonRpcInvalidParams):
            await client.workspace_execute_command_async(
                types.ExecuteCommandParams(command="hone.rewriteSelection", arguments=args))
    with pytest.raises(JsonRpcInvalidParams):
        await client.workspace_execute_command_async(types.ExecuteCommandParams(command="hone.nope", arguments=[]))


async def _start_long_request(client, lsp_wait_status, text, line, character, msg_id):
    """Open `text` and start a block completion that would take many seconds (512 tokens, no
    deadline); returns once the server says busy -> (uri, stats before, the request's future)."""
    configure(client, {"maxTokens": 512, "mode": "block"})
    uri = open_doc(client, text)
    before = await stats(client)
    seen = len(client.statuses)
    fut = asyncio.ensure_future(client.protocol.send_request_async(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, line, character), msg_id=msg_id))
    await lsp_wait_status(client, "busy", after=seen)
    return uri, before, fut


async def test_cancel_request_stops_the_model(client, lsp_wait_status):
    uri, before, fut = await _start_long_request(
        client, lsp_wait_status, "class Store:\n    def load(self, path):\n        \n", 2, 8, msg_id="cancel-me")
    t0 = time.perf_counter()
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="cancel-me"))
    with pytest.raises(JsonRpcRequestCancelled):
        await fut
    ack_ms = (time.perf_counter() - t0) * 1000
    configure(client, FAST | {"mode": "auto"})
    # the worker stops at its next denoising step: a small request right after is not stuck behind 512 tokens
    t0 = time.perf_counter()
    res = await inline(client, uri, 1, 4)
    after = await stats(client)
    assert after["cancelled"] == before["cancelled"] + 1
    assert ack_ms < 1000 and (time.perf_counter() - t0) < 20, ack_ms
    assert isinstance(res.items, (list, tuple))


async def test_newer_request_supersedes_the_running_one(client, lsp_wait_status):
    uri, before, first = await _start_long_request(client, lsp_wait_status, "def main():\n    \n\nx = 1\n", 1, 4, msg_id="first")
    configure(client, FAST | {"mode": "auto"})
    second = await inline(client, uri, 3, 5)
    assert (await first).items == ()  # answered (empty), not left running
    assert len(second.items) <= 1
    after = await stats(client)
    assert after["superseded"] >= before["superseded"] + 1


async def test_typed_through(client):
    uri = open_doc(client, "value = \n")
    first = await inline(client, uri, 0, 8)
    text = first.items[0].insert_text
    assert len(text) >= 2
    before = await stats(client)
    edit(client, uri, 2, (0, 8), (0, 8), text[0])  # the user types the suggestion's first character
    res = await inline(client, uri, 0, 9)
    assert res.items[0].insert_text == text[1:]
    after = await stats(client)
    assert after["typedThrough"] == before["typedThrough"] + 1 and after["modelRuns"] == before["modelRuns"]


async def test_a_placed_cursor_is_completed_ahead(client):
    """hone/cursor (the VS Code extension sends it when the cursor is placed, not typed): the server computes the
    completion there once the cursor rests, and the request that follows needs no model run of its own; junk
    params or an unknown document are ignored."""
    client.protocol.notify("hone/cursor", {"textDocument": "nope"})
    client.protocol.notify("hone/cursor", {"textDocument": {"uri": "file:///never/opened.py"},
                                           "position": {"line": 0, "character": 0}})
    uri = open_doc(client, "import os\n\ndef main():\n    return \n")
    before = await stats(client)
    client.protocol.notify("hone/cursor", {"textDocument": {"uri": uri}, "position": {"line": 3, "character": 11}})
    deadline = time.monotonic() + 60
    while (now := await stats(client))["prefetched"] == before["prefetched"]:
        assert time.monotonic() < deadline, "the completion at the cursor was never computed ahead"
        await asyncio.sleep(0.05)
    assert now["modelRuns"] == before["modelRuns"] + 1 and now["requests"] == before["requests"]
    res = await inline(client, uri, 3, 11)
    after = await stats(client)
    assert after["modelRuns"] == now["modelRuns"] and after["requests"] == now["requests"] + 1
    assert res.items == [] or res.items[0].range.start == types.Position(3, 11)


async def test_accepting_a_suggestion_is_counted(client):
    """The inline item carries the accept command; running it (as VS Code does on Tab) counts an acceptance for the
    document's language in hone/stats; a second run of the same id counts nothing."""
    uri = open_doc(client, "total = \n")
    item = (await inline(client, uri, 0, 8)).items[0]
    assert item.command.command == "hone.accepted" and len(item.command.arguments) == 1
    run = types.ExecuteCommandParams(command="hone.accepted", arguments=item.command.arguments)
    assert lsp_plain(await client.workspace_execute_command_async(run)) is True
    assert lsp_plain(await client.workspace_execute_command_async(run)) is False
    python = (await stats(client))["acceptance"]["python"]
    assert python["accepted"] >= 1 and python["shown"] >= python["accepted"] and 0 < python["acceptedRate"] <= 1
    with pytest.raises(JsonRpcInvalidParams, match="hone.accepted takes"):
        await client.workspace_execute_command_async(types.ExecuteCommandParams(command="hone.accepted", arguments=["x"]))


async def test_replayed_burst_of_typing(client):
    configure(client, FAST | {"debounceMs": 30})
    line = "result = compute(value, limit=10)"
    uri = open_doc(client, "import math\n\n")
    before = await stats(client)
    pending = []
    for i, ch in enumerate(line):  # as an editor sends them: each keystroke a change and a request
        edit(client, uri, i + 2, (2, i), (2, i), ch)
        pending.append(client.text_document_inline_completion_async(
            inline_params(uri, 2, i + 1, types.InlineCompletionTriggerKind.Automatic)))
    results = await asyncio.gather(*pending)
    after = await stats(client)
    runs = after["modelRuns"] - before["modelRuns"]
    assert all(len(r.items) <= 1 for r in results)
    assert runs < len(line) / 2, after  # most keystrokes never reach the model
    assert after["errors"] == before["errors"]
    for r in results:
        for item in r.items:
            assert item.range.start.line == 2


async def test_settings_invalid_and_trust(client):
    n = len(client.messages)
    configure(client, {"maxTokens": -5, "threshold": 0.5})
    await client.wait_for_notification(types.WINDOW_SHOW_MESSAGE)
    assert "maxTokens" in client.messages[n].message
    configure(client, {"trustRemoteCode": True})
    await client.wait_for_notification(types.WINDOW_SHOW_MESSAGE)
    assert "trustRemoteCode" in client.messages[-1].message
    res = await stats(client)
    assert res["status"]["state"] == "ready"  # no reload happened
    configure(client, FAST)


async def test_disabled_answers_nothing(client):
    uri = open_doc(client, "x = ")
    configure(client, {"enabled": False})
    assert (await inline(client, uri, 0, 4)).items == ()
    configure(client, {"enabled": True})
    assert len((await inline(client, uri, 0, 4)).items) <= 1


async def test_tcp_transport(lsp_server_command, lsp_server_env, lsp_wait_status):
    import socket

    from pygls.lsp.client import LanguageClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(*lsp_server_command, "--tcp", f"127.0.0.1:{port}", env=lsp_server_env)
    lc = LanguageClient("tcp-test", "0")

    async def connect():
        while True:  # until the server listens
            try:
                return await lc.start_tcp("127.0.0.1", port)
            except ConnectionRefusedError:
                assert proc.returncode is None, "the server exited before listening"
                await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(connect(), 60)
        res = await asyncio.wait_for(lc.initialize_async(types.InitializeParams(capabilities=types.ClientCapabilities())), 60)
        assert res.capabilities.inline_completion_provider is not None
        await lc.shutdown_async(None)
        lc.exit(None)
        assert await asyncio.wait_for(proc.wait(), 30) is not None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
