"""End to end over stdio: the server's workspace index (workspace folders, open buffers, watched and saved files)
and the cross-file context it gives a model trained with context (a tiny random one here: structure, not text)."""

import asyncio

import pytest
from lsprotocol import types

from conftest import lsp_plain
from lsp_docs import inline, stats

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

FAST = {"maxTokens": 6, "debounceMs": 0, "deadlineMs": 0}
MODELS = "class Store:\n    def __init__(self, root):\n        self.root = root\n\n    def get_item(self, key):\n        return key\n"
APP = "from .models import Store\n\n\ndef main():\n    store = Store('.')\n    return store.\n"


@pytest.fixture(scope="module")
def ctx_model(tmp_path_factory):
    from model.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("ctx") / "tiny-ctx", layout="spm", shifted=True, context_tokens=64)


def _project(root):
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "models.py").write_text(MODELS)
    (root / "pkg" / "app.py").write_text(APP)
    (root / ".venv").mkdir()
    (root / ".venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (root / ".venv" / "skipped.py").write_text("x = 1\n")
    return root


async def _context(client, uri: str) -> dict:
    return lsp_plain(await client.protocol.send_request_async(
        "hone/context", {"textDocument": {"uri": uri}, "position": {"line": 5, "character": 17}}))


async def _files(client, want: int, timeout: float = 30.0) -> dict:
    """hone/stats' workspace section once the index holds `want` files (open ones included) and no scan runs."""
    end = asyncio.get_running_loop().time() + timeout
    while True:
        ws = (await stats(client))["workspace"]
        if ws["files"] + ws["pending_buffers"] == want and not ws["scanning"]:  # (open buffers are read when asked)
            return ws
        if asyncio.get_running_loop().time() > end:
            raise AssertionError(f"workspace index never reached {want} files: {ws}")
        await asyncio.sleep(0.05)


async def test_workspace_index_follows_folders_files_and_buffers(tmp_path, ctx_model, lsp_start_client, lsp_stop_client,
                                                                  lsp_server_command, lsp_wait_status):
    root = _project(tmp_path / "proj")
    other = tmp_path / "other"
    other.mkdir()
    (other / "tool.py").write_text("def helper(x):\n    return x\n")
    command = [*lsp_server_command[:3], "--model", str(ctx_model), "--device", "cpu", "--no-compile"]
    c = await lsp_start_client(FAST, command=command, initialize=False)
    try:
        from pytest_lsp import client_capabilities

        caps = client_capabilities("visual-studio-code")
        c.init_result = await c.initialize_session(types.InitializeParams(
            capabilities=caps, initialization_options=FAST,
            workspace_folders=[types.WorkspaceFolder(root.as_uri(), "proj")]))
        await lsp_wait_status(c, "ready")
        uri = (root / "pkg" / "app.py").as_uri()
        c.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", 1, APP)))
        assert (await stats(c))["workspace"]["scans"] == 0  # nothing is scanned before context is asked for
        await _context(c, uri)  # the first request for context starts the scan
        await _files(c, 3)  # the virtualenv is skipped
        # a folder added, then removed
        c.workspace_did_change_workspace_folders(types.DidChangeWorkspaceFoldersParams(types.WorkspaceFoldersChangeEvent(
            added=[types.WorkspaceFolder(other.as_uri(), "other")], removed=[])))
        await _files(c, 4)
        c.workspace_did_change_workspace_folders(types.DidChangeWorkspaceFoldersParams(types.WorkspaceFoldersChangeEvent(
            added=[], removed=[types.WorkspaceFolder(other.as_uri(), "other")])))
        await _files(c, 3)
        # a file created on disk and announced by the client's watcher; then deleted
        new = root / "pkg" / "extra.py"
        new.write_text("LIMIT = 10\n")
        c.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(
            [types.FileEvent(new.as_uri(), types.FileChangeType.Created)]))
        await _files(c, 4)
        new.unlink()
        c.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(
            [types.FileEvent(new.as_uri(), types.FileChangeType.Deleted)]))
        await _files(c, 3)
        # a completion in app.py carries context from models.py (the model was trained with context)
        got = await _context(c, uri)
        assert "class Store" in got["context"] and "def get_item(self, key)" in got["context"]
        assert "return key" not in got["context"]  # signatures, not bodies
        assert "from .models import Store" not in got["context"]  # never the file itself
        await inline(c, uri, 5, 17)
        counts = await stats(c)
        assert counts["modelRuns"] == 1 and counts["errors"] == 0
        assert counts["repoContexts"] == 1 and counts["workspace"]["files"] + counts["workspace"]["pending_buffers"] == 3
    finally:
        await lsp_stop_client(c)


async def test_a_line_gets_copy_hints_from_the_other_files(tmp_path, ctx_model, lsp_start_client, lsp_stop_client,
                                                            lsp_server_command, lsp_wait_status):
    """A line whose start is written elsewhere in the workspace gets that place's rest as a copy hint (the document's
    own first), once the folder is indexed; the completion runs with it."""
    root = _project(tmp_path / "proj")
    (root / "pkg" / "cli.py").write_text("def run(store, key):\n    value = store.get_item(key, default=None)\n")
    command = [*lsp_server_command[:3], "--model", str(ctx_model), "--device", "cpu", "--no-compile"]
    c = await lsp_start_client(FAST, command=command, initialize=False)
    try:
        c.init_result = await c.initialize_session(types.InitializeParams(
            capabilities=types.ClientCapabilities(), initialization_options=FAST,
            workspace_folders=[types.WorkspaceFolder(root.as_uri(), "proj")]))
        await lsp_wait_status(c, "ready")
        uri = (root / "pkg" / "app.py").as_uri()
        text = APP + "\n\ndef other(store):\n    first = store.get_item(1)\n    value = store.get_item"
        c.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", 1, text)))
        await _context(c, uri)  # starts the scan
        await _files(c, 4)
        got = lsp_plain(await c.protocol.send_request_async(
            "hone/context", {"textDocument": {"uri": uri}, "position": {"line": 11, "character": 26}}))
        assert got["hints"] == ["(1)", "(key, default=None)"]
        await inline(c, uri, 11, 26)
        assert (await stats(c))["modelRuns"] == 1
    finally:
        await lsp_stop_client(c)


async def test_a_model_without_context_gets_none(lsp_start_client, lsp_stop_client, lsp_wait_status):
    """The default test model was not trained with context: the index is kept, nothing is sent."""
    c = await lsp_start_client(FAST)
    try:
        await lsp_wait_status(c, "ready")
        uri = "file:///work/ws_plain.py"
        c.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
            uri, "python", 1, "import os\n\ndef size(path):\n    return \n")))
        await inline(c, uri, 3, 11)
        counts = await stats(c)
        assert counts["repoContexts"] == 0 and counts["errors"] == 0
    finally:
        await lsp_stop_client(c)
