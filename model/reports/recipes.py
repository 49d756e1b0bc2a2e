"""Pick the training recipe by measurement: runs of different recipes (route, optimizer, masking) trained on
the same data for the same token budget, compared on the same held-out batches and infill cases."""

from __future__ import annotations

import json
from pathlib import Path

from .card import ROUTES_END, ROUTES_START, put_block


def summarize(run_dir: Path) -> dict:
    """Recipe, tokens, supervised positions, speed and final held-out losses of one run folder."""
    from ..training.curves import read_log

    state = json.loads((run_dir / "model" / "train_state.json").read_text())
    tc = state["train_config"]
    held = [r for r in read_log(run_dir / "log.jsonl") if "heldout_masked_ce" in r]
    if not held:
        raise ValueError(f"{run_dir}: no held-out evaluation in log.jsonl")
    last = held[-1]
    return {"recipe": run_dir.name.removeprefix("recipe-"), "route": tc["route"], "optimizer": tc.get("optimizer", "adamw"),
            "masks": tc.get("mask_schedule", "uniform") + (" complementary" if tc.get("complementary") else ""),
            "tokens": last["tokens"], "supervised": last.get("supervised"), "minutes": last["elapsed"] / 60,
            "tokens_per_s": last["tokens"] / max(1e-9, last["elapsed"]), "threads": tc.get("threads"),
            "heldout_masked_ce": last["heldout_masked_ce"], "heldout_next_ce": last.get("heldout_next_ce"),
            "steps": state["step"]}


def route_report(run_dirs: list[Path], corpus: Path, out_png: Path, card: Path | None = None,
                 n_line: int = 60, n_multi: int = 20, threads: int | None = None) -> dict:
    """Summaries + a quick infill eval (default decoding) of each run; the curves in one picture; a card section."""
    from ..engine import Engine
    from ..training.corpus import load_texts
    from ..training.curves import plot_losses
    from .evaluate import DEFAULT_DECODING, run_eval

    texts = load_texts(corpus / "heldout.jsonl")
    rows = []
    for d in run_dirs:
        row = summarize(d)
        res = run_eval(Engine.load(d / "model", "cpu", threads=threads), texts, n_line, n_multi, {DEFAULT_DECODING: {}})
        row["infill"] = res["decodings"][DEFAULT_DECODING]
        rows.append(row)
    plot_losses({r["recipe"]: d / "log.jsonl" for r, d in zip(rows, run_dirs)}, out_png, train_curves=False)
    best = min(rows, key=lambda r: r["heldout_masked_ce"])
    report = {"runs": rows, "winner": best["recipe"]}
    if card is not None:
        write_routes_section(card, report, out_png.name)
    return report


def routes_markdown(report: dict, png: str) -> str:
    lines = ["| recipe | tokens | supervised positions | tok/s (threads) | held-out masked CE | held-out next-token CE | "
             "1-line EM | 1-line ES | multi-line ES |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        s, m = r["infill"]["single"], r["infill"]["multi"]
        sup = f"{r['supervised'] / 1e6:.2f}M" if r.get("supervised") is not None else "?"
        nxt = f"{r['heldout_next_ce']:.3f}" if r.get("heldout_next_ce") is not None else "-"
        lines.append(f"| {r['recipe']} | {r['tokens'] / 1e6:.2f}M | {sup} | {r['tokens_per_s']:.0f} ({r.get('threads')}) | "
                     f"{r['heldout_masked_ce']:.3f} | {nxt} | {s['exact_match']:.1%} | {s['edit_similarity']:.3f} | "
                     f"{m['edit_similarity']:.3f} |")
    lines += ["", f"Lower held-out masked CE (the same canvases and masks in every layout) wins: **{report['winner']}**.",
              "", f"![held-out masked CE of each recipe]({png})"]
    return "\n".join(lines)


def write_routes_section(card: Path, report: dict, png: str) -> None:
    put_block(card, ROUTES_START, ROUTES_END, routes_markdown(report, png), "Recipe comparison (equal token budget)")
