"""`hone bench soak`: a day of typing in minutes, through the real server over stdio (lsp_server.bench's client).

A deterministic mix (seeded) of typing, jumps between several open files (each told as `hone/cursor`), huge lines,
odd edits (deletions, whole-document replacements, lone surrogates, control characters, CRLF text, ranges past the
end), `$/cancelRequest`, closes and reopens, and junk (bodies that are not JSON, invalid params, unknown methods).
At most --inflight requests are outstanding at a time; every request must be answered (a result or an error), else
it is lost. Prints the server's resident memory (VmRSS) at intervals, answered/lost counts and latency percentiles,
then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field

from model.reports import common
from model.reports.common import pct
from model.serving.bench import add_option

from . import memory
from .bench import _Client, _rss_mb, _start

ANSWER_TIMEOUT_S = 120.0  # a request not answered within this is lost
WARMUP_SHARE = 0.2  # growth is measured from the RSS after this share of the requests (caches filled, steps loaded)
ODD_TEXTS = ["\ud800", "\udfff + '😀'", "\x00\x1b[31m", "\u2028", "\x0c\x1c", "\t\t", "é" * 40, "𝔘𝔫𝔦" * 10]


def add_args(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--requests", type=int, default=2000, help="soak: requests sent in all")
    add_option(parser, "--inflight", type=int, default=8, help="soak: the most requests outstanding at a time")
    add_option(parser, "--files", type=int, default=6, help="soak: documents open at a time")
    add_option(parser, "--report-every", type=int, default=None, help="soak: a line of figures every N requests "
               "(default: a tenth of them)")


def _u16(s: str) -> int:
    """LSP's default position unit: UTF-16 code units."""
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


@dataclass
class _Doc:
    uri: str
    original: str
    lines: list[str]
    version: int = 1
    line: int = 0  # the cursor
    col: int = 0  # (a str index into lines[line])
    typing: str = ""  # what is left of the snippet being typed


@dataclass
class _Tally:
    sent: int = 0
    answered: int = 0
    errors: int = 0  # answered with a JSON-RPC error (cancelled, invalid params, unknown method)
    suggestions: int = 0
    ms: list[float] = field(default_factory=list)


class Soak:
    def __init__(self, c: _Client, args: argparse.Namespace):
        self.c, self.t = c, c.types
        self.rng = random.Random(getattr(args, "seed", 0))
        self.total = getattr(args, "requests", 2000)
        self.slots = asyncio.Semaphore(max(1, getattr(args, "inflight", 8)))
        self.tally = _Tally()
        self.pending: set[asyncio.Task] = set()
        cases = common.typing_cases(max(1, getattr(args, "files", 6)), getattr(args, "seed", 0))
        self.docs = [_Doc(f"file:///soak/{k}_{case.name}", case.document, case.document.split("\n"))
                     for k, case in enumerate(cases)]
        self.snippets = [case.typed for case in cases]
        self.doc = self.docs[0]

    # ---- sending --------------------------------------------------------------------------------

    async def _request(self, method: str, params, msg_id=None) -> None:
        """Send a request and count its answer; holds one in-flight slot until it comes."""
        from pygls.exceptions import JsonRpcException

        await self.slots.acquire()
        self.tally.sent += 1
        t0 = time.perf_counter()
        try:
            fut = self.c.lc.protocol.send_request_async(method, params, msg_id=msg_id)
        except Exception:
            self.slots.release()
            raise

        async def wait() -> None:
            try:
                res = await asyncio.wait_for(fut, ANSWER_TIMEOUT_S)
                self.tally.suggestions += bool(getattr(res, "items", None))
            except JsonRpcException:
                self.tally.errors += 1
            except TimeoutError:
                return  # lost
            finally:
                self.slots.release()
            self.tally.answered += 1
            self.tally.ms.append((time.perf_counter() - t0) * 1000)

        task = asyncio.ensure_future(wait())
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _inline(self, d: _Doc, explicit: bool = False, msg_id=None, line: int | None = None,
                      col16: int | None = None) -> None:
        line = d.line if line is None else line
        col16 = _u16(d.lines[d.line][: d.col]) if col16 is None else col16
        await self._request(self.t.TEXT_DOCUMENT_INLINE_COMPLETION, self.c.inline_params(d.uri, line, col16, explicit),
                            msg_id)

    def _edit(self, d: _Doc, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
        """Replace lines[start..end) (line, str index) by text, in the mirror and on the server."""
        t = self.t
        (l0, c0), (l1, c1) = start, end
        rng = t.Range(t.Position(l0, _u16(d.lines[l0][:c0])), t.Position(l1, _u16(d.lines[l1][:c1])))
        d.version += 1
        self.c.lc.text_document_did_change(t.DidChangeTextDocumentParams(
            t.VersionedTextDocumentIdentifier(version=d.version, uri=d.uri),
            [t.TextDocumentContentChangePartial(range=rng, text=text)]))
        new = (d.lines[l0][:c0] + text + d.lines[l1][c1:]).split("\n")
        d.lines[l0 : l1 + 1] = new
        last = text.split("\n")[-1]
        d.line, d.col = l0 + text.count("\n"), (c0 + len(text)) if "\n" not in text else len(last)  # after the text

    def _replace_all(self, d: _Doc, text: str, mirror: str | None = None) -> None:
        """The whole document replaced (the mirror takes `mirror` when the text sent splits differently)."""
        t = self.t
        d.version += 1
        self.c.lc.text_document_did_change(t.DidChangeTextDocumentParams(
            t.VersionedTextDocumentIdentifier(version=d.version, uri=d.uri),
            [t.TextDocumentContentChangeWholeDocument(text=text)]))
        d.lines = (text if mirror is None else mirror).split("\n")
        d.line = min(d.line, len(d.lines) - 1)
        d.col = min(d.col, len(d.lines[d.line]))

    def _junk_bytes(self, body: bytes) -> None:
        writer = self.c.lc.protocol.writer
        res = writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        if asyncio.iscoroutine(res) or isinstance(res, asyncio.Future):
            asyncio.ensure_future(res)

    # ---- the mix ----------------------------------------------------------------------------------

    async def type_key(self, explicit: bool = False) -> None:
        d = self.doc
        if not d.typing:
            d.typing = self.rng.choice(self.snippets) + "\n"
        ch, d.typing = d.typing[0], d.typing[1:]
        self._edit(d, (d.line, d.col), (d.line, d.col), ch)
        await self._inline(d, explicit)

    async def jump(self) -> None:
        """To another place, as an editor says it (hone/cursor); sometimes it rests long enough for the server to
        start the completion there ahead, and the request then cancels or reuses it."""
        self.doc = d = self.rng.choice(self.docs)
        d.line = self.rng.randrange(len(d.lines))
        d.col = self.rng.randint(0, len(d.lines[d.line]))
        d.typing = ""
        self.c.cursor(d.uri, d.line, _u16(d.lines[d.line][: d.col]))
        if self.rng.random() < 0.3:
            await asyncio.sleep(self.rng.uniform(0.1, 0.3))
        await self._inline(d, explicit=self.rng.random() < 0.3)

    async def cancel(self) -> None:
        d = self.doc
        msg_id = f"soak-cancel-{self.tally.sent}"
        await self._inline(d, explicit=True, msg_id=msg_id)
        if self.rng.random() < 0.5:
            await asyncio.sleep(self.rng.uniform(0, 0.02))  # sometimes after the model started
        self.c.lc.protocol.notify(self.t.CANCEL_REQUEST, self.t.CancelParams(id=msg_id))

    async def huge_line(self) -> None:
        d = self.doc
        n = self.rng.choice([5_000, 50_000, 200_000])
        text = "x = '" + "".join(self.rng.choice("abcdefgh ") for _ in range(64)) * (n // 64) + "'\n"
        self._edit(d, (d.line, 0), (d.line, 0), text)
        huge = d.line - 1
        await self._inline(d, line=huge, col16=_u16(d.lines[huge]) // 2)
        await self._inline(d, line=huge, col16=_u16(d.lines[huge]))
        self._edit(d, (huge, 0), (huge + 1, 0), "")  # gone again: the document does not keep growing

    async def odd_edit(self) -> None:
        d, rng = self.doc, self.rng
        kind = rng.randrange(5)
        if kind == 0 and len(d.lines) > 10:  # delete a few lines
            a = rng.randrange(len(d.lines) - 5)
            self._edit(d, (a, 0), (a + rng.randint(1, 4), 0), "")
        elif kind == 1:  # odd characters at the cursor
            self._edit(d, (d.line, d.col), (d.line, d.col), rng.choice(ODD_TEXTS))
        elif kind == 2:  # the editor replaced the document (a revert, a formatter)
            self._replace_all(d, d.original)
        elif kind == 3:  # CRLF line ends, then back
            text = "\n".join(d.lines)
            self._replace_all(d, text.replace("\n", "\r\n"), mirror=text)
            await self._inline(d)
            self._replace_all(d, text)
        else:  # a range past the end of the document, then the editor's full text again
            t = self.t
            d.version += 1
            far = t.Position(len(d.lines) + 50, 9)
            self.c.lc.text_document_did_change(t.DidChangeTextDocumentParams(
                t.VersionedTextDocumentIdentifier(version=d.version, uri=d.uri),
                [t.TextDocumentContentChangePartial(range=t.Range(far, t.Position(1, 0)), text="z")]))
            self._replace_all(d, "\n".join(d.lines))
        d.line = min(d.line, len(d.lines) - 1)
        d.col = min(d.col, len(d.lines[d.line]))
        await self._inline(d)

    async def junk(self) -> None:
        t, rng = self.t, self.rng
        kind = rng.randrange(6)
        if kind == 0:
            self._junk_bytes(b'{"jsonrpc": "2.0", "id": 1, "method": ')  # not JSON: no answer is owed
            await self._request("hone/stats", None)
        elif kind == 1:  # params that do not parse (a negative line): answered with InvalidParams
            await self._request("hone/context", {"textDocument": {"uri": 5}, "position": {"line": -3}})
        elif kind == 2:
            await self._request("hone/noSuchMethod", {"x": rng.random()})
        elif kind == 3:
            self.c.lc.protocol.notify("hone/noSuchNotification", {"x": 1})
            self.c.lc.protocol.notify("hone/cursor", {"textDocument": {"uri": 7}, "position": None})
            self.c.lc.protocol.notify(t.CANCEL_REQUEST, t.CancelParams(id=f"never-sent-{rng.random()}"))
            await self._request("hone/stats", None)
        elif kind == 4:  # a document that was never opened
            await self._request(t.TEXT_DOCUMENT_INLINE_COMPLETION,
                                self.c.inline_params("file:///soak/never.py", 3, 3, True))
        else:
            d = self.doc
            await self._request(t.TEXT_DOCUMENT_COMPLETION, t.CompletionParams(
                text_document=t.TextDocumentIdentifier(d.uri), position=t.Position(d.line, _u16(d.lines[d.line][: d.col]))))

    async def reopen(self) -> None:
        d = self.rng.choice(self.docs)
        self.c.close(d.uri)
        self.c.open(d.uri, d.original)
        d.lines, d.version, d.line, d.col, d.typing = d.original.split("\n"), 1, 0, 0, ""
        await self._inline(d)

    MIX = [("type_key", 50), ("jump", 8), ("cancel", 15), ("huge_line", 1), ("odd_edit", 8), ("junk", 8),
           ("reopen", 2), ("explicit", 8)]

    async def step(self) -> None:
        names, weights = zip(*self.MIX)
        what = self.rng.choices(names, weights)[0]
        if what == "explicit":
            await self.type_key(explicit=True)
        else:
            await getattr(self, what)()


async def _run(args: argparse.Namespace) -> dict:
    c, status, startup_ms, ready_ms = await _start(args, {})
    rss_first = c.rss_first_mb
    soak = Soak(c, args)
    for d in soak.docs:
        c.open(d.uri, d.original)
    total = soak.total
    every = getattr(args, "report_every", None) or max(1, total // 10)
    warm_at = max(1, int(total * WARMUP_SHARE))
    rss_start = _rss_mb(c)
    rss_warm = None
    samples = [(0, rss_start)]
    print(f"RSS at the first completion {rss_first:.0f} MB, with the model's steps settled {rss_start:.0f} MB")
    print(f"{'requests':>9} {'answered':>9} {'open':>5} {'RSS MB':>7} {'p50 ms':>7} {'p95 ms':>7}  (latency of the interval)")
    t0 = time.perf_counter()
    last_ms = 0
    while soak.tally.sent < total:
        before = soak.tally.sent
        await soak.step()
        sent = soak.tally.sent
        if before < warm_at <= sent:
            rss_warm = _rss_mb(c)
        if before // every != sent // every:
            ms = soak.tally.ms[last_ms:]
            last_ms = len(soak.tally.ms)
            samples.append((sent, _rss_mb(c)))
            print(f"{sent:9d} {soak.tally.answered:9d} {len(soak.pending):5d} "
                  f"{samples[-1][1]:7.0f} {pct(ms, 0.5) or 0:7.1f} {pct(ms, 0.95) or 0:7.1f}")
    if soak.pending:
        await asyncio.wait(list(soak.pending))
    seconds = time.perf_counter() - t0
    rss_end = _rss_mb(c)
    await asyncio.sleep(memory.QUIET_TRIM_S + 1)  # the storm is over: what the server keeps while the user reads
    rss_quiet = _rss_mb(c)
    stats = await c.stats()
    await c.shutdown()

    tally = soak.tally
    rss_warm = rss_start if rss_warm is None else rss_warm
    figures = {
        "requests": tally.sent, "answered": tally.answered, "lost": tally.sent - tally.answered,
        "errors": tally.errors, "suggestions": tally.suggestions,
        "rss_first_completion_mb": round(rss_first, 1), "rss_start_mb": round(rss_start, 1),
        "rss_warm_mb": round(rss_warm, 1), "rss_end_mb": round(rss_end, 1),
        "rss_max_mb": round(max(s[1] for s in samples + [(0, rss_end)]), 1),
        "growth_after_warmup_mb": round(rss_end - rss_warm, 1), "rss_quiet_mb": round(rss_quiet, 1),
        "p50_ms": pct(tally.ms, 0.5), "p95_ms": pct(tally.ms, 0.95), "seconds": round(seconds, 1),
        "model": status.get("model"), "steps": c.statuses[-1].get("steps") if c.statuses else None,
        "server_counters": {k: v for k, v in stats.items() if isinstance(v, int)},
        "server_memory": stats.get("memory"),
        "rss_samples": [[n, round(mb, 1)] for n, mb in samples + [(tally.sent, rss_end)]],
    }
    print(f"{tally.sent} requests in {seconds:.0f} s: {tally.answered} answered ({tally.errors} with an error, "
          f"{tally.suggestions} suggestions), {figures['lost']} lost; latency p50 {figures['p50_ms'] or 0:.1f} ms, "
          f"p95 {figures['p95_ms'] or 0:.1f} ms")
    print(f"server RSS: {rss_start:.0f} MB at start, {rss_warm:.0f} MB after warm-up ({WARMUP_SHARE:.0%} of the "
          f"requests), {rss_end:.0f} MB at the end: {figures['growth_after_warmup_mb']:+.1f} MB after warm-up; "
          f"{rss_quiet:.0f} MB after {memory.QUIET_TRIM_S + 1:g} s quiet")
    mem = stats.get("memory") or {}
    for name, cache in (mem.get("caches") or {}).items():
        print(f"  cache {name}: {cache['entries']} entries, {cache['bytes'] / 1024:.0f} KiB"
              f" (bounds: {cache.get('maxEntries')} entries, {cache.get('maxBytes')} bytes)")
    print(json.dumps(figures))
    return figures


def run(args: argparse.Namespace) -> dict:
    return asyncio.run(_run(args))


def main(argv: list[str] | None = None) -> int:
    from .bench import add_args as add_lsp_args

    p = argparse.ArgumentParser(prog="hone bench soak", description=__doc__.split("\n")[0])
    add_args(p)
    add_lsp_args(p)
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
