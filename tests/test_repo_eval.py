"""Repository-level evaluation: cases from a tiny three-file project, the copy baseline, every arm on a tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from model.reports.repo_eval import (REPO_END, REPO_START, RepoCase, adapt_main, blank_targets, build_cases, copy_baseline,
                                    main, run_repo_eval)

UTIL = '''def helper(x):
    return x + 1


class Box:
    def open_lid(self):
        return 1
'''
MAIN = '''from pkg import util


def run(value):
    total = util.helper(value) + 2
    return total
'''
OTHER = '''def helper(y):
    return y


def go(b):
    result = helper(3) * 4
    label = "util.helper(1)"  # helper in a string
    return b.open_lid()
'''


def tiny_project(root: Path) -> Path:
    for name, text in {"__init__.py": "", "util.py": UTIL, "main.py": MAIN, "other.py": OTHER}.items():
        (root / "pkg").mkdir(parents=True, exist_ok=True)
        (root / "pkg" / name).write_text(text)
    return root


def test_cases_only_where_a_name_of_another_file_is_used_and_not_bound_here(tmp_path):
    root = tiny_project(tmp_path / "proj")
    cases = build_cases([root], 50, seed=0)
    # util.helper used through the module in main.py; b.open_lid() a member of util's class in other.py. Not:
    # other.py's own helper, the string, util.py's own names, the import line.
    assert sorted((c.path, c.line, c.name) for c in cases) == [("pkg/main.py", 4, "helper"),
                                                              ("pkg/other.py", 7, "open_lid")]
    for c in cases:
        text = (root / c.path).read_text()
        assert c.prefix + c.target + c.suffix == text
        line = text.splitlines()[c.line]
        assert c.target == line[c.col:] and c.suffix.startswith("\n")
        indent = len(line) - len(line.lstrip())
        assert indent + 3 <= c.col <= line.index(c.name)  # a few characters typed, the cursor before the name
        assert c.blanked == c.prefix + c.suffix and c.target not in c.blanked
        assert c.project == str(root)
    assert build_cases([root], 50, seed=0) == cases
    assert len(build_cases([root], 1, seed=0)) == 1


def test_cases_spread_over_projects(tmp_path):
    a, b = tiny_project(tmp_path / "a"), tiny_project(tmp_path / "b")
    cases = build_cases([a, b], 2, seed=3)
    assert {c.project for c in cases} == {str(a), str(b)}


def _case(text: str, line: str, col: int) -> RepoCase:
    at = text.index(line) + col
    end = text.index("\n", at)
    return RepoCase("p", "f.py", text[:at].count("\n"), col, text[:at], text[end:], text[at:end], "x")


def test_copy_baseline_same_file_then_other_files_then_nothing():
    text = "a = util.helper(value) + 2\nb = 1\nc = util.helper(value) + 2\n"
    case = _case(text, "c = util.helper(", len("c = util.helper("))
    assert copy_baseline(case, {}) == "value) + 2"
    other = "x = compute_all(items, 3)\n"
    case = _case("y = 1\nz = compute_all(items, 3)\n", "z = compute_all(", len("z = compute_all("))
    assert copy_baseline(case, {"f.py": "ignored", "g.py": other}) == "items, 3)"
    case = _case("q = never_seen_before(1)\n", "q = never_seen_before(", 22)
    assert copy_baseline(case, {"g.py": other}) == ""


def test_every_arm_gives_finite_figures(tmp_path, engine):
    root = tiny_project(tmp_path / "proj")
    cases = build_cases([root], 10, seed=0)
    res = run_repo_eval(engine, cases, ["file", "hint", "repo", "context", "copy"], progress=False)
    assert res["cases"] == len(cases) and res["per_project"] == {"proj": len(cases)}
    ran = set(res["arms"])
    assert ran == {"file", "hint", "repo", "context", "copy"}
    for f in res["arms"].values():
        assert f["cases"] == len(cases)
        for key in ("exact_match", "edit_similarity", "mean_ms", "p50_ms", "p95_ms", "forwards", "tokens_per_forward",
                    "context_chars", "context_tokens", "context_tokens_kept"):
            assert math.isfinite(f[key]) and f[key] >= 0
        assert 0 <= f["exact_match"] <= 1 and 0 <= f["edit_similarity"] <= 1
    assert res["arms"]["file"]["forwards"] > 0 and res["arms"]["copy"]["forwards"] == 0
    if "context" in ran:  # main.py imports util: its definitions are retrieved
        assert res["arms"]["context"]["context_chars"] > 0


def test_unknown_arm_names_the_valid_ones():
    with pytest.raises(ValueError, match="file, hint, repo, context, copy"):
        run_repo_eval(None, [], ["grep"])


def test_main_prints_a_table_then_figures_and_keeps_one_card_section(tmp_path, capsys):
    """Model-free arms need no model; --write-card replaces its section on a second run."""
    repos = tmp_path / "repos"
    tiny_project(repos / "proj")
    model = tmp_path / "model"
    model.mkdir()
    (model / "MODEL_CARD.md").write_text("# card\n\n## Notes\nkept\n")
    for n in (1, 2):
        main(str(model), repos, n, 0, ["copy"], 1, write_card=True)
        out = capsys.readouterr().out.strip().splitlines()
        assert json.loads(out[-1])["cases"] == n and any(line.startswith("| copy baseline") for line in out)
    card = (model / "MODEL_CARD.md").read_text()
    assert card.count(REPO_START) == card.count(REPO_END) == 1 and "2 cases (seed 0, model model" in card
    assert "kept" in card


def test_blanked_targets_leave_the_rest_of_each_line_and_file(tmp_path):
    root = tiny_project(tmp_path / "proj")
    cases = build_cases([root], 10, 0)
    files = {rel: (root / rel).read_text() for rel in ("pkg/main.py", "pkg/other.py", "pkg/util.py", "pkg/__init__.py")}
    blanked = blank_targets(files, cases)
    for c in cases:
        line = blanked[c.path].split("\n")[c.line]
        assert line == c.prefix.rsplit("\n", 1)[-1]  # cut at the cursor, nothing of the answer left
    assert blanked["pkg/util.py"] == files["pkg/util.py"]


def test_adapt_eval_adapts_per_project_and_prints_its_table(tmp_path, capsys):
    from model.testing import make_tiny_model, sample_texts

    repos = tmp_path / "repos"
    root = tiny_project(repos / "proj")
    for i, text in enumerate(sample_texts()[:3]):  # enough Python to adapt to
        (root / "pkg" / f"big{i}.py").write_text(text)
    model = make_tiny_model(tmp_path / "model", layout="spm", shifted=True)
    res = adapt_main(str(model), repos, 4, 0, 1.0, 1, steps=2)
    p = res["projects"]["proj"]
    assert p["adapt"]["steps"] == 2 and p["cases"] == res["before"]["cases"] == res["after"]["cases"] > 0
    assert all(math.isfinite(res[k]["edit_similarity"]) for k in ("before", "after"))
    out = capsys.readouterr().out
    assert "| proj |" in out and "| **all** |" in out
