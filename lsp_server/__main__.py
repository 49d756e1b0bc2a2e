"""`hone-lsp` / `python -m lsp_server`: the language server over stdio (default) or TCP."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys

from model.types import DEVICES

from .models import ModelManager, Target, load_engine


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hone-lsp", description="Hone language server (JSON-RPC on stdio by default)")
    p.add_argument("--stdio", action="store_true", help="talk over stdin/stdout (the default)")
    p.add_argument("--tcp", metavar="HOST:PORT", help="listen on a TCP socket instead of stdio")
    p.add_argument("--model", default="", help="model folder (default: the shipped model)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for inference (default: the free cores, as every hone command)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow a third-party model folder to run its own Python code")
    p.add_argument("--remote", default="", metavar="URL",
                   help="send model calls to a `hone serve` service at URL instead of loading the model here")
    p.add_argument("--remote-token-file", default=None, metavar="FILE", help="the service's bearer token")
    p.add_argument("--remote-fallback", action="store_true",
                   help="while the service is unreachable, load and use the local model")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="run the model's hot steps compiled ahead of time (default): built in the background at low "
                        "priority the first time for a model (about a minute of CPU, then cached), eager meanwhile")
    p.add_argument("--log-file", help="write logs here instead of stderr")
    p.add_argument("--log-level", default="INFO", type=str.upper,
                   choices=["WIRE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                   help="WIRE: DEBUG and every JSON-RPC message in full (pygls' own log)")
    return p.parse_args(argv)


def setup_logging(log_file: str | None, level: str) -> None:
    handler = logging.FileHandler(log_file, encoding="utf-8") if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level="DEBUG" if level == "WIRE" else level, handlers=[handler], force=True)
    # pygls logs every message body at INFO: megabytes per keystroke on a big file, and formatting a didOpen's whole
    # text into the log took milliseconds in front of the request after it: only at WIRE
    logging.getLogger("pygls").setLevel("DEBUG" if level == "WIRE" else "WARNING")


def claim_stdout():
    """Keep fd 1 for JSON-RPC only: anything else that writes to stdout (a print, a C library) goes to stderr."""
    rpc = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return rpc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_file, args.log_level)
    rpc_out = None if args.tcp else claim_stdout()
    token = ""
    if args.remote_token_file:
        from .cli import read_token_file

        token = read_token_file(args.remote_token_file) or ""
    target = Target(args.model, args.device, args.trust_remote_code, remote=args.remote, remote_token=token,
                    remote_fallback=args.remote_fallback, compile=args.compile)
    models = ModelManager(loader=functools.partial(load_engine, threads=args.threads))
    models.request(target)  # import torch and load the model while pygls imports and the client starts up
    from .server import build_server

    server = build_server(target, models)
    try:
        if args.tcp:
            host, _, port = args.tcp.rpartition(":")
            server.start_tcp(host or "127.0.0.1", int(port))
        else:
            server.start_io(sys.stdin.buffer, rpc_out)
    finally:
        server.service.close()
        logging.shutdown()
    # The client is gone (exit, or stdin closed): do not wait for a model still loading or a worker
    # finishing its step.
    os._exit(0)


if __name__ == "__main__":
    main()
