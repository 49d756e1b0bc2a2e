"""Per-workspace adapted models (`hone adapt`, the server's idle adaptation): where they live, which base model they
were adapted from, and which one a workspace root gets. Torch-free: the server asks before any model loads.

A folder per workspace root under <cache>/adapted/<digest of the root's path>/: `model/` (a plain model folder) and
`adapt.json` (AdaptInfo). It is used only while its base is the model the server would load otherwise (a new default
model makes old adaptations stale), and at most MAX_ADAPTED are kept, the least recently used going first.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from pathlib import Path

import msgspec

from . import cache_home

INFO_FILE = "adapt.json"
MODEL_FOLDER = "model"
MAX_ADAPTED = 4  # per-workspace models kept on disk (~20 MB each for the default model)
_FINGERPRINT_FILES = ("config.json", "tokenizer.json")  # with every *.safetensors of the folder


class AdaptInfo(msgspec.Struct, kw_only=True):
    """What an adaptation was: kept only when its held-out loss fell."""

    root: str  # the workspace root it was adapted to
    base: str  # the base model folder
    base_fingerprint: str  # model_fingerprint(base) when it was adapted
    kept: bool  # the held-out loss fell (otherwise no model folder is written)
    before: dict[str, float | None]  # held-out losses of the base on the root's held-out lines (None: not finite)
    after: dict[str, float | None]  # ... of the adapted weights (as saved: bf16)
    steps: int = 0
    tokens: int = 0
    minutes: float = 0.0
    train_files: int = 0
    train_chars: int = 0
    passes: float = 0.0  # how many times the training text was read (about: windows of the model's budgets)
    heldout_lines: int = 0
    finished: float = 0.0  # unix time
    precision: str = ""  # how it trained: "bf16 autocast" or "fp32"


def adapted_root() -> Path:
    return cache_home() / "adapted"


def adapted_dir(root: str | os.PathLike) -> Path:
    """The folder of the workspace root's adaptation (whether or not one exists)."""
    key = hashlib.sha256(os.path.abspath(root).encode()).hexdigest()[:16]
    return adapted_root() / key


def model_fingerprint(folder: str | os.PathLike) -> str:
    """A digest of a model folder's config, tokenizer and weights (~20 MB read for the default model; read again
    only when one of those files changed: the server asks on every settings change)."""
    folder = Path(folder)
    paths = [folder / n for n in _FINGERPRINT_FILES] + sorted(folder.glob("*.safetensors"))
    stamps = []
    for path in paths:
        try:
            st = path.stat()
            stamps.append((path.name, st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append((path.name, -1, -1))
    return _digest_files(str(folder), tuple(stamps))


@functools.lru_cache(maxsize=8)
def _digest_files(folder: str, stamps: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for name, size, _ in stamps:
        h.update(name.encode())
        try:
            if size < 0:
                raise OSError
            with open(Path(folder) / name, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except OSError:
            h.update(b"missing")
    return h.hexdigest()[:24]


def read_info(folder: Path) -> AdaptInfo | None:
    try:
        return msgspec.json.decode((folder / INFO_FILE).read_bytes(), type=AdaptInfo)
    except (OSError, msgspec.ValidationError, msgspec.DecodeError):
        return None


def find_adapted(root: str | os.PathLike, base: str | os.PathLike) -> tuple[Path | None, str]:
    """(the model folder adapted to `root` from `base`, or None; why not, "" when found). Marks it recently used."""
    folder = adapted_dir(root)
    info = read_info(folder)
    if info is None:
        return None, "not adapted"
    if not info.kept:
        return None, "the last adaptation did not improve the held-out loss"
    model = folder / MODEL_FOLDER
    if not (model / "config.json").is_file():
        return None, f"{model}: no model folder"
    if info.base_fingerprint != model_fingerprint(base):
        return None, "adapted from another base model"
    try:
        os.utime(folder / INFO_FILE)
    except OSError:
        pass
    return model, ""


def install(staging: Path | None, root: str | os.PathLike, info: AdaptInfo) -> Path:
    """Move a finished adaptation (`staging`: a model folder, or None when not kept) into the root's place, replacing
    the previous one whole, then prune to MAX_ADAPTED. -> the root's folder."""
    folder = adapted_dir(root)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(folder.name + f".new-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    if info.kept:
        shutil.move(str(staging), tmp / MODEL_FOLDER)
    (tmp / INFO_FILE).write_bytes(msgspec.json.format(msgspec.json.encode(info), indent=2))
    old = folder.with_name(folder.name + f".old-{os.getpid()}")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    prune()
    return folder


def prune(keep: int = MAX_ADAPTED) -> list[Path]:
    """Remove all but the `keep` most recently used adaptations -> the removed folders."""
    base = adapted_root()
    if not base.is_dir():
        return []
    found = sorted((p for p in base.iterdir() if p.is_dir() and "." not in p.name),
                   key=lambda p: (p / INFO_FILE).stat().st_mtime if (p / INFO_FILE).exists() else 0.0, reverse=True)
    gone = found[keep:]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone
