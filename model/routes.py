"""Pick the training route by measurement: diffusion from scratch against an autoregressive phase followed
by masked diffusion, trained on the same data for the same token budget, compared on the held-out split."""

from __future__ import annotations

import json
from pathlib import Path

from .card import ROUTES_END, ROUTES_START, put_block

def summarize(run_dir: Path) -> dict:
    """Route, tokens, minutes and final held-out masked CE of one run folder."""
    from .train import read_log

    state = json.loads((run_dir / "model" / "train_state.json").read_text())
    held = [r for r in read_log(run_dir / "log.jsonl") if "heldout_masked_ce" in r]
    if not held:
        raise ValueError(f"{run_dir}: no held-out evaluation in log.jsonl")
    return {"route": state["train_config"]["route"], "tokens": held[-1]["tokens"], "minutes": held[-1]["elapsed"] / 60,
            "heldout_masked_ce": held[-1]["heldout_masked_ce"], "steps": state["step"]}


def route_report(run_dirs: list[Path], corpus: Path, out_png: Path, card: Path | None = None,
                 n_line: int = 60, n_multi: int = 20, threads: int | None = None) -> dict:
    """Summaries + a quick infill eval (default decoding) of each run; both curves in one picture; a card section."""
    from .corpus import load_texts
    from .engine import Engine
    from .evaluate import DEFAULT_DECODING, run_eval
    from .train import plot_losses

    texts = load_texts(corpus / "heldout.jsonl")
    rows = []
    for d in run_dirs:
        row = summarize(d)
        res = run_eval(Engine.load(d / "model", "cpu", threads=threads), texts, n_line, n_multi, {DEFAULT_DECODING: {}})
        row["infill"] = res["decodings"][DEFAULT_DECODING]
        rows.append(row)
    plot_losses({r["route"]: d / "log.jsonl" for r, d in zip(rows, run_dirs)}, out_png, train_curves=False)
    best = min(rows, key=lambda r: r["heldout_masked_ce"])
    report = {"runs": rows, "winner": best["route"]}
    if card is not None:
        write_routes_section(card, report, out_png.name)
    return report


def routes_markdown(report: dict, png: str) -> str:
    lines = ["| route | tokens | minutes | held-out masked CE | 1-line EM | 1-line ES | multi-line ES |", "|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        s, m = r["infill"]["single"], r["infill"]["multi"]
        lines.append(f"| {r['route']} | {r['tokens'] / 1e6:.2f}M | {r['minutes']:.1f} | {r['heldout_masked_ce']:.3f} | "
                     f"{s['exact_match']:.1%} | {s['edit_similarity']:.3f} | {m['edit_similarity']:.3f} |")
    lines += ["", f"Lower held-out masked CE wins: **{report['winner']}**.", "", f"![held-out masked CE of both routes]({png})"]
    return "\n".join(lines)


def write_routes_section(card: Path, report: dict, png: str) -> None:
    put_block(card, ROUTES_START, ROUTES_END, routes_markdown(report, png), "Route comparison (equal token budget)")
