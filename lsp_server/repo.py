"""The server's side of the workspace index (model.workspace): workspace folders from the client, open buffers
over disk, saved and watched files, a background scan that never sits on a request's path."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from urllib.parse import unquote, urlparse

from model.reports.common import pct
from model.workspace import WorkspaceIndex

log = logging.getLogger(__name__)

SCAN_NICE = 19  # the scan thread's priority (Linux: per thread): completions and the model come first
RETRIEVALS_KEPT = 512  # the latest retrievals' times kept for the stats' percentiles


def uri_path(uri: str) -> str | None:
    """The local path of a file:// URI (None for other schemes: untitled buffers, remote files)."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    return os.path.normpath(unquote(parsed.path))


class Workspace:
    """Folders, buffers and file events in; cross-file context (`context_for`) and the names grounding checks (`knows`)
    out. The folders are scanned (at the lowest priority) once context or grounding first asks: with grounding off and
    a model that reads no context there is no scan at all."""

    def __init__(self, index: WorkspaceIndex | None = None):
        self.index = index or WorkspaceIndex()
        self._lock = threading.Lock()
        self._pending: dict[str, str] = {}  # open buffers edited since the index last read them: path -> text
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.scans = 0
        self.scan_s: float | None = None  # the last scan's seconds
        self.retrieval_ms: deque[float] = deque(maxlen=RETRIEVALS_KEPT)
        self.scanning = False
        self.wanted = False  # context has been asked for: scan the folders (and rescan when they change)

    # ---- folders and files ---------------------------------------------------------------------

    def set_folders(self, added: list[str], removed: list[str] = ()) -> None:
        """Workspace folder URIs added and removed; the folders are (re)scanned in the background."""
        for uri in removed:
            if (path := uri_path(uri)) is not None:
                self.index.remove_root(path)
        roots = [p for uri in added if (p := uri_path(uri)) is not None and os.path.isdir(p)]
        for path in roots:
            self.index.add_root(path)
        if roots and self.wanted:
            self._start_scan()

    def opened(self, uri: str, text: str) -> None:
        if (path := uri_path(uri)) is not None and path.endswith((".py", ".pyi")):
            self.index.open(path, text)

    def changed(self, uri: str, text: str) -> None:
        """An open buffer changed: read by the index when another file next asks for context (not per keystroke)."""
        if (path := uri_path(uri)) is not None and path.endswith((".py", ".pyi")):
            with self._lock:
                self._pending[path] = text

    def closed(self, uri: str) -> None:
        if (path := uri_path(uri)) is not None:
            with self._lock:
                self._pending.pop(path, None)
            self.index.close(path)

    def files_changed(self, changes: list[tuple[str, bool]]) -> None:
        """Watched or saved files: (uri, deleted) each; the others are read again from disk."""
        for uri, deleted in changes:
            path = uri_path(uri)
            if path is None or not path.endswith((".py", ".pyi")):
                continue
            if deleted:
                self.index.remove_file(path)
            else:
                self.index.reload(path)

    # ---- retrieval -----------------------------------------------------------------------------

    def context_for(self, uri: str, text: str, offset: int) -> str:
        """Cross-file context for a completion at `offset` of the document `uri` ("" outside a file)."""
        path = uri_path(uri)
        if path is None:
            return ""
        self._want()
        self._flush_others(path)
        t0 = time.perf_counter()
        try:
            return self.index.context_for(path, text, offset)
        finally:
            self.retrieval_ms.append((time.perf_counter() - t0) * 1000)

    def elsewhere(self, uri: str) -> Iterator[str]:
        """The other indexed files' texts for cross-file copy hints (model.workspace.WorkspaceIndex.elsewhere),
        read lazily; nothing outside a file or before the first scan has finished."""
        path = uri_path(uri)
        self._want()
        if path is None or not self.scans:
            return iter(())
        self._flush_others(path)
        return self.index.elsewhere(path)

    def _flush_others(self, path: str) -> None:
        """Index the other open buffers' edits (the file asking is read as it is given, not through the index)."""
        with self._lock:
            pending = [(p, t) for p, t in self._pending.items() if p != path]
            for p, _ in pending:
                del self._pending[p]
        for p, t in pending:
            self.index.open(p, t)

    def _want(self) -> None:
        """The first request for context (or grounding) starts the scan; it answers from what is indexed so far."""
        if not self.wanted:
            self.wanted = True
            if self.index.roots:
                self._start_scan()

    def knows(self) -> tuple[Callable[[str], bool], Callable[[str], bool]] | None:
        """(whether the workspace's code uses or defines a name, whether it defines it) once a folder's first scan
        has finished; None before (or without workspace folders): what other files hold is not known yet."""
        self._want()
        if not self.scans or not self.index.roots:
            return None
        return self.index.knows, self.index.defines

    def stats(self) -> dict:
        ms = list(self.retrieval_ms)
        at = (lambda q: round(pct(ms, q), 3)) if ms else (lambda q: None)
        return {**self.index.stats(), "scanning": self.scanning, "scans": self.scans,
                "lastScanSeconds": None if self.scan_s is None else round(self.scan_s, 2),
                "retrievals": len(ms), "retrievalP50Ms": at(0.5), "retrievalP95Ms": at(0.95)}

    # ---- background scan -----------------------------------------------------------------------

    def _start_scan(self) -> None:
        self._wake.set()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._scan_loop, name="hone-index", daemon=True)
            self._thread.start()

    def _scan_loop(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SCAN_NICE)
        except (AttributeError, OSError):  # not Linux, or not allowed: the scan still yields between files
            pass
        while not self._stop.is_set():
            self._wake.wait()
            if self._stop.is_set():
                return
            self._wake.clear()
            self.scanning, t0 = True, time.perf_counter()
            try:
                self.index.scan(should_stop=lambda: self._stop.is_set() or self._wake.is_set())
            except Exception:  # noqa: BLE001 - a broken scan must not take the server down; completions go on
                log.exception("workspace scan failed")
            finally:
                self.scanning, self.scan_s = False, time.perf_counter() - t0
                self.scans += 1

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
