"""pygls handlers: LSP messages in, calls into `service.Service`, LSP messages out. Nothing else."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from typing import Any, Callable

import msgspec
from lsprotocol import types
from lsprotocol.converters import get_converter
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcServerNotInitialized
from pygls.lsp.server import LanguageServer
from pygls.protocol import JsonRPCNotification, LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

from . import __version__, memory, watchdog
from .acceptance import ACCEPT_COMMAND
from .context import build_context
from .models import ModelManager, Target
from .service import EditResult, Service

log = logging.getLogger(__name__)

STATUS = "hone/status"
STATS = "hone/stats"
CONTEXT = "hone/context"  # (textDocument, position) -> the cross-file context a completion there gets
CURSOR = "hone/cursor"  # notification (textDocument, position): the editor placed the cursor there (not typing)
REWRITE = "hone.rewriteSelection"
FILL_HOLES = "hone.fillHoles"
IGNORED = "$/hone/ignored"  # stands in for a message that was already answered with an error
_converter = get_converter()


class HoneProtocol(LanguageServerProtocol):
    """pygls' protocol with two changes.

    Documents live in `Service.documents`, which splits lines as LSP does (pygls' copy would split at
    \\f or U+2028 too) and holds one copy of each: the builtin didOpen/didChange/didClose are
    replaced by plain methods, so only the handlers below see those notifications.
    `workspace/executeCommand` runs as an asyncio task under the request's own id, so `$/cancelRequest`
    reaches a running command (pygls' builtin runs it as a separate, uncancellable task).
    """

    lsp_text_document__did_open = lsp_text_document__did_change = lsp_text_document__did_close = None

    def structure_message(self, data: dict[str, Any]) -> Any:
        """A request whose params do not parse (a negative line, a missing field) gets an InvalidParams
        answer; pygls would log it and leave the client waiting forever."""
        try:
            return super().structure_message(data)
        except JsonRpcException as e:
            if "id" not in data or "method" not in data:
                raise
            self._send_response(data["id"], error=JsonRpcInvalidParams(f"{data['method']}: {e.__cause__ or e}")
                                .to_response_error())
            return JsonRPCNotification(method=IGNORED, jsonrpc=self.VERSION, params=None)

    @lsp_method(types.WORKSPACE_EXECUTE_COMMAND)
    async def lsp_workspace__execute_command(self, params: types.ExecuteCommandParams) -> Any:
        handler = self.fm.commands.get(params.command)
        if handler is None:
            raise JsonRpcInvalidParams(f"unknown command {params.command!r}; this server has {sorted(self.fm.commands)}")
        result = handler(*(params.arguments or []))
        return await result if inspect.isawaitable(result) else result


class HoneServer(LanguageServer):
    def __init__(self, service: Service) -> None:
        super().__init__("hone", __version__, protocol_cls=HoneProtocol,
                         text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.service = service
        self.initialized = False  # `initialize` answered: requests are served
        self.client_ready = False  # `initialized` received: notifications may be sent
        self.loop: asyncio.AbstractEventLoop | None = None
        self.on_editor_gone: Callable[[], None] = self.exit_now  # called from the watchdog's thread

    def exit_now(self) -> None:
        """Stop at once (the editor is gone: nobody reads the answers): no waiting for a model step or a load."""
        self.service.close()
        logging.shutdown()
        os._exit(0)

    def send_status(self, status: dict) -> None:
        """Thread-safe: the model loader calls this from its own thread."""
        if self.client_ready and self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.protocol.notify, STATUS, status)

    def show(self, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        log.warning("%s", message)
        self.window_show_message(types.ShowMessageParams(type=kind, message=f"Hone: {message}"))

    def require_initialized(self) -> None:
        if not self.initialized:
            raise JsonRpcServerNotInitialized("the server has not been initialized")


def build_server(cli_target: Target, models: ModelManager | None = None) -> HoneServer:
    memory.limit_arenas()  # before pygls starts its threads (lsp_server.memory)
    service = Service(models or ModelManager(), cli_target)
    server = HoneServer(service)
    service.notify_status = server.send_status
    service.models.on_change = service.publish_status
    _register(server)
    return server


def _position(p: tuple[int, int]) -> types.Position:
    return types.Position(line=p[0], character=p[1])


def _workspace_edit(ls: HoneServer, result: EditResult) -> types.WorkspaceEdit:
    edits = [types.TextEdit(range=types.Range(_position(a), _position(b)), new_text=t) for a, b, t in result.edits]
    ws = ls.client_capabilities.workspace
    if ws and ws.workspace_edit and ws.workspace_edit.document_changes:
        ident = types.OptionalVersionedTextDocumentIdentifier(uri=result.uri, version=result.version)
        return types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(text_document=ident, edits=edits)])
    return types.WorkspaceEdit(changes={result.uri: edits})


async def _apply(ls: HoneServer, result: EditResult, label: str) -> dict:
    if not result.edits:
        if result.message:
            ls.show(result.message, types.MessageType.Info)
        return {"applied": False, "edits": 0, "message": result.message}
    answer = await ls.workspace_apply_edit_async(
        types.ApplyWorkspaceEditParams(edit=_workspace_edit(ls, result), label=label))
    message = "" if answer.applied else (answer.failure_reason or "the client did not apply the edit")
    return {"applied": bool(answer.applied), "edits": len(result.edits), "message": message}


def initialize(ls: HoneServer, params: types.InitializeParams) -> None:
    ls.loop = asyncio.get_running_loop()
    encoding = ls.workspace.position_encoding
    ls.service.documents.encoding = str(getattr(encoding, "value", encoding) or "utf-16")
    folders = [f.uri for f in params.workspace_folders or []] or ([params.root_uri] if params.root_uri else [])
    ls.service.workspace.set_folders(folders)  # before the settings: the model may be the workspace's adapted one
    for problem in ls.service.configure(params.initialization_options, initial=True):
        ls.show(problem)
    if params.process_id:
        watchdog.watch(params.process_id, ls.on_editor_gone)
    ls.initialized = True


def initialized(ls: HoneServer, params: types.InitializedParams) -> None:
    ls.client_ready = True
    ls.service.publish_status(force=True)
    ws = ls.client_capabilities.workspace
    watched = ws.did_change_watched_files if ws is not None else None
    if watched is not None and watched.dynamic_registration:  # files changed outside the editor keep the index fresh
        options = types.DidChangeWatchedFilesRegistrationOptions(
            watchers=[types.FileSystemWatcher(glob_pattern="**/*.{py,pyi}")])
        reg = types.Registration(id="hone-watch-python", method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
                                 register_options=options)
        ls.client_register_capability(types.RegistrationParams(registrations=[reg]))


def did_change_workspace_folders(ls: HoneServer, params: types.DidChangeWorkspaceFoldersParams) -> None:
    ev = params.event
    ls.service.set_folders([f.uri for f in ev.added], [f.uri for f in ev.removed])


def did_change_watched_files(ls: HoneServer, params: types.DidChangeWatchedFilesParams) -> None:
    ls.service.workspace.files_changed([(c.uri, c.type == types.FileChangeType.Deleted) for c in params.changes])


def did_save(ls: HoneServer, params: types.DidSaveTextDocumentParams) -> None:
    ls.service.workspace.files_changed([(params.text_document.uri, False)])


def shutdown(ls: HoneServer, params: None) -> None:
    ls.service.close()


async def did_change_configuration(ls: HoneServer, params: types.DidChangeConfigurationParams) -> None:
    raw = params.settings
    ws = ls.client_capabilities.workspace if ls.initialized else None
    if not raw and ws is not None and ws.configuration:  # the client wants us to pull
        items = [types.ConfigurationItem(section="hone")]
        raw = (await ls.workspace_configuration_async(types.ConfigurationParams(items=items)))[0]
    for problem in ls.service.configure(raw, initial=False):
        ls.show(problem)
    ls.service.publish_status()


def did_open(ls: HoneServer, params: types.DidOpenTextDocumentParams) -> None:
    td = params.text_document
    ls.service.documents.open(td.uri, td.text, td.version)
    ls.service.workspace.opened(td.uri, td.text)
    ls.service.acceptance.language(td.uri, td.language_id)


def did_change(ls: HoneServer, params: types.DidChangeTextDocumentParams) -> None:
    doc = ls.service.documents.get(params.text_document.uri)
    if doc is None:
        log.warning("didChange for a document that is not open: %s", params.text_document.uri)
        return
    for change in params.content_changes:
        if isinstance(change, types.TextDocumentContentChangePartial):
            r = change.range
            doc.apply(change.text, (r.start.line, r.start.character), (r.end.line, r.end.character))
        else:
            doc.apply(change.text)
    doc.version = params.text_document.version
    ls.service.workspace.changed(params.text_document.uri, doc.text)


def did_close(ls: HoneServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.service.cancel_document(params.text_document.uri)
    ls.service.documents.close(params.text_document.uri)
    ls.service.typed.forget(params.text_document.uri)
    ls.service.workspace.closed(params.text_document.uri)
    ls.service.acceptance.closed(params.text_document.uri)


async def inline_completion(ls: HoneServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
    ls.require_initialized()
    explicit = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
    info = params.context.selected_completion_info
    selected = None if info is None else ((info.range.start.line, info.range.start.character),
                                          (info.range.end.line, info.range.end.character), info.text)
    c = await ls.service.complete(params.text_document.uri, params.position.line, params.position.character,
                                  explicit=explicit, selected=selected)
    if c is None:
        return types.InlineCompletionList(items=[])
    here = _position(c.position)
    end = here if c.replace_end is None else _position(c.replace_end)
    return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=c.text, range=types.Range(here, end),
                                                                        command=_accept_command(c))])


def _accept_command(c) -> types.Command | None:
    """What the editor runs when the user accepts the suggestion: it tells the acceptance counters."""
    return None if c.shown_id is None else types.Command("Hone: accepted", ACCEPT_COMMAND, arguments=[c.shown_id])


def accepted(ls: HoneServer, *args: Any) -> bool:
    """hone.accepted(id): the editor accepted suggestion `id` (lsp_server.acceptance); False for an unknown id."""
    if len(args) != 1 or not isinstance(args[0], int) or isinstance(args[0], bool):
        raise JsonRpcInvalidParams(f"{ACCEPT_COMMAND} takes (id: integer)")
    return ls.service.acceptance.accepted(args[0])


async def completion(ls: HoneServer, params: types.CompletionParams) -> types.CompletionList:
    ls.require_initialized()
    # no explicit flag: clients send "Invoked" for every identifier typed, so these are debounced too
    c = await ls.service.complete(params.text_document.uri, params.position.line, params.position.character)
    if c is None:
        return types.CompletionList(is_incomplete=True, items=[])
    here = _position(c.position)
    first = c.text.strip().splitlines()[0] if c.text.strip() else c.text
    item = types.CompletionItem(
        label=first if len(first) <= 60 else first[:59] + "…",
        kind=types.CompletionItemKind.Text,
        detail="Hone",
        documentation=types.MarkupContent(kind=types.MarkupKind.Markdown, value=f"```\n{c.text}\n```"),
        text_edit=types.TextEdit(range=types.Range(here, here), new_text=c.text),
        insert_text_format=types.InsertTextFormat.PlainText,
        insert_text_mode=types.InsertTextMode.AsIs,  # the text already carries its indentation
        sort_text="0",
        command=_accept_command(c),
        preselect=True,
    )
    return types.CompletionList(is_incomplete=True, items=[item])


async def rewrite_selection(ls: HoneServer, *args: Any) -> dict:
    ls.require_initialized()
    try:
        uri, raw_range = args
        if not isinstance(uri, str):
            raise TypeError("uri must be a string")
        r = _converter.structure(raw_range, types.Range)
    except Exception as e:
        raise JsonRpcInvalidParams(f"{REWRITE} takes (uri, range): {e}") from e
    result = await ls.service.rewrite(uri, (r.start.line, r.start.character), (r.end.line, r.end.character))
    return await _apply(ls, result, "Hone: rewrite selection")


async def fill_holes(ls: HoneServer, *args: Any) -> dict:
    ls.require_initialized()
    if len(args) != 1 or not isinstance(args[0], str):
        raise JsonRpcInvalidParams(f"{FILL_HOLES} takes (uri)")
    result = await ls.service.fill_holes(args[0])
    return await _apply(ls, result, "Hone: fill holes")


def stats(ls: HoneServer, params: Any) -> dict:
    return {**msgspec.to_builtins(ls.service.counters), "status": ls.service.status(),
            "workspace": ls.service.workspace.stats(), "memory": ls.service.memory_stats(),
            "acceptance": ls.service.acceptance.stats(), "adaptation": ls.service.adaptation_stats()}


def plain(obj: Any) -> Any:
    """pygls hands the params of methods it does not know over as namedtuples: back to dicts and lists."""
    if hasattr(obj, "_asdict"):
        return {k: plain(v) for k, v in obj._asdict().items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    return obj


def repo_context(ls: HoneServer, params: Any) -> dict:
    """What the workspace index retrieves for a position (whether or not the model reads it) and the copy hints a
    line completion there gets (from the document, then the workspace's other files): to see what the model is
    given, and for tests."""
    ls.require_initialized()
    try:
        p = _converter.structure(plain(params), types.TextDocumentPositionParams)
    except Exception as e:
        raise JsonRpcInvalidParams(f"{CONTEXT} takes {{textDocument: {{uri}}, position: {{line, character}}}}: {e}") from e
    doc = ls.service.documents.get(p.text_document.uri)
    if doc is None:
        raise JsonRpcInvalidParams(f"{CONTEXT}: {p.text_document.uri} is not open")
    uri, text, offset = p.text_document.uri, doc.text, doc.offset_at(p.position.line, p.position.character)
    context = ls.service.workspace.context_for(uri, text, offset)
    hints = build_context(text, offset, elsewhere=ls.service.workspace.elsewhere(uri)).hints
    return {"context": context, "chars": len(context), "hints": list(hints)}


def cursor(ls: HoneServer, params: Any) -> None:
    """The editor placed the cursor (a click, a jump, a newly shown editor): the completion there is computed ahead
    once it rests (Service.cursor). A notification: malformed params or an unknown document are logged, not answered."""
    try:
        p = _converter.structure(plain(params), types.TextDocumentPositionParams)
    except Exception as e:  # noqa: BLE001 - whatever was sent, the server stays up
        log.warning("%s takes {textDocument: {uri}, position: {line, character}}: %s", CURSOR, e)
        return
    if ls.service.documents.get(p.text_document.uri) is None:
        log.debug("%s for a document that is not open: %s", CURSOR, p.text_document.uri)
        return
    ls.service.cursor(p.text_document.uri, p.position.line, p.position.character)


FEATURES = [  # (LSP method, options, handler): registered by build_server
    (types.INITIALIZE, None, initialize),
    (types.INITIALIZED, None, initialized),
    (types.SHUTDOWN, None, shutdown),
    (types.WORKSPACE_DID_CHANGE_CONFIGURATION, None, did_change_configuration),
    (types.TEXT_DOCUMENT_DID_OPEN, None, did_open),
    (types.TEXT_DOCUMENT_DID_CHANGE, None, did_change),
    (types.TEXT_DOCUMENT_DID_CLOSE, None, did_close),
    (types.TEXT_DOCUMENT_DID_SAVE, None, did_save),
    (types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS, None, did_change_workspace_folders),
    (types.WORKSPACE_DID_CHANGE_WATCHED_FILES, None, did_change_watched_files),
    (types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions(), inline_completion),
    (types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[".", "(", "["]), completion),
    (STATS, None, stats),
    (CONTEXT, None, repo_context),
    (CURSOR, None, cursor),
]
COMMANDS = [(REWRITE, rewrite_selection), (FILL_HOLES, fill_holes), (ACCEPT_COMMAND, accepted)]


def _register(server: HoneServer) -> None:
    for method, options, handler in FEATURES:
        server.feature(method, options)(handler)
    for name, handler in COMMANDS:
        server.command(name)(handler)
