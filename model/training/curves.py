"""A run's loss log (log.jsonl) and its picture."""

from __future__ import annotations

import json
from pathlib import Path


def read_log(path: Path) -> list[dict]:
    """The records of a run's log.jsonl (none if it does not exist)."""
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def plot_losses(logs: Path | dict[str, Path], out: Path, train_curves: bool = True) -> None:
    """A picture of the loss log(s): training losses per phase and the held-out losses against tokens seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, path in ({"this run": logs} if isinstance(logs, Path) else logs).items():
        recs = read_log(path)
        for phase, style in (("ar", ":"), ("diffusion", "-")) if train_curves else ():
            rows = [r for r in recs if r.get("phase") == phase]
            # spm steps log their two parts; the sum (their loss) would hide which one moves
            parts = ("canvas_ce", "next_ce") if rows and "next_ce" in rows[-1] else ("loss",)
            for key in parts:
                pts = [(r["tokens"] / 1e6, r[key]) for r in rows if key in r]
                if pts:
                    ax.plot(*zip(*pts), style, alpha=0.4, label=f"{label}: train {key} ({phase})")
        for key, name in (("heldout_masked_ce", "held-out masked CE"), ("heldout_next_ce", "held-out next-token CE"),
                          ("heldout_ctx_masked_ce", "held-out masked CE, cross-file context"),
                          ("heldout_ctx_next_ce", "held-out next-token CE, cross-file context")):
            pts = [(r["tokens"] / 1e6, r[key]) for r in recs if key in r]
            if pts:
                ax.plot(*zip(*pts), ("o" if "masked" in key else "s") + (":" if "ctx" in key else "-"), label=f"{label}: {name}")
    ax.set_xlabel("tokens seen (M)")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
