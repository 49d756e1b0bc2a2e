"""`hone bench lsp`: the real language server over stdio, as an editor drives it.

Replays typing through lines of real Python files (the standard library, or with --corpus that corpus's held-out
split): each keystroke is a didChange and an inline-completion request, as VS Code sends them. Reports the latency of
the requests that came back with a suggestion (p50/p95), how many keystrokes got one, the share of suggestions served
without the model (typed-through and repeated contexts), the time from process start to the first completion, and
the time from `$/cancelRequest` to its answer.
Human-readable lines, then one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from model.reports import common
from model.reports.common import pct
from model.serving.bench import add_option


def add_args(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--model", default=None, help="model folder (default: the shipped model)")
    add_option(parser, "--device", default="cpu")
    add_option(parser, "--lines", type=int, default=12, help="lines typed (one per file)")
    add_option(parser, "--cps", type=float, default=8.0, help="typing speed, characters per second")
    add_option(parser, "--cancel-trials", type=int, default=5)
    add_option(parser, "--max-tokens", type=int, default=None, help="hone.maxTokens (default: the server's)")
    add_option(parser, "--deadline-ms", type=int, default=None, help="hone.deadlineMs (default: the server's)")
    add_option(parser, "--seed", type=int, default=0)
    add_option(parser, "--compile", action="store_true", help="engine, speed: compile the model's steps first (model.compiled)")
    add_option(parser, "--eager", action="store_true", help="lsp: start the server with --no-compile (it compiles by default)")
    add_option(parser, "--cold", type=int, default=0, help="lsp: instead of typing, this many cold-file requests, "
               "as a session's first minutes make them: each opens a new file cut in the middle of a line and asks "
               "once (explicitly) for the line's rest")
    add_option(parser, "--prefetch-ms", type=int, default=0, help="lsp --cold: as VS Code does, say where the cursor "
               "was placed (hone/cursor) one character before the request's place, wait this many ms (a person "
               "about to type), type that character, then ask (0: ask at once, no cursor)")
    add_option(parser, "--empty-cache", action="store_true", help="lsp: start the server with an empty compile cache (a "
               "temporary HONE_CACHE): its steps build in the background while the requests run")
    add_option(parser, "--workspace", default=None,
               help="lsp: a workspace folder for the server's index (e.g. the standard library): its build time, "
                    "size and the server's memory are reported, and a model trained with context gets it")


def typing_cases(n: int, seed: int, corpus: str | None = None) -> list[tuple[str, str, int, str]]:
    """(name, document with one line cut back to its indentation, that line's number, the text to type) from a
    corpus's held-out split, else the standard library."""
    files = None
    if corpus:
        with open(Path(corpus) / "heldout.jsonl", encoding="utf-8") as f:
            files = [(Path(r["path"]).name, r["text"]) for r in map(json.loads, f)]
    return [(c.name, c.document, c.line, c.typed) for c in common.typing_cases(n, seed, files)]


class _Client:
    """pygls' client plus what the benchmark listens for."""

    def __init__(self) -> None:
        from lsprotocol import types
        from pygls.lsp.client import LanguageClient

        self.types = types
        self.lc = LanguageClient("hone-bench", "0.1")
        self.statuses: list[dict] = []
        self.busy = asyncio.Event()
        self.first_ready: float | None = None  # perf_counter() of the first ready (or error) status
        self.log_file: Path | None = None  # the server's log (debug level: a line per model run)
        self.rss_first_mb = 0.0  # the server's RSS at its first completion
        self.messages = 0  # window/showMessage notifications (bad settings, junk input)

        @self.lc.feature("hone/status")
        def on_status(ls, params):
            st = params._asdict() if hasattr(params, "_asdict") else dict(params)
            self.statuses.append(st)
            if self.first_ready is None and st.get("state") in ("ready", "error"):
                self.first_ready = time.perf_counter()
            if st.get("state") == "busy":
                self.busy.set()

        @self.lc.feature(types.WINDOW_SHOW_MESSAGE)
        def on_message(ls, params):
            self.messages += 1

        @self.lc.feature(types.WORKSPACE_APPLY_EDIT)
        def on_apply(ls, params):
            return types.ApplyWorkspaceEditResult(applied=False, failure_reason="benchmark")

    def inline_params(self, uri: str, line: int, character: int, explicit: bool):
        t = self.types
        kind = t.InlineCompletionTriggerKind.Invoked if explicit else t.InlineCompletionTriggerKind.Automatic
        return t.InlineCompletionParams(text_document=t.TextDocumentIdentifier(uri), position=t.Position(line, character),
                                        context=t.InlineCompletionContext(trigger_kind=kind))

    async def inline(self, uri: str, line: int, character: int, explicit: bool = False, msg_id=None):
        return await self.lc.protocol.send_request_async(self.types.TEXT_DOCUMENT_INLINE_COMPLETION,
                                                         self.inline_params(uri, line, character, explicit), msg_id=msg_id)

    def open(self, uri: str, text: str) -> None:
        t = self.types
        self.lc.text_document_did_open(t.DidOpenTextDocumentParams(t.TextDocumentItem(uri, "python", 1, text)))

    def close(self, uri: str) -> None:
        t = self.types
        self.lc.text_document_did_close(t.DidCloseTextDocumentParams(t.TextDocumentIdentifier(uri)))

    def insert(self, uri: str, version: int, line: int, character: int, text: str) -> None:
        t = self.types
        pos = t.Position(line, character)
        self.lc.text_document_did_change(t.DidChangeTextDocumentParams(
            t.VersionedTextDocumentIdentifier(version=version, uri=uri),
            [t.TextDocumentContentChangePartial(range=t.Range(pos, pos), text=text)]))

    def cursor(self, uri: str, line: int, character: int) -> None:
        """Say where the editor placed the cursor (hone/cursor, as the VS Code extension does)."""
        from .server import CURSOR

        self.lc.protocol.notify(CURSOR, {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}})

    def configure(self, settings: dict) -> None:
        self.lc.workspace_did_change_configuration(self.types.DidChangeConfigurationParams(settings={"hone": settings}))

    async def shutdown(self) -> None:
        """LSP shutdown and exit, then wait for the server process to end."""
        await self.lc.shutdown_async(None)
        self.lc.exit(None)
        await self.lc.stop()

    async def stats(self) -> dict:
        """The server's counters, and its workspace index under "workspace"."""
        from .server import plain

        res = plain(await self.lc.protocol.send_request_async("hone/stats", None))
        return {k: v for k, v in res.items() if k != "status"}


async def _type_line(c: _Client, uri: str, line: int, col0: int, typed: str, cps: float,
                     rng: random.Random) -> list[tuple[float, bool]]:
    """Type `typed` at (line, col0); (latency ms, answered with a suggestion) per keystroke, in order."""
    results: list[tuple[float, bool]] = [(0.0, False)] * len(typed)

    async def request(i: int, col: int) -> None:
        t0 = time.perf_counter()
        res = await c.inline(uri, line, col)
        results[i] = ((time.perf_counter() - t0) * 1000, bool(res.items))

    pending = []
    due = time.perf_counter()
    col = col0
    for i, ch in enumerate(typed):
        due += rng.uniform(0.5, 1.5) / cps  # a typist's uneven rhythm around the mean speed
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        c.insert(uri, i + 2, line, col, ch)
        col += len(ch.encode("utf-16-le")) // 2
        pending.append(asyncio.ensure_future(request(i, col)))
    await asyncio.gather(*pending)
    return results


def _bench_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if getattr(args, "max_tokens", None):
        settings["maxTokens"] = args.max_tokens
    if getattr(args, "deadline_ms", None) is not None:
        settings["deadlineMs"] = args.deadline_ms
    return settings


SLOW_MS = 100  # a model run slower than this is tail
_RUN_LINE = re.compile(r"model run at file:///bench/(?:cold/)?\d+_\S+: ([\d.]+) ms, (\d+) forwards, (\d+) context tokens encoded")


def model_runs(log_text: str) -> dict:
    """What the server's debug log says of the typing replay's model runs: their ms, and the forwards and tokens
    encoded (context changes, generated and drafted tokens) of all runs and of the slow ones."""
    runs = [(float(ms), int(fw), int(enc)) for ms, fw, enc in _RUN_LINE.findall(log_text)]
    slow = [r for r in runs if r[0] > SLOW_MS]

    def mean(rows, i):
        return sum(r[i] for r in rows) / len(rows) if rows else None

    return {"run_p50_ms": pct([r[0] for r in runs], 0.5), "run_p95_ms": pct([r[0] for r in runs], 0.95),
            "runs_logged": len(runs), "mean_forwards": mean(runs, 1), "mean_encoded": mean(runs, 2),
            "slow_runs": len(slow), "slow_mean_forwards": mean(slow, 1), "slow_mean_encoded": mean(slow, 2)}


async def _start(args: argparse.Namespace, settings: dict) -> tuple[_Client, dict, float, float]:
    """Spawn the server, initialize it and wait for a first completion -> (client, status, ms to first
    completion, ms to model ready)."""
    device = getattr(args, "device", "cpu") or "cpu"
    log_file = Path(tempfile.mkdtemp(prefix="hone-bench-lsp-")) / "server.log"
    cmd = [sys.executable, "-m", "lsp_server", "--device", device, "--log-file", str(log_file), "--log-level", "debug"]
    if getattr(args, "model", None):
        cmd += ["--model", str(args.model)]
    if getattr(args, "eager", False):
        cmd.append("--no-compile")
    c = _Client()
    c.log_file = log_file
    t = c.types
    env = None
    if getattr(args, "empty_cache", False):
        env = {**os.environ, "HONE_CACHE": tempfile.mkdtemp(prefix="hone-bench-cache-")}
        print(f"empty compile cache: {env['HONE_CACHE']}")
    t_spawn = time.perf_counter()
    await c.lc.start_io(*cmd, env=env)
    workspace = getattr(args, "workspace", None)
    root = Path(workspace).resolve().as_uri() if workspace else None
    await c.lc.initialize_async(t.InitializeParams(capabilities=t.ClientCapabilities(), initialization_options=settings,
                                                   root_uri=root))
    c.lc.initialized(t.InitializedParams())
    c.open("file:///bench/warmup.py", "import os\n\ndef main():\n    return os.")
    await c.inline("file:///bench/warmup.py", 3, 14, explicit=True)
    startup_ms = (time.perf_counter() - t_spawn) * 1000
    c.rss_first_mb = _rss_mb(c)  # before the compiled steps load
    ready_ms = ((c.first_ready or time.perf_counter()) - t_spawn) * 1000
    status = c.statuses[-1] if c.statuses else {}
    print(f"server: {status.get('model', '?')} on {status.get('device', '?')} ({status.get('state', '?')}"
          f"{': ' + status['message'] if status.get('message') else ''}); log {log_file}")
    print(f"process start to model ready: {ready_ms:.0f} ms; to first completion: {startup_ms:.0f} ms")
    if status.get("state") == "error":
        raise SystemExit(f"the server could not load the model: {status.get('message')}")
    t_wait = time.perf_counter()
    while (c.statuses[-1].get("steps") == "compiling" and time.perf_counter() - t_wait < 600
           and not getattr(args, "empty_cache", False)):  # (with an empty cache the requests run during the build)
        await asyncio.sleep(0.2)  # time the steps users get once the server has settled
    print(f"model steps: {c.statuses[-1].get('steps')} ({time.perf_counter() - t_wait:.1f} s after the first completion)")
    if workspace:  # the server scans once context is first asked for
        await c.lc.protocol.send_request_async("hone/context", {"textDocument": {"uri": "file:///bench/warmup.py"},
                                                                "position": {"line": 3, "character": 14}})
        while (ws := (await c.stats())["workspace"])["scanning"] or not ws["scans"]:
            await asyncio.sleep(0.2)
        c.workspace = ws
        print(f"workspace index: {ws['files']} files, {ws['bytes'] / 2**20:.1f} MiB of text, scanned in "
              f"{ws['lastScanSeconds']} s; server RSS {_rss_mb(c):.0f} MB")
    return c, status, startup_ms, ready_ms


def _rss_mb(c: _Client) -> float:
    """The server process' resident memory (Linux; 0 elsewhere)."""
    proc = getattr(c.lc, "_server", None)
    try:
        with open(f"/proc/{proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
    except (AttributeError, OSError, StopIteration, ValueError):
        return 0.0


async def _typing(c: _Client, args: argparse.Namespace, cps: float) -> tuple[list[tuple[float, bool]], list[float], dict]:
    """Type one line of each case -> (per keystroke: ms and whether a suggestion came, the ms after each line's
    last key, the server's counters over the typing)."""
    rng = random.Random(getattr(args, "seed", 0))
    cases = typing_cases(getattr(args, "lines", 12), getattr(args, "seed", 0), getattr(args, "corpus", None))
    before = await c.stats()
    per_key: list[tuple[float, bool]] = []
    pauses: list[float] = []  # the last keystroke of each line: the typist stops and waits for it
    for k, (name, doc, line, typed) in enumerate(cases):
        uri = f"file:///bench/{k}_{name}"
        c.open(uri, doc)
        col0 = len(doc.split("\n")[line].encode("utf-16-le")) // 2
        res = await _type_line(c, uri, line, col0, typed, cps, rng)
        per_key += res
        pauses.append(res[-1][0])
        shown = [ms for ms, ok in res if ok]
        print(f"  {name:28s} {len(typed):3d} keys, {len(shown):3d} suggestions, p50 {pct(shown, 0.5) or 0:7.1f} ms")
        c.close(uri)
    after = await c.stats()
    return per_key, pauses, {k: after[k] - before[k] for k in after if isinstance(after[k], int)}


async def _cold(c: _Client, args: argparse.Namespace) -> dict:
    """Cold-file requests, one per case: figures for those served while the steps were still building and after."""
    rng = random.Random(getattr(args, "seed", 0))
    cases = typing_cases(args.cold, getattr(args, "seed", 0), getattr(args, "corpus", None))
    during: list[float] = []
    after: list[float] = []
    ahead = getattr(args, "prefetch_ms", 0)
    before = await c.stats()
    for k, (name, doc, line, typed) in enumerate(cases):
        lines = doc.split("\n")
        cut = rng.randint(1, max(1, len(typed) - 1))  # mid-line, as cross-file and held-out lines are cut
        uri = f"file:///bench/cold/{k}_{name}"
        if ahead:  # the cursor is placed, rests, then one character is typed and the completion asked for
            lines[line] += typed[: cut - 1]
            c.open(uri, "\n".join(lines))
            col = len(lines[line].encode("utf-16-le")) // 2
            c.cursor(uri, line, col)
            await asyncio.sleep(ahead / 1000)
            c.insert(uri, 2, line, col, typed[cut - 1])
            lines[line] += typed[cut - 1]
        else:
            lines[line] += typed[:cut]
            c.open(uri, "\n".join(lines))
        building = c.statuses[-1].get("steps") == "compiling" if c.statuses else False
        t0 = time.perf_counter()
        await c.inline(uri, line, len(lines[line].encode("utf-16-le")) // 2, explicit=True)
        (during if building else after).append((time.perf_counter() - t0) * 1000)
        c.close(uri)
    for label, ms in (("while the steps build", during), ("steps ready", after)):
        if ms:
            print(f"cold-file requests {label}: {len(ms)}, p50 {pct(ms, 0.5):.1f} ms, p95 {pct(ms, 0.95):.1f} ms")
    fig = lambda ms, q: pct(ms, q) if ms else None  # noqa: E731
    prefetched = (await c.stats())["prefetched"] - before["prefetched"]
    if ahead:
        print(f"cursor placed {ahead} ms before the last keystroke: {prefetched} of {len(cases)} computed ahead")
    return {"cold_prefetch_ms": ahead, "cold_prefetched": prefetched, "cold_requests": len(cases),
            "cold_during_build": len(during), "cold_during_build_p50_ms": fig(during, 0.5),
            "cold_during_build_p95_ms": fig(during, 0.95), "cold_ready": len(after),
            "cold_ready_p50_ms": fig(after, 0.5), "cold_ready_p95_ms": fig(after, 0.95)}


async def _cancels(c: _Client, settings: dict, trials: int) -> tuple[list[float], float]:
    """$/cancelRequest on a long block completion once the model runs -> (ms to each answer, ms of the next request)."""
    from pygls.exceptions import JsonRpcRequestCancelled

    t = c.types
    c.configure({**settings, "maxTokens": 512, "deadlineMs": 0, "mode": "block"})
    c.open("file:///bench/cancel.py", "class Store:\n    def load(self, path):\n        ")
    acks = []
    for i in range(trials):
        c.busy.clear()
        fut = asyncio.ensure_future(c.inline("file:///bench/cancel.py", 2, 8, explicit=True, msg_id=f"cancel-{i}"))
        await asyncio.wait_for(c.busy.wait(), 60)
        t0 = time.perf_counter()
        c.lc.protocol.notify(t.CANCEL_REQUEST, t.CancelParams(id=f"cancel-{i}"))
        try:
            await asyncio.wait_for(fut, 60)
        except JsonRpcRequestCancelled:
            pass  # the expected answer
        acks.append((time.perf_counter() - t0) * 1000)
    c.configure({**settings, "mode": "auto", "maxTokens": settings.get("maxTokens", 64),
                 "deadlineMs": settings.get("deadlineMs", 1500)})
    # the worker frees itself at its next denoising step: time a request right after a cancel
    t0 = time.perf_counter()
    await c.inline("file:///bench/cancel.py", 1, 8, explicit=True)
    return acks, (time.perf_counter() - t0) * 1000


async def _run(args: argparse.Namespace) -> dict:
    cps = getattr(args, "cps", 8.0)
    settings = _bench_settings(args)
    c, status, startup_ms, ready_ms = await _start(args, settings)
    if getattr(args, "cold", 0):
        figures = {"model": status.get("model"), "device": status.get("device"), "empty_cache": bool(args.empty_cache),
                   "startup_to_first_completion_ms": startup_ms, **await _cold(c, args),
                   "steps": c.statuses[-1].get("steps") if c.statuses else None, "server_rss_mb": _rss_mb(c),
                   **model_runs(c.log_file.read_text(encoding="utf-8", errors="replace") if c.log_file.exists() else "")}
        await c.shutdown()
        print(json.dumps(figures))
        return figures
    per_key, pauses, delta = await _typing(c, args, cps)
    acks, after_cancel_ms = await _cancels(c, settings, getattr(args, "cancel_trials", 5))
    rss_mb = _rss_mb(c)
    retrieval = {k: v for k, v in (await c.stats()).get("workspace", {}).items() if k.startswith("retrieval")}
    await c.shutdown()

    shown = [ms for ms, ok in per_key if ok]
    served = delta["typedThrough"] + delta["cacheHits"]
    figures = {
        "model": status.get("model"), "device": status.get("device"),
        "keystrokes": len(per_key), "suggestions": len(shown),
        "inline_p50_ms": pct(shown, 0.5), "inline_p95_ms": pct(shown, 0.95),
        "pause_p50_ms": pct(pauses, 0.5), "pause_p95_ms": pct(pauses, 0.95),
        "all_requests_p50_ms": pct([ms for ms, _ in per_key], 0.5),
        "answered_rate": len(shown) / max(1, len(per_key)),
        "cache_hit_rate": served / max(1, served + delta["modelRuns"]),
        "typed_through": delta["typedThrough"], "cache_hits": delta["cacheHits"], "model_runs": delta["modelRuns"],
        "superseded": delta["superseded"],
        "startup_to_ready_ms": ready_ms, "startup_to_first_completion_ms": startup_ms,
        "cancel_to_ack_p50_ms": pct(acks, 0.5), "cancel_to_ack_max_ms": max(acks) if acks else None,
        "request_after_cancel_ms": after_cancel_ms,
        "server_rss_mb": rss_mb, "repo_contexts": delta.get("repoContexts", 0),
        "workspace": {k: v for k, v in getattr(c, "workspace", {}).items() if k in ("files", "bytes", "lastScanSeconds")},
        "retrieval": retrieval,  # the server's context_for times (a workspace and a model that reads context)
        "cps": cps, "settings": settings, "cases": "heldout" if getattr(args, "corpus", None) else "stdlib",
        **model_runs(c.log_file.read_text(encoding="utf-8", errors="replace") if c.log_file and c.log_file.exists() else ""),
    }
    _report(figures, delta)
    return figures


def _report(figures: dict, delta: dict) -> None:
    f = figures
    print(f"{f['keystrokes']} keystrokes at {f['cps']:g} chars/s: {f['suggestions']} suggestions "
          f"({f['answered_rate']:.0%}), {delta['modelRuns']} model runs, {delta['superseded']} superseded")
    if f["suggestions"]:
        print(f"suggestion latency: p50 {f['inline_p50_ms']:.1f} ms, p95 {f['inline_p95_ms']:.1f} ms")
    if f["pause_p50_ms"] is not None:
        print(f"answer after the last key of a line: p50 {f['pause_p50_ms']:.1f} ms, p95 {f['pause_p95_ms']:.1f} ms")
    if f["runs_logged"]:
        print(f"model runs while typing: p50 {f['run_p50_ms']:.1f} ms, p95 {f['run_p95_ms']:.1f} ms; "
              f"{f['mean_forwards']:.1f} forwards, {f['mean_encoded']:.0f} tokens encoded on average")
        if f["slow_runs"]:
            print(f"  {f['slow_runs']} runs over {SLOW_MS} ms: {f['slow_mean_forwards']:.1f} forwards, "
                  f"{f['slow_mean_encoded']:.0f} tokens encoded on average")
    if (r := f.get("retrieval") or {}).get("retrievals"):
        print(f"cross-file retrieval: p50 {r['retrievalP50Ms']:.2f} ms, p95 {r['retrievalP95Ms']:.2f} ms "
              f"({r['retrievals']} requests)")
    print(f"served without the model: {f['cache_hit_rate']:.1%} "
          f"({delta['typedThrough']} typed-through, {delta['cacheHits']} repeated contexts)")
    if f["cancel_to_ack_p50_ms"] is not None:
        print(f"$/cancelRequest to answer: p50 {f['cancel_to_ack_p50_ms']:.1f} ms, "
              f"max {f['cancel_to_ack_max_ms']:.1f} ms; next request {f['request_after_cancel_ms']:.0f} ms")
    print(json.dumps(figures))


def run(args: argparse.Namespace) -> dict:
    return asyncio.run(_run(args))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hone bench lsp", description=__doc__.split("\n")[0])
    add_args(p)
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
