"""`hone bench serve`: simulated editors typing against one service, and against as many local engines.

Each editor types a line of a real standard-library file at `--cps` characters per second and asks for the
completion at its cursor (POST /infill) whenever it has no request in flight: a keystroke that comes while
the previous answer is still on its way is folded into the next request, as a debouncing editor does. For
1, 4 and 16 editors (`--editors`) it reports completions per second and the p50/p95 latency, first against
one service (started here on a local Ray instance unless `--url` names a running one), then with each
editor driving its own engine in this process (N model copies on the same device). Human-readable lines,
then one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from ..reports import common
from ..reports.common import pct
from .batch import DEADLINE_PASSED

PREFIX_CHARS = 4000  # what an editor plugin sends around the cursor (the engine keeps its token budgets of it)
SUFFIX_CHARS = 1000


def add_option(parser: argparse.ArgumentParser, *flags: str, **kw: Any) -> None:
    """Add an option unless the shared `hone bench` parser already has it (each benchmark adds what it needs;
    `hone bench lsp` uses this too)."""
    if not any(f in parser._option_string_actions for f in flags):
        parser.add_argument(*flags, **kw)


def add_args(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--model", default=None, help="model folder (default: the shipped model)")
    add_option(parser, "--device", default="cpu")
    add_option(parser, "--threads", type=int, default=None, help="CPU threads (default: all free cores)")
    add_option(parser, "--cps", type=float, default=8.0, help="typing speed, characters per second")
    add_option(parser, "--max-tokens", type=int, default=None, help="tokens per completion (default: 16 here)")
    add_option(parser, "--deadline-ms", type=int, default=None, help="per-request deadline (default: 1500 here)")
    add_option(parser, "--seed", type=int, default=0)
    add_option(parser, "--editors", default="1,4,16", help="serve: comma-separated numbers of simulated editors")
    add_option(parser, "--seconds", type=float, default=8.0, help="serve: typing time per number of editors")
    add_option(parser, "--url", default=None, help="serve: a running service (default: start one on a local Ray instance)")
    add_option(parser, "--token-file", default=None, help="serve: the service's bearer token")
    add_option(parser, "--replicas", type=int, default=1, help="serve: replicas of the service started here")
    add_option(parser, "--no-local", action="store_true", help="serve: skip the independent local engines")


def typing_cases(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(text before the line, the line to type, text after it) from standard-library files."""
    return [(c.before, c.typed, c.after) for c in common.typing_cases(n, seed)]


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    expired: int = 0  # answered 504: the deadline passed while the request queued at the service


class Expired(Exception):
    """The service's 504: nothing to show, as a language server treats it."""


Complete = Callable[[str, str], None]  # (prefix, suffix) -> None; raises on failure


def _editor(complete: Complete, case: tuple[str, str, str], cps: float, until: float, rng: random.Random,
            tally: Tally) -> None:
    before, line, after = case
    t_key = time.perf_counter()
    typed = 0
    while True:
        now = time.perf_counter()
        while t_key <= now:  # the keystrokes that happened while the last answer was on its way
            typed = typed % len(line) + 1
            t_key += rng.uniform(0.5, 1.5) / cps
        if t_key >= until:
            return
        time.sleep(max(0.0, t_key - time.perf_counter()))
        typed = typed % len(line) + 1
        t_key += rng.uniform(0.5, 1.5) / cps
        prefix = (before + line[:typed])[-PREFIX_CHARS:]
        suffix = (line[typed:] + after)[:SUFFIX_CHARS]
        t0 = time.perf_counter()
        try:
            complete(prefix, suffix)
        except Expired:
            tally.expired += 1
            continue
        except Exception as e:  # counted and reported: a benchmark of a service under load measures its failures
            tally.errors.append(f"{type(e).__name__}: {e}"[:200])
            continue
        tally.latencies_ms.append((time.perf_counter() - t0) * 1000)


def drive(completers: list[Complete], cases: list[tuple[str, str, str]], cps: float, seconds: float, seed: int) -> dict:
    """One editor thread per completer, typing for `seconds`; the figures of that run."""
    tallies = [Tally() for _ in completers]
    until = time.perf_counter() + seconds
    t0 = time.perf_counter()
    threads = [threading.Thread(target=_editor, args=(c, cases[i % len(cases)], cps, until, random.Random(seed + i), t),
                                daemon=True) for i, (c, t) in enumerate(zip(completers, tallies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = [ms for t in tallies for ms in t.latencies_ms]
    errors = [e for t in tallies for e in t.errors]
    return {"editors": len(completers), "completions": len(lat), "completions_per_s": round(len(lat) / wall, 2),
            "p50_ms": _ms(pct(lat, 0.5)), "p95_ms": _ms(pct(lat, 0.95)), "expired": sum(t.expired for t in tallies),
            "errors": len(errors),
            "first_error": errors[0] if errors else None, "seconds": round(wall, 1)}


class InfillClient:
    """A minimal llama.cpp-style /infill client on one keep-alive connection (one per editor)."""

    def __init__(self, url: str, token: str | None, body: dict[str, Any]):
        parts = urlsplit(url)
        self.host, self.port, self.base = parts.hostname or "127.0.0.1", parts.port or 80, parts.path.rstrip("/")
        self.headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        self.body = body
        self.conn: http.client.HTTPConnection | None = None

    def _request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        for attempt in range(2):  # the service may have closed an idle keep-alive connection
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            try:
                self.conn.request(method, self.base + path, body=body, headers=self.headers)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def __call__(self, prefix: str, suffix: str) -> None:
        status, data = self._request("POST", "/infill", json.dumps(
            {**self.body, "input_prefix": prefix, "input_suffix": suffix}).encode())
        if status == DEADLINE_PASSED:
            raise Expired()
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {data[:200].decode('utf-8', 'replace')}")

    def get(self, path: str) -> dict:
        status, data = self._request("GET", path, None)
        return json.loads(data) if status == 200 else {"status": status}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _service(args: argparse.Namespace, threads: int) -> tuple[str, str | None, Callable[[], None]]:
    """(url, token, stop) of the service to measure: the given one, or one started here."""
    token = Path(args.token_file).read_text().strip() if args.token_file else None
    if args.url:
        return args.url.rstrip("/"), token, lambda: None
    import ray

    from . import app

    ray.init(address="local", num_cpus=max(threads * args.replicas, 1), include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    url = app.start(args.model, device=args.device, port=_free_port(), replicas=args.replicas, token=token,
                    threads=threads)
    return url, token, app.stop


def run(args: argparse.Namespace) -> dict:
    from ..engine import Engine
    from ..machine import free_cores

    threads = args.threads or free_cores()
    levels = [int(n) for n in str(args.editors).split(",") if n.strip()]
    max_tokens = args.max_tokens or 16
    deadline_ms = args.deadline_ms if args.deadline_ms is not None else 1500
    cases = typing_cases(max(levels), args.seed)
    body = {"n_predict": max_tokens, "mode": "line", "deadline_ms": deadline_ms}
    figures: dict[str, Any] = {"model": args.model or "default", "device": args.device, "cps": args.cps,
                               "max_tokens": max_tokens, "deadline_ms": deadline_ms, "threads": threads,
                               "replicas": args.replicas, "service": {}, "local": {}}

    url, token, stop = _service(args, threads)
    try:
        probe = InfillClient(url, token, body)
        print(f"service {url}: {probe.get('/health')}")
        probe("def main():\n    return ", "\n")  # the first request warms the replica up
        for n in levels:
            before = probe.get("/hone/stats")
            res = drive([InfillClient(url, token, body) for _ in range(n)], cases, args.cps, args.seconds, args.seed)
            after = probe.get("/hone/stats")
            if "batches" in after and "batches" in before:
                batches = after["batches"] - before["batches"]
                res["mean_batch"] = round((after["batched_requests"] - before["batched_requests"]) / max(1, batches), 2)
            figures["service"][str(n)] = res
            _line("service", res)
    finally:
        stop()

    if not args.no_local:
        engines: list[Engine] = []
        for n in levels:
            while len(engines) < n:  # each editor its own copy of the model, as on N separate setups
                engines.append(Engine.load(args.model, args.device, threads=threads))
            res = drive([_local_completer(e, max_tokens, deadline_ms) for e in engines[:n]], cases, args.cps,
                        args.seconds, args.seed)
            figures["local"][str(n)] = res
            _line("local  ", res)
    print(json.dumps(figures))
    return figures


def _local_completer(engine: Any, max_tokens: int, deadline_ms: int) -> Complete:
    import msgspec

    opts = msgspec.structs.replace(engine.default_options(), max_tokens=max_tokens, mode="line", doc_end=False,
                                   deadline_s=deadline_ms / 1000 if deadline_ms else None)

    def complete(prefix: str, suffix: str) -> None:
        engine.infill(prefix, suffix, opts)

    complete("def main():\n    return ", "\n")
    return complete


def _line(label: str, r: dict) -> None:
    batch = f", mean batch {r['mean_batch']}" if "mean_batch" in r else ""
    print(f"{label} {r['editors']:3d} editors: {r['completions']:5d} completions in {r['seconds']} s "
          f"({r['completions_per_s']}/s), p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, {r['expired']} expired in the "
          f"queue, errors {r['errors']}{batch}")
