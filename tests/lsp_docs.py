"""What the end-to-end tests send a real server: documents, inline-completion requests, settings, `hone/stats`."""

from __future__ import annotations

import itertools

from lsprotocol import types

from conftest import lsp_plain

_uris = itertools.count()


def open_doc(client, text: str) -> str:
    """Open a new Python document (a fresh URI each time) and return its URI."""
    uri = f"file:///work/doc_{next(_uris)}.py"
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", 1, text)))
    return uri


def inline_params(uri, line, character, kind=types.InlineCompletionTriggerKind.Invoked):
    return types.InlineCompletionParams(text_document=types.TextDocumentIdentifier(uri),
                                        position=types.Position(line, character),
                                        context=types.InlineCompletionContext(trigger_kind=kind))


async def inline(client, uri, line, character, kind=types.InlineCompletionTriggerKind.Invoked):
    return await client.text_document_inline_completion_async(inline_params(uri, line, character, kind))


async def stats(client) -> dict:
    return lsp_plain(await client.protocol.send_request_async("hone/stats", None))


def configure(client, settings: dict) -> None:
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"hone": settings}))
