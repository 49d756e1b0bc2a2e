"""lsp_server.repo: the server's side of the workspace index (folders, buffers, copy-hint sources)."""

import time

from lsp_server.repo import Workspace


def _scanned(ws: Workspace, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not ws.scans or ws.scanning:
        assert time.monotonic() < end, "the scan never finished"
        time.sleep(0.01)


def test_copy_hint_sources_are_the_other_files_with_their_unsaved_edits(tmp_path):
    (tmp_path / "a.py").write_text("x = store.get(1)\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    ws = Workspace()
    try:
        ws.set_folders([tmp_path.as_uri()])
        me = (tmp_path / "b.py").as_uri()
        # the first ask starts the scan and does not wait for it (a two-file scan may still end first: either answer)
        assert list(ws.elsewhere(me)) in ([], ["x = store.get(1)\n"])
        _scanned(ws)
        assert list(ws.elsewhere(me)) == ["x = store.get(1)\n"]
        other = (tmp_path / "a.py").as_uri()
        ws.opened(other, "x = store.get(1)\n")
        ws.changed(other, "x = store.get(2)  # edited, not saved\n")
        ws.changed(me, "y = 3\n")  # the asking file's own edits are not its own source
        assert list(ws.elsewhere(me)) == ["x = store.get(2)  # edited, not saved\n"]
        assert list(ws.elsewhere("untitled:Untitled-1")) == []
    finally:
        ws.close()
