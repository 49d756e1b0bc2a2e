"""What the benchmarks share (hone bench engine, lsp, serve) and the tests' tiny models use: real Python from the
standard library (on every machine, no download), lines of it to type, and the percentiles the benchmarks report.
Standard library only: `hone bench lsp` and `hone bench serve` run without torch."""

from __future__ import annotations

import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    """The standard library's top-level modules, sorted."""
    return sorted(STDLIB.glob("*.py"))


def read_source(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def pct(xs: list[float], q: float) -> float | None:
    """The value at rank q·n of the sorted values (None when there are none)."""
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


@dataclass(frozen=True)
class TypingCase:
    """One line of a file, typed from its indentation on."""

    name: str  # the file's name
    lines: list[str]  # the file's lines
    line: int  # the line typed (0-based)
    indent: str  # what the editor shows before typing starts
    typed: str  # the rest of the line: what is typed

    @property
    def document(self) -> str:
        """The file with the typed line cut back to its indentation."""
        return "\n".join(self.lines[: self.line] + [self.indent] + self.lines[self.line + 1 :])

    @property
    def before(self) -> str:
        return "\n".join(self.lines[: self.line]) + "\n" + self.indent

    @property
    def after(self) -> str:
        return "\n" + "\n".join(self.lines[self.line + 1 :])


def typing_cases(n: int, seed: int, files: list[tuple[str, str]] | None = None) -> list[TypingCase]:
    """One line from each of up to n files, (name, text) each (the standard library's top-level modules when none
    are given), in an order shuffled by `seed`: a line of 20-60 characters from the 21st to the 6th last that is
    not a comment or the start of a string."""
    rng = random.Random(seed)
    files = list(files) if files is not None else [(f.name, read_source(f)) for f in stdlib_files()]
    rng.shuffle(files)
    cases: list[TypingCase] = []
    for name, text in files:
        if len(cases) >= n:
            break
        lines = text.split("\n")
        candidates = [i for i, ln in enumerate(lines[20:-5], 20)
                      if 20 <= len(ln.strip()) <= 60 and not ln.strip().startswith(("#", '"', "'"))]
        if not candidates:
            continue
        i = rng.choice(candidates)
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        cases.append(TypingCase(name, lines, i, indent, lines[i][len(indent):]))
    return cases
