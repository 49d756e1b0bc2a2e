"""Bad input never takes the server down: every test ends with the server still answering."""

import asyncio
import json
import sys

import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcServerNotInitialized

from conftest import lsp_plain

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

FAST = {"maxTokens": 4, "debounceMs": 0, "deadlineMs": 0, "grounding": False}  # the tiny model writes gibberish names


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(lsp_start_client, lsp_stop_client, lsp_wait_status):
    c = await lsp_start_client(FAST)
    await lsp_wait_status(c, "ready")
    yield c
    await lsp_stop_client(c)


def open_doc(client, uri, text):
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", 1, text)))


async def inline(client, uri, line, character, kind=types.InlineCompletionTriggerKind.Invoked):
    return await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri), position=types.Position(line, character),
        context=types.InlineCompletionContext(trigger_kind=kind)))


async def alive(client):
    res = lsp_plain(await client.protocol.send_request_async("hone/stats", None))
    assert res["status"]["state"] in ("ready", "busy")
    return res


async def test_unknown_document(client):
    assert (await inline(client, "file:///never/opened.py", 0, 0)).items == ()
    res = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier("file:///never/opened.py"), position=types.Position(3, 3)))
    assert res.items == ()
    out = lsp_plain(await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="hone.fillHoles", arguments=["file:///never/opened.py"])))
    assert out["applied"] is False and "unknown document" in out["message"]
    # changes and closes for documents that were never opened are ignored
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        types.VersionedTextDocumentIdentifier(version=2, uri="file:///never/opened.py"),
        [types.TextDocumentContentChangeWholeDocument(text="x")]))
    client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier("file:///nope.py")))
    await alive(client)


async def test_positions_past_the_end(client):
    uri = "file:///bad/positions.py"
    open_doc(client, uri, "x = 1\ny = 2")
    for line, ch in [(0, 999), (1, 10**6), (50, 0), (2**31 - 1, 2**31 - 1)]:
        res = await inline(client, uri, line, ch)
        for item in res.items:
            assert item.range.start.line <= 1  # clamped into the document
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        types.VersionedTextDocumentIdentifier(version=2, uri=uri),
        [types.TextDocumentContentChangePartial(range=types.Range(types.Position(9, 9), types.Position(3, 1)),
                                                text="z")]))
    await alive(client)


async def test_five_megabyte_document(client):
    uri = "file:///bad/huge.py"
    body = "def handler_{0}(request):\n    return respond(request, status={0})\n\n"
    text = "".join(body.format(i) for i in range(72_000))
    assert len(text) > 5_000_000
    open_doc(client, uri, text)
    middle = 72_000 // 2 * 3
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        types.VersionedTextDocumentIdentifier(version=2, uri=uri),
        [types.TextDocumentContentChangePartial(range=types.Range(types.Position(middle, 0), types.Position(middle, 0)),
                                                text="x = ")]))
    res = await asyncio.wait_for(inline(client, uri, middle, 4), 60)
    assert len(res.items) <= 1
    for item in res.items:
        assert item.range.start == types.Position(middle, 4)
    client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri)))
    await alive(client)


async def test_lone_surrogates_and_control_characters(client):
    uri = "file:///bad/odd.py"
    text = "s = '\ud800'\x00\x1b[31m\u2028\x0c\x1c\r\nt = '\udfff' + '😀'\rq = \x7f"
    open_doc(client, uri, text)
    for line, ch in [(0, 6), (0, 8), (1, 8), (1, 14), (2, 4), (2, 5)]:
        res = await inline(client, uri, line, ch)
        for item in res.items:
            item.insert_text.encode("utf-8")  # never sends a lone surrogate back
    rng = {"start": {"line": 0, "character": 4}, "end": {"line": 1, "character": 3}}
    out = lsp_plain(await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="hone.rewriteSelection", arguments=[uri, rng])))
    assert out["applied"] is True
    await alive(client)


async def test_unknown_command_and_bad_arguments(client):
    with pytest.raises(JsonRpcInvalidParams):
        await client.workspace_execute_command_async(types.ExecuteCommandParams(command="rm -rf", arguments=["/"]))
    for args in [None, [], [{"uri": 1}], ["file:///a.py", "not a range"], ["file:///a.py", {}, 3]]:
        with pytest.raises(JsonRpcException):
            await client.workspace_execute_command_async(
                types.ExecuteCommandParams(command="hone.rewriteSelection", arguments=args))
    with pytest.raises(JsonRpcException):
        await client.protocol.send_request_async("hone/noSuchMethod", {"x": 1})
    client.protocol.notify("hone/noSuchNotification", {"x": 1})
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="never-sent"))
    await alive(client)


async def test_bad_settings(client):
    n = len(client.messages)
    for raw in [[1, 2], "hone", {"hone": {"maxTokens": "lots", "device": "abacus"}}, {"settings": {"hone": 5}}]:
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=raw))
    await alive(client)
    assert len(client.messages) >= n + 3
    res = await alive(client)
    assert res["errors"] == 0


async def test_flood_of_requests(client):
    """300 requests at once for one document, as typing sends them (automatic, debounced): each supersedes the
    one before, none is left hanging. Explicit requests skip the debounce, so whether one finishes before the
    stdin reader hands the server the next depends on the machine's timing; typing's do not, as long as the
    debounce outlasts the gap between two requests (50 ms did not on a loaded machine: 3 answers).
    (Cache bounds across thousands of requests: test_lsp_service.py.)"""
    uri = "file:///bad/many.py"
    open_doc(client, uri, "a = 1\n" * 50)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={**FAST, "debounceMs": 1000}))
    before = await alive(client)
    typing = types.InlineCompletionTriggerKind.Automatic
    results = await asyncio.gather(*[inline(client, uri, i % 50, i % 7, typing) for i in range(300)])
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=FAST))
    assert sum(len(r.items) for r in results) <= 2
    res = await alive(client)
    assert res["requests"] - before["requests"] == 300 and res["modelRuns"] - before["modelRuns"] <= 2


# ---- servers of their own ---------------------------------------------------------------------------------


async def test_requests_before_initialize(lsp_start_client, lsp_stop_client):
    c = await lsp_start_client(initialize=False)
    c.capabilities = types.ClientCapabilities()  # pytest-lsp itself refuses to send before initialize
    try:
        with pytest.raises(JsonRpcException) as err:
            await asyncio.wait_for(inline(c, "file:///x.py", 0, 0), 30)
        assert err.value.code == JsonRpcServerNotInitialized.CODE
        c.init_result = await c.initialize_session(types.InitializeParams(capabilities=types.ClientCapabilities(),
                                                                          initialization_options=FAST))
        assert c.init_result.capabilities.inline_completion_provider is not None
    finally:
        await lsp_stop_client(c)


@pytest.mark.parametrize("case", ["missing", "corrupt", "not-a-model"])
async def test_missing_or_corrupt_model(case, tmp_path, lsp_start_client, lsp_stop_client, lsp_wait_status,
                                        lsp_tiny_model):
    folder = tmp_path / "model"
    if case == "corrupt":
        folder.mkdir()
        (folder / "config.json").write_text('{"model_type": "hone-diffusion", "d_model": ')
    elif case == "not-a-model":
        folder.mkdir()
        (folder / "config.json").write_text((lsp_tiny_model / "config.json").read_text())
        (folder / "model.safetensors").write_bytes(b"\x00" * 100)
    command = [sys.executable, "-m", "lsp_server", "--model", str(folder), "--device", "cpu"]
    c = await lsp_start_client(FAST, command=command)
    try:
        st = await lsp_wait_status(c, "error")
        assert st["message"] and st["state"] == "error"
        uri = "file:///m.py"
        open_doc(c, uri, "x = ???\n")
        assert (await inline(c, uri, 0, 4)).items == ()
        out = lsp_plain(await c.workspace_execute_command_async(
            types.ExecuteCommandParams(command="hone.fillHoles", arguments=[uri])))
        assert out["applied"] is False and "no model" in out["message"]
        res = lsp_plain(await c.protocol.send_request_async("hone/stats", None))
        assert res["status"]["state"] == "error"
        # pointing the settings at a good model recovers without a restart
        c.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"hone": {"model": str(lsp_tiny_model)}}))
        await lsp_wait_status(c, "ready", after=len(c.statuses))
        assert len((await inline(c, uri, 0, 4)).items) <= 1
    finally:
        await lsp_stop_client(c)


def _frame(obj) -> bytes:
    body = json.dumps(obj).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


async def _read_message(stdout) -> dict:
    length = 0
    while (line := await stdout.readline()).strip():
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return json.loads(await stdout.readexactly(length))


async def test_garbage_unparsable_params_then_a_client_that_vanishes(lsp_server_command, lsp_server_env):
    proc = await asyncio.create_subprocess_exec(*lsp_server_command, env=lsp_server_env, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        proc.stdin.write(b"Content-Length: 9\r\n\r\n{not json")
        proc.stdin.write(_frame({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                 "params": {"capabilities": {}, "processId": None}}))
        await proc.stdin.drain()
        while (msg := await asyncio.wait_for(_read_message(proc.stdout), 60)).get("id") != 1:
            pass  # a showMessage about the garbage may come first
        assert "capabilities" in msg["result"]
        proc.stdin.write(_frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
        # params that do not parse (a negative line) get an error answer instead of silence
        proc.stdin.write(_frame({"jsonrpc": "2.0", "id": 2, "method": "textDocument/inlineCompletion", "params": {
            "textDocument": {"uri": "file:///x.py"}, "position": {"line": -1, "character": 0},
            "context": {"triggerKind": 1}}}))
        await proc.stdin.drain()
        while (msg := await asyncio.wait_for(_read_message(proc.stdout), 60)).get("id") != 2:
            pass
        assert msg["error"]["code"] == -32602
        proc.stdin.close()  # the client disappears without shutdown or exit
        assert await asyncio.wait_for(proc.wait(), 30) is not None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
