"""`hone eval-repo`: repository-level held-out evaluation (DESIGN §5). A case is a line of a held-out project whose
rest uses a name defined in another file of that project; arms: the file alone, + copy hints from the file, + copy
hints from the whole project (what the server adds for every line), + cross-file context read by the model and those
hints, and a model-free copy baseline."""

from __future__ import annotations

import io
import json
import random
import time
import tokenize
from collections import defaultdict
from pathlib import Path

import msgspec
from tqdm import tqdm

from .. import DEFAULT_MODEL_DIR
from ..engine import Engine
from .bench import pct
from .card import put_block
from .evaluate import edit_similarity
from ..drafts import copy_hint, copy_hints
from ..grounding import ground_in
from ..workspace import WorkspaceIndex, code_tokens, cross_file_uses, exported_elsewhere, file_symbols

MAX_LINE_CHARS = 120  # longer lines are mostly data or strings
MIN_LINE_PREFIX = 3  # characters of the line (after its indentation) typed before the cursor
MIN_TARGET_CHARS = 4  # non-space characters the rest of the line must hold
PER_FILE_CAP = 6  # most cases from one file, so that a few big files do not make the set
MAX_TOKENS = 48  # canvas slots for the rest of one line
ARMS = ("file", "hint", "repo", "context", "copy")
REPO_START, REPO_END = "<!-- repo-eval:start -->", "<!-- repo-eval:end -->"  # the card table of --write-card


class RepoCase(msgspec.Struct, frozen=True):
    project: str  # the project's root folder
    path: str  # the file, relative to the root (posix)
    line: int  # 0-based
    col: int  # the cursor's column in that line
    prefix: str  # all the file's text before the cursor
    suffix: str  # all the file's text after the line (starts with its newline)
    target: str  # the rest of the line
    name: str  # the name of the rest of the line that another file of the project defines

    @property
    def blanked(self) -> str:
        """The file as the workspace sees it: the target line's rest removed."""
        return self.prefix + self.suffix


def project_files(root: Path) -> dict[str, str]:
    """Every .py file under `root` that decodes as UTF-8: relative posix path -> text."""
    out = {}
    for p in sorted(root.rglob("*.py")):
        try:
            out[p.relative_to(root).as_posix()] = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
    return out


def _string_spans(text: str) -> dict[int, list[tuple[int, int]]]:
    """Per 0-based line, the (start, end) columns covered by string tokens (a multi-line string: to the line's end)."""
    spans: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for t in code_tokens(text) or []:
        if t.type == tokenize.STRING:
            (r0, c0), (r1, c1) = t.start, t.end
            for r in range(r0, r1 + 1):
                spans[r - 1].append((c0 if r == r0 else 0, c1 if r == r1 else 10**9))
    return spans


def _file_cases(root: Path, rel: str, text: str, symbols, elsewhere: set[str], rng: random.Random
                ) -> list[RepoCase]:
    """One case per eligible line of the file (shuffled): a random cross-file name of the line, the cursor at a
    random column after the indentation and at or before that name, outside strings."""
    lines = io.StringIO(text).readlines()  # the lines tokenize numbers (split on \n only)
    starts = [0]
    for ln in lines:
        starts.append(starts[-1] + len(ln))
    options = cross_file_uses(text, symbols, elsewhere)
    strings = _string_spans(text) if options else {}
    cases = []
    for row in sorted(options):
        body = lines[row].rstrip("\r\n")
        if len(body) > MAX_LINE_CHARS:
            continue
        name, at = rng.choice(options[row])
        lo = len(body) - len(body.lstrip()) + MIN_LINE_PREFIX
        cols = [c for c in range(lo, at + 1) if len(body[c:].replace(" ", "")) >= MIN_TARGET_CHARS
                and not any(s < c < e for s, e in strings.get(row, ()))]
        if not cols:
            continue
        col = rng.choice(cols)
        cut = starts[row] + col
        cases.append(RepoCase(str(root), rel, row, col, text[:cut], text[starts[row] + len(body):], body[col:], name))
    rng.shuffle(cases)
    return cases


def build_cases(projects: list[Path], n: int, seed: int) -> list[RepoCase]:
    """Up to `n` cases spread over the projects (round robin), and within a project over its files (at most
    PER_FILE_CAP each); deterministic given `seed`."""
    rng = random.Random(seed)
    per_project: list[list[list[RepoCase]]] = []
    for root in sorted(Path(p) for p in projects):
        files = project_files(root)
        symbols = {rel: file_symbols(text) for rel, text in files.items()}
        elsewhere = exported_elsewhere(symbols)
        queues = []
        for rel, text in files.items():
            cases = _file_cases(root, rel, text, symbols[rel], elsewhere[rel], rng)[:PER_FILE_CAP]
            if cases:
                queues.append(cases)
        rng.shuffle(queues)
        per_project.append(queues)
    out: list[RepoCase] = []
    while len(out) < n and any(per_project):
        for queues in per_project:
            if queues and len(out) < n:
                q = queues.pop(0)  # the project's next file gives its next case, then waits its turn again
                out.append(q.pop(0))
                if q:
                    queues.append(q)
    return out


def copy_baseline(case: RepoCase, others: dict[str, str]) -> str:
    """Model-free (drafts.copy_hint): where the last characters before the cursor occur elsewhere in the blanked
    file (nearest before the cursor, then after it), else in the project's other files (path order), the rest of
    that occurrence's line."""
    return copy_hint(case.prefix, case.suffix, (t for rel, t in sorted(others.items()) if rel != case.path))


class _Tally:
    def __init__(self) -> None:
        self.em: list[float] = []
        self.es: list[float] = []
        self.ms: list[float] = []
        self.forwards = self.tokens = self.ctx_chars = self.ctx_tokens = self.ctx_kept = 0
        self.wrong = self.wrong_cut = self.right = self.right_lost = 0  # what grounding would do to the suggestions
        self.by_project: dict[str, list[float]] = defaultdict(list)

    def add(self, case: RepoCase, got: str, ms: float, stats=None, grounded: str | None = None) -> None:
        got, want = got.rstrip(), case.target.rstrip()  # as model.reports.evaluate scores line mode
        if grounded is not None and got:
            changed = grounded.rstrip() != got
            if got == want:
                self.right, self.right_lost = self.right + 1, self.right_lost + changed
            else:
                self.wrong, self.wrong_cut = self.wrong + 1, self.wrong_cut + changed
        self.em.append(float(got == want))
        self.es.append(edit_similarity(got, want))
        self.ms.append(ms)
        self.by_project[Path(case.project).name].append(float(got == want))
        if stats is not None:
            self.forwards += stats.forwards
            self.tokens += stats.tokens

    def figures(self) -> dict:
        n = max(1, len(self.em))
        return {"cases": len(self.em), "exact_match": sum(self.em) / n, "edit_similarity": sum(self.es) / n,
                "mean_ms": sum(self.ms) / n, "p50_ms": pct(self.ms, 0.5) if self.ms else 0.0,
                "p95_ms": pct(self.ms, 0.95) if self.ms else 0.0, "forwards": self.forwards / n,
                "tokens_per_forward": self.tokens / max(1, self.forwards), "context_chars": self.ctx_chars / n,
                "context_tokens": self.ctx_tokens / n, "context_tokens_kept": self.ctx_kept / n,
                "exact_match_by_project": {p: sum(v) / len(v) for p, v in sorted(self.by_project.items())},
                "grounding_wrong_cut": self.wrong_cut / max(1, self.wrong), "grounding_right_lost": self.right_lost / max(1, self.right)}


def _run_arm(engine: Engine | None, arm: str, cases: list[RepoCase], opts, files: dict[str, dict[str, str]],
             bar) -> _Tally:
    """One arm over the cases (grouped by project: the context arm indexes one project at a time). The ms of the
    context arm include retrieval, not the index's one-off build."""
    tally = _Tally()
    index, index_of = None, None
    budget = getattr(opts, "context_budget", 0)
    for case in cases:
        proj = files[case.project]
        pieces = [case.prefix, case.suffix]
        if arm == "copy":
            t0 = time.perf_counter()
            tally.add(case, copy_baseline(case, proj), (time.perf_counter() - t0) * 1000)
            bar.update()
            continue
        if index_of != case.project:
            index, index_of = WorkspaceIndex.from_files(proj), case.project
        index.set_file(case.path, case.blanked)  # the workspace as the server sees it: the line's rest blanked
        t0 = time.perf_counter()
        ctx = index.context_for(case.path, case.blanked, len(case.prefix)) if arm == "context" else ""
        if arm == "file":
            hint = ""
        elif arm == "hint":
            hint = copy_hints(case.prefix, case.suffix)
        else:  # the repository's arms: the hint also looks in the other files, as the server's does
            hint = copy_hints(case.prefix, case.suffix, index.elsewhere(case.path))
        r = engine.fill(pieces, opts, context=ctx, hint=hint)
        ms = (time.perf_counter() - t0) * 1000
        line_prefix = case.prefix.rsplit("\n", 1)[-1]
        shown, _ = ground_in(case.blanked, line_prefix, r.texts[0].rstrip(), (index.knows, index.defines),
                             len(case.prefix))
        tally.add(case, r.texts[0], ms, r.stats, shown)
        index.set_file(case.path, proj[case.path])
        if arm == "context":
            n_ctx = engine.count_tokens(ctx) if ctx else 0
            tally.ctx_chars += len(ctx)
            tally.ctx_tokens += n_ctx
            tally.ctx_kept += min(n_ctx, budget)  # the model keeps a context's first context_budget tokens
        bar.update()
    return tally


def run_repo_eval(engine: Engine | None, cases: list[RepoCase], arms: list[str] | tuple[str, ...] = ARMS,
                  progress: bool = True) -> dict:
    """Each arm on each case -> {"cases", "per_project" (case counts), "arms": {arm: figures}}.
    `engine` may be None when only model-free arms run. The context arm's workspace is the case's project with the
    case's file blanked (never the answer). One arm runs over all cases before the next, so that no arm finds the
    engine's context cache warmed by another on the same case."""
    bad = [a for a in arms if a not in ARMS]
    if bad:
        raise ValueError(f"unknown arm(s) {bad}: choose from {', '.join(ARMS)}")
    arms = list(arms)
    opts = _line_options(engine) if engine else None
    ordered = sorted(cases, key=lambda c: c.project)
    files = {p: project_files(Path(p)) for p in {c.project for c in cases}}
    bar = tqdm(total=len(ordered) * len(arms), desc="eval-repo", unit="fill", disable=not progress)
    tallies = {arm: _run_arm(engine, arm, ordered, opts, files, bar) for arm in arms}
    bar.close()
    per_project: dict[str, int] = defaultdict(int)
    for c in cases:
        per_project[Path(c.project).name] += 1
    return {"cases": len(cases), "per_project": dict(sorted(per_project.items())),
            "arms": {a: t.figures() for a, t in tallies.items()}}


ARM_LABELS = {"file": "file only (the model alone)", "hint": "file + copy hints", "repo": "+ copy hints from the project",
              "context": "+ cross-file context",
              "copy": "copy baseline (no model)"}


def table_markdown(res: dict) -> str:
    counts = ", ".join(f"{p} {k}" for p, k in res["per_project"].items())
    run = ", ".join(f"{k} {res[k]}" for k in ("seed", "model", "threads") if res.get(k) is not None)
    lines = [f"{res['cases']} cases ({run}): a line whose rest uses a name defined in another file of the project; "
             f"the line's rest is blanked in the workspace. Cases per project: {counts}.", "",
             "| arm | EM | ES | mean ms | p50 ms | p95 ms | forwards | tok/fwd | context tokens (kept) | grounding: wrong cut / right lost |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm, f in res["arms"].items():
        lines.append(f"| {ARM_LABELS.get(arm, arm)} | {f['exact_match']:.1%} | {f['edit_similarity']:.3f} | "
                     f"{f['mean_ms']:.0f} | {f['p50_ms']:.0f} | {f['p95_ms']:.0f} | {f['forwards']:.2f} | "
                     f"{f['tokens_per_forward']:.2f} | {f['context_tokens']:.0f} ({f['context_tokens_kept']:.0f}) | "
                     + (f"{f['grounding_wrong_cut']:.0%} / {f['grounding_right_lost']:.0%} |" if arm != "copy" else "- |"))
    return "\n".join(lines)


def default_repos() -> Path:
    import os

    return Path(os.environ.get("HONE_RUNS", Path.home() / ".cache" / "hone")) / "repos"


def main(model_dir: str | None, repos: Path, n: int, seed: int, arms: list[str], threads: int | None,
         write_card: bool, device: str = "cpu") -> dict:
    projects = sorted(p for p in Path(repos).iterdir() if p.is_dir()) if Path(repos).is_dir() else []
    if not projects:
        raise SystemExit(f"{repos}: no held-out projects (fetch them with scripts/repo_projects.sh {repos})")
    cases = build_cases(projects, n, seed)
    engine = Engine.load(model_dir, device, threads=threads) if set(arms) - {"copy"} else None
    res = run_repo_eval(engine, cases, arms)
    res.update(model=Path(model_dir or DEFAULT_MODEL_DIR).name, seed=seed, threads=threads,
               projects=[p.name for p in projects])
    table = table_markdown(res)
    print(table)
    print(json.dumps(res))
    if write_card:  # no folder given: the shipped default's card
        put_block(Path(model_dir or DEFAULT_MODEL_DIR) / "MODEL_CARD.md", REPO_START, REPO_END, table,
                  "Repository-level held-out")
    return res



def blank_targets(files: dict[str, str], cases: list[RepoCase]) -> dict[str, str]:
    """The project as `hone adapt` may see it: every case's line cut at its cursor (the answers never trained on)."""
    cuts: dict[str, dict[int, int]] = defaultdict(dict)
    for c in cases:
        cuts[c.path][c.line] = min(c.col, cuts[c.path].get(c.line, c.col))
    out = dict(files)
    for rel, rows in cuts.items():
        lines = io.StringIO(files[rel]).readlines()
        for row, col in rows.items():
            end = lines[row][len(lines[row].rstrip("\r\n")):]
            lines[row] = lines[row][:col] + end
        out[rel] = "".join(lines)
    return out


def adapt_eval(model_dir: str | None, projects: list[Path], n: int, seed: int, minutes: float, threads: int | None,
               device: str = "cpu", steps: int = 0, lr: float | None = None) -> dict:
    """Per project: the repo arm (copy hints from the project, as the server gives) on its cases with the base
    model, then again after `hone adapt` for `minutes` on the project with every case's answer blanked
    -> {"projects": {name: {before, after, adapt}}, "before", "after"}."""
    import tempfile

    from ..training.adapt import AdaptConfig, adapt

    base = Path(model_dir or DEFAULT_MODEL_DIR)
    engine = Engine.load(str(base), device, threads=threads)
    out: dict = {"projects": {}, "minutes": minutes}
    before_all, after_all = _Tally(), _Tally()
    for root in projects:
        cases = build_cases([root], n, seed)
        if not cases:
            continue
        files = project_files(root)
        bar = tqdm(total=2 * len(cases), desc=f"adapt-eval {root.name}", unit="fill")
        before = _run_arm(engine, "repo", cases, _line_options(engine), {str(root): files}, bar)
        with tempfile.TemporaryDirectory(prefix="hone-adapt-eval-") as tmp:
            info = adapt({str(root / k): v for k, v in blank_targets(files, cases).items()}, base,
                         AdaptConfig(minutes=minutes, steps=steps, threads=threads or 2,
                                                     **({"lr": lr} if lr else {})), root=str(root), out=Path(tmp) / "m")
            after = before
            if info.kept:
                adapted = Engine.load(str(Path(tmp) / "m"), device, threads=threads)
                after = _run_arm(adapted, "repo", cases, _line_options(adapted), {str(root): files}, bar)
        bar.close()
        for tally, into in ((before, before_all), (after, after_all)):
            into.em += tally.em
            into.es += tally.es
        out["projects"][root.name] = {"cases": len(cases), "before": before.figures(), "after": after.figures(),
                                      "adapt": msgspec.to_builtins(info)}
        f0, f1 = before.figures(), after.figures()
        print(f"{root.name}: {len(cases)} cases, ES {f0['edit_similarity']:.3f} -> {f1['edit_similarity']:.3f}, "
              f"EM {f0['exact_match']:.1%} -> {f1['exact_match']:.1%}; adapt {info.steps} steps, "
              f"{info.minutes:.1f} min, held-out {info.before} -> {info.after}, kept {info.kept}", flush=True)
    out["before"], out["after"] = before_all.figures(), after_all.figures()
    return out


def _line_options(engine: Engine):
    return msgspec.structs.replace(engine.default_options(), mode="line", max_tokens=MAX_TOKENS)


def adapt_table(res: dict) -> str:
    """The markdown table of adapt_eval."""
    lines = [f"`hone adapt` for {res['minutes']:g} minutes per project (the project's Python files with every case's "
             "answer blanked), then the hint arm on its cases:", "",
             "| project | cases | ES before | ES after | EM before | EM after | steps | held-out CE before → after | kept |",
             "|---|---|---|---|---|---|---|---|---|"]

    def ce(held: dict) -> str:
        return " / ".join("-" if v is None else f"{v:.3f}" for v in held.values())

    for name, p in res["projects"].items():
        b, a, info = p["before"], p["after"], p["adapt"]
        lines.append(f"| {name} | {p['cases']} | {b['edit_similarity']:.3f} | {a['edit_similarity']:.3f} | "
                     f"{b['exact_match']:.1%} | {a['exact_match']:.1%} | {info['steps']} | "
                     f"{ce(info['before'])} → {ce(info['after'])} | {'yes' if info['kept'] else 'no'} |")
    b, a = res["before"], res["after"]
    lines.append(f"| **all** | {b['cases']} | **{b['edit_similarity']:.3f}** | **{a['edit_similarity']:.3f}** | "
                 f"{b['exact_match']:.1%} | {a['exact_match']:.1%} | | | |")
    return "\n".join(lines)


def adapt_main(model_dir: str | None, repos: Path, n: int, seed: int, minutes: float, threads: int | None,
               device: str = "cpu", steps: int = 0, only: str = "") -> dict:
    names = {x.strip() for x in only.split(",") if x.strip()}
    projects = sorted(p for p in Path(repos).iterdir() if p.is_dir() and (not names or p.name in names)) \
        if Path(repos).is_dir() else []
    if not projects:
        raise SystemExit(f"{repos}: no held-out projects{' named ' + only if only else ''}")
    res = adapt_eval(model_dir, projects, n, seed, minutes, threads, device, steps)
    print(adapt_table(res))
    print(json.dumps(res))
    return res
