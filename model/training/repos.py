"""Training examples with cross-file context: the corpus' files grouped into their packages (directories), each
package's workspace index built as the server builds one for a workspace, and its retrieval asked for context."""

from __future__ import annotations

import random
from collections import OrderedDict, defaultdict
from itertools import accumulate
from pathlib import Path

from ..workspace import WorkspaceIndex, cross_file_uses, exported_elsewhere, file_symbols
from .data import ContextFn, Spot

ACTIVE_PACKAGES = 4  # examples with context come from this many packages at a time, so that each index built
SWAP_EVERY = 24  # serves ~this many examples before one of them is swapped for another package
INDEXES_KEPT = 8  # package indexes kept (least recently used dropped): ~1-5 MB each
MIN_FILES = 2  # a package of one file has no other file to retrieve from
PACKAGE_FILES = 48  # larger directories are split into groups of about this many files (an index of 441 files,
# 13 MB, took 25 s to build; 30 files ~0.1 s)


def relative_key(path: str, roots: list[str]) -> str:
    """A corpus path relative to the root it was gathered from ("json/decoder.py"), as a workspace shows it."""
    p = Path(path)
    for root in sorted(roots, key=len, reverse=True):
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            continue
    return p.as_posix().lstrip("/")


def cross_file_spots(files: dict[str, str]) -> dict[str, list[Spot]]:
    """Per file of a package: its lines that use a name another file of the package defines (and it neither
    defines nor imports), each as (first cursor offset: 3 characters into the line's code, the name's offset)."""
    symbols = {rel: file_symbols(text) for rel, text in files.items()}
    elsewhere = exported_elsewhere(symbols)
    out: dict[str, list[Spot]] = {}
    for rel, text in files.items():
        uses = cross_file_uses(text, symbols[rel], elsewhere[rel]) if elsewhere[rel] else {}
        if not uses:
            continue
        starts = [0, *accumulate(len(line) for line in text.split("\n"))]  # tokenize's rows split on \n only
        spots = []
        for row, names in sorted(uses.items()):
            line_start = starts[row] + row  # the "\n"s before it
            line = text[line_start: line_start + 200]
            indent = len(line) - len(line.lstrip(" \t"))
            for _, col in names:
                spots.append((line_start + min(indent + 3, col), line_start + col))
        out[rel] = spots
    return out


class RepoContexts:
    """Draws training files, `share` of them with the cross-file context the workspace index retrieves for them."""

    def __init__(self, records: list[tuple[str, str]], share: float, roots: list[str] = (), seed: int = 0):
        if not 0.0 <= share <= 1.0:
            raise ValueError("the share of examples with context must be in [0, 1]")
        self.share, self.roots = share, list(roots)
        self.texts = [text for _, text in records]
        packages: dict[str, list[int]] = defaultdict(list)
        self.keys = [relative_key(path, self.roots) for path, _ in records]
        for i, key in enumerate(self.keys):
            packages[key.rsplit("/", 1)[0] if "/" in key else ""].append(i)
        groups = []
        for name, members in sorted(packages.items()):
            parts = -(-len(members) // PACKAGE_FILES)
            groups += [(f"{name}#{j}" if parts > 1 else name, members[j::parts]) for j in range(parts)]
        self.packages = [(k, v) for k, v in groups if len(v) >= MIN_FILES]
        self.weights = [len(v) for _, v in self.packages]  # a file is as likely as in plain draws
        self._indexes: OrderedDict[str, tuple[WorkspaceIndex, dict[str, list[Spot]]]] = OrderedDict()
        self._rng = random.Random(seed)  # which packages are active: apart from the examples' own draws
        self.active = self._pick(ACTIVE_PACKAGES) if self.packages else []
        self.built = 0  # package indexes built so far

    def _pick(self, k: int) -> list[int]:
        return self._rng.choices(range(len(self.packages)), self.weights, k=k)

    def _index(self, package: int) -> tuple[WorkspaceIndex, dict[str, list[Spot]]]:
        """The package's index and its files' cross-file lines."""
        name, members = self.packages[package]
        if name in self._indexes:
            self._indexes.move_to_end(name)
            return self._indexes[name]
        files = {self.keys[i]: self.texts[i] for i in members}
        self.built += 1
        self._indexes[name] = WorkspaceIndex.from_files(files), cross_file_spots(files)
        while len(self._indexes) > INDEXES_KEPT:
            self._indexes.popitem(last=False)
        return self._indexes[name]

    def fixed(self, records: list[tuple[str, str]]) -> tuple[dict[str, ContextFn], dict[str, list[Spot]]]:
        """Context for other files (held-out ones) from the packages they belong to: {text: retrieval}, and their
        cross-file lines {text: spots}. Each package's index is built on the first call, from the package's files
        here and the file itself."""
        members: dict[str, list[int]] = {name.split("#")[0]: idx for name, idx in self.packages}  # one group each
        held: dict[str, dict[str, str]] = defaultdict(dict)  # package -> its held-out files
        for path, text in records:
            key = relative_key(path, self.roots)
            package = key.rsplit("/", 1)[0] if "/" in key else ""
            if package in members:
                held[package][key] = text
        out: dict[str, ContextFn] = {}
        spots: dict[str, list[Spot]] = {}
        for package, mine in held.items():
            files = {self.keys[i]: self.texts[i] for i in members[package]}
            found = cross_file_spots({**files, **mine})  # the package's files parsed once
            for key, text in mine.items():
                if found.get(key):
                    spots[text] = found[key]

                def context(doc: str, offset: int, files=files, key=key, text=text, cell=[]) -> str:
                    if not cell:
                        cell.append(WorkspaceIndex.from_files({**files, key: text}))
                    return cell[0].context_for(key, doc, offset)

                out[text] = context
        return out, spots

    def batch_has_context(self, rng: random.Random) -> bool:
        """Whether the next batch's rows get context (`share` of the batches: a batch is as wide as its longest row,
        so rows with ~250 tokens of context beside rows without would be mostly padding)."""
        return bool(self.packages) and rng.random() < self.share

    def draw(self, rng: random.Random, context: bool = True) -> tuple[str, ContextFn | None, list[Spot]]:
        """A file's text and, with `context`, the retrieval that gives its examples context and its cross-file
        lines."""
        if not self.packages or not context:
            return rng.choice(self.texts), None, []
        if self._rng.random() < 1 / SWAP_EVERY:
            self.active[self._rng.randrange(len(self.active))] = self._pick(1)[0]
        package = rng.choice(self.active)
        i = rng.choice(self.packages[package][1])
        (index, spots), key = self._index(package), self.keys[i]
        return self.texts[i], lambda text, offset: index.context_for(key, text, offset), spots.get(key, [])
