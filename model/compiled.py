"""The spm model's hot steps compiled ahead of time: torch.export, then AOTInductor with the weights frozen into
the compiled code (packed once for Inductor's C++ micro-GEMM instead of on every small matmul). Chosen by `hone bench
steps`, which times eager, torch.compile and ONNX Runtime beside it: on 2 CPU cores a step of 1-16 tokens runs
1.7-2.9x faster than eager and 1.2-1.7x faster than ONNX Runtime, with no dependency beyond torch and no recompiles
at run time (the shapes are dynamic within fixed ranges; anything outside them runs eagerly). Two thirds of a cold
file's time goes to encoding its stream afresh: that step is compiled too, its weights left unpacked (ENCODE_OPTIONS).

A compiled package is built once per model, torch version and CPU (a minute or more of CPU on 2 cores, a C++
compiler needed) and kept in the cache folder; later loads take a few seconds. The build runs in a child process
(`python -m model.compiled build`) at the lowest priority, stopped while a request is served: what torch.export and
Inductor leave behind (~300 MB) goes with it, and the server only loads the finished packages.

Each package carries its own copy of the weights it reads (the default model: canvas ~48 MB, stream ~38, head ~10,
encode ~38), mostly the same matrices in the same layouts, and the runtime copies them out of the library at load.
Loaded here, the steps keep one copy in all (SharedWeights): the model's own tensors where a constant is one of its
weights unchanged, one tensor for a packed matrix two steps share; the library's embedded copy is handed back to the
system. For the default model the four loaded steps then add ~40 MB of weights to the process instead of ~310
(issue #23; torch._inductor's loader, no longer imported, accounted for ~70 of those)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import mmap
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import msgspec
import torch
from torch import nn

from . import cache_home
from .machine import cpuinfo
from .network import Denoiser, KVCache

AOT_FORMAT = 5  # bump when what is exported changes: old packages are then rebuilt, never loaded
MAX_NEW = 128  # the most tokens one compiled step takes (canvas slots or new stream tokens); a longer stream extension
# runs as several steps, a larger canvas eagerly
KEEP_PACKAGES = 4  # compiled packages kept in the cache (about 100 MB each for the default model)
KEY_CHARS = 24  # a package's folder name: this many hex digits of package_key
MIN_PAST = 2  # the shortest cached stream a compiled step takes ([BOS] + a token; streams start with [BOS] suffix)
BUILD_NICE = 19  # the build child's niceness (lowest): the editor and the server's requests come first
MODEL_FILE = "model.pt"  # the model handed to the build child, in its .building- folder while it builds
PROGRESS = "progress: "  # a line of the build child's stdout that says how far it got


def cache_root() -> Path:
    """Where compiled packages live: $HONE_CACHE/compiled, else the user's cache folder (~/.cache/hone/compiled)."""
    return cache_home() / "compiled"


def _cpu_id() -> str:
    """What the compiled code was built for: generated kernels use the building CPU's vector instructions."""
    flags = next((line for line in cpuinfo().splitlines() if line.startswith("flags")), "")
    return f"{platform.machine()} {platform.processor()} {flags}"


def package_key(model: Denoiser) -> str:
    """A digest of everything a package depends on: weights, config, torch, the CPU and this module's format."""
    h = hashlib.sha256(f"{AOT_FORMAT} {torch.__version__} {_cpu_id()}".encode())
    h.update(msgspec.json.encode(model.cfg))
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:KEY_CHARS]


def _flat(kv: KVCache) -> list[torch.Tensor]:
    # compiled code assumes the strides it was exported with: views into a longer buffer must be copied out
    return [t.contiguous() for pair in kv for t in pair]


def _pairs(flat) -> KVCache:
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


class CanvasStep(nn.Module):
    """Denoiser.canvas_logits with flat arguments (what torch.export takes): ids (1, n), positions (n,), last
    (1, D), then k and v of each layer (1, H, T, Dh) -> logits (n, V)."""

    def __init__(self, model: Denoiser):
        super().__init__()
        self.m = model

    def forward(self, ids, positions, last, *kv):
        return self.m.canvas_logits(ids, positions, _pairs(kv), last)


class StreamStep(nn.Module):
    """Denoiser.extend_stream with flat arguments: ids (1, n), positions (n,), then the past's k and v per layer ->
    hidden states (1, n, D), then the new tokens' k and v per layer (1, H, n, Dh)."""

    def __init__(self, model: Denoiser):
        super().__init__()
        self.m = model

    def forward(self, ids, positions, *kv):
        h, new = self.m.extend_stream(ids, positions, _pairs(kv))
        return (h, *[t for pair in new for t in pair])


class HeadStep(nn.Module):
    """The output head on hidden states (m, D) -> float logits (m, V): the autoregressive path's next-token logits
    (eagerly a matmul of a few rows repacks the 8192 x D weight on every call)."""

    def __init__(self, model: Denoiser):
        super().__init__()
        self.m = model

    def forward(self, h):
        return self.m.head(h).float()


class EncodeStep(nn.Module):
    """A causal stream encoded afresh, Denoiser.hidden(causal=True, keep_kv=True) with flat results: ids (1, T),
    positions (T,) -> hidden states (1, T, D), then each layer's k and v (1, H, T, Dh)."""

    def __init__(self, model: Denoiser):
        super().__init__()
        self.m = model

    def forward(self, ids, positions):
        h, kv = self.m.hidden(ids, positions, causal=True, keep_kv=True)
        return (h, *[t for pair in kv for t in pair])


def example_inputs(model: Denoiser, past: int, n: int):
    """Example arguments of the canvas and stream steps: a random stream of `past` tokens and `n` new ones."""
    g = torch.Generator().manual_seed(0)  # not the global generator: a build runs beside sampling requests
    ids = torch.randint(5, model.cfg.vocab_size, (1, past), generator=g)
    with torch.no_grad():
        h, kv = model.hidden(ids, causal=True, keep_kv=True)
    flat = _flat(kv)
    new = torch.randint(5, model.cfg.vocab_size, (1, n), generator=g)
    pos = torch.arange(past, past + n)
    return (new, pos, h[0, -1:].contiguous(), *flat), (new, pos, *flat)


OPTIONS = {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP"}  # Inductor's, every step:
# the weights frozen into the compiled code and packed at build for Inductor's own C++ micro-GEMM, which runs every
# matmul; none goes through oneDNN, whose caches (and ideep's above them) keep a primitive per matmul shape, up to
# 1024 of each: steps that see every row count from 1 to 128 grew a server by ~80 MB (issue #23). On 2 AVX2 cores the
# micro-GEMM is also faster where the server spends its steps: a stream step of 1 / 4 / 16 tokens 2.0 / 3.1 / 5.4 ms
# instead of 4.7 / 5.1 / 6.4, 64 tokens 16 vs 18, 128 tokens 31 vs 30 (the head on 128 rows 8.8 vs 5.8 ms: it mostly
# reads a few). Not timed against oneDNN at build ("CPP,ATEN"): a build runs at the lowest priority beside the server
# and its timings were noise (on a 2-core EPYC they picked oneDNN for every matmul).


ENCODE_OPTIONS = {"freezing": False}  # a fresh stream of a few hundred tokens: its matmuls run in the weights' own
# layout through the BLAS, as eagerly (the micro-GEMM and oneDNN are slower at this size), so the step reads the model's
# own tensors and adds no copy; what it gains is the fused rest (norms, rotary, activations): on 2 AVX2 cores 257 tokens
# in 37 ms instead of 44, 40 tokens 8 instead of 12


def export_specs(model: Denoiser) -> list[tuple[str, nn.Module, tuple, tuple, dict]]:
    """The steps as torch.export takes them: (name, module, example arguments, dynamic shapes, Inductor options)."""
    n = torch.export.Dim("n", min=1, max=MAX_NEW)
    t = torch.export.Dim("t", min=MIN_PAST, max=model.cfg.max_seq_len - 1)
    kv_dims = tuple({2: t} for _ in range(2 * model.cfg.n_layers))
    canvas_args, stream_args = example_inputs(model, 37, 9)
    fresh = min(257, model.cfg.max_seq_len - 1)  # a fresh stream's example: a line's prefix and suffix budgets
    ids = torch.randint(5, model.cfg.vocab_size, (1, fresh), generator=torch.Generator().manual_seed(0))
    return [("canvas", CanvasStep(model), canvas_args, ({1: n}, {0: n}, None, kv_dims), OPTIONS),
            ("stream", StreamStep(model), stream_args, ({1: n}, {0: n}, kv_dims), OPTIONS),
            ("head", HeadStep(model), (canvas_args[2].expand(9, -1).contiguous(),), ({0: n},), OPTIONS),
            ("encode", EncodeStep(model), (ids, torch.arange(ids.shape[1])), ({1: t}, {0: t}), ENCODE_OPTIONS)]


STEPS = ("canvas", "stream", "head", "encode")


class BuildGate:
    """Requests being served stop a build: the build child and the compilers it starts (one process group) get
    SIGSTOP when a completion starts (at once, no core used meanwhile) and SIGCONT when none runs any more. The server
    marks its model runs with `serving()`; a build registers its process group with `building(pgid)`."""

    def __init__(self) -> None:
        self._busy = 0
        self._groups: set[int] = set()
        self._lock = threading.Lock()
        self.pauses = 0  # times a build was stopped for a request

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        with self._lock:
            self._busy += 1
            if self._busy == 1:
                self._signal(self._groups, "SIGSTOP")
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
                if self._busy == 0:
                    self._signal(self._groups, "SIGCONT")

    @contextlib.contextmanager
    def building(self, pgid: int) -> Iterator[None]:
        """Stop and continue process group `pgid` with the requests while this is held; it leaves the group running.
        Leave it before reaping the group's leader (a reaped leader's id may name another group)."""
        with self._lock:
            self._groups.add(pgid)
            if self._busy:
                self._signal({pgid}, "SIGSTOP")
        try:
            yield
        finally:
            with self._lock:
                self._groups.discard(pgid)
                if self._busy:
                    self._signal({pgid}, "SIGCONT")

    def _signal(self, groups: set[int], name: str) -> None:
        sig = getattr(signal, name, None)  # none on Windows: builds there are not stopped, only low priority
        for pgid in groups if sig is not None else ():
            try:
                os.killpg(pgid, sig)
            except OSError:  # the build has just ended
                continue
            self.pauses += name == "SIGSTOP"


GATE = BuildGate()  # the process' one gate: the engine's requests and its background build meet here


def _export(model: Denoiser, folder: Path, on_progress: Callable[[str], None]) -> None:
    """Export and compile the steps into folder/{canvas,stream,head}.pt2, skipping those already there (a build
    that was interrupted resumes). Each step is written under another name and renamed when done, so a step file is
    whole or absent. Runs in the build child (`main`)."""
    for name, module, args, dims, options in export_specs(model):
        if (folder / f"{name}.pt2").is_file():
            on_progress(f"the {name} step was built before")
            continue
        on_progress(f"exporting the {name} step")
        with torch.no_grad():
            program = torch.export.export(module, args, dynamic_shapes=dims)
            on_progress(f"compiling the {name} step (AOTInductor)")
            part = folder / f"{name}.part.pt2"
            torch._inductor.aoti_compile_and_package(program, package_path=str(part), inductor_configs=options)
            os.replace(part, folder / f"{name}.pt2")


class BuildFailed(RuntimeError):
    """The build child failed or was killed; the message says how, with the last line it wrote to stderr."""


def build_command(folder: Path, key: str) -> list[str]:
    """The build child's command line: it builds package `key` into `folder` from the model in folder/MODEL_FILE."""
    return [sys.executable, "-m", "model.compiled", "build", str(folder), key, str(os.getpid())]


def _build_in_child(model: Denoiser, folder: Path, key: str, on_progress: Callable[[str], None],
                    gate: BuildGate = GATE) -> None:
    """Build package `key` into `folder` in a child process and wait for it, passing its progress on. The model
    goes over as a pickled module (the same round trip as copy.deepcopy: shared weights stay shared, dtypes kept)
    in the folder; any failure raises BuildFailed, and a raise here (the server going away) kills the child."""
    handed = folder / MODEL_FILE
    torch.save(model, handed)
    here = str(Path(__file__).resolve().parents[1])  # where `model` is imported from, whatever the working folder
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (here, os.environ.get("PYTHONPATH"))))}
    try:
        with tempfile.TemporaryFile() as err:  # its errors (a pipe nobody reads could fill and block it)
            # its own process group, so the gate stops the compilers it starts along with it
            proc = subprocess.Popen(build_command(folder, key), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=err, env=env, process_group=0, text=True, errors="replace")
            try:
                with gate.building(proc.pid):
                    for line in proc.stdout:  # to its end: the child exits
                        if line.startswith(PROGRESS):
                            on_progress(line[len(PROGRESS):].rstrip("\n"))
            except BaseException:
                with contextlib.suppress(OSError):  # not reaped yet: the group's id is still this build's
                    if hasattr(os, "killpg"):
                        os.killpg(proc.pid, signal.SIGKILL)
                    else:  # Windows: no process groups here
                        proc.kill()
                raise
            finally:
                proc.wait()
                proc.stdout.close()
            if proc.returncode != 0:
                err.seek(0)
                lines = [x for x in err.read().decode(errors="replace").splitlines() if x.strip()]
                how = (f"was killed ({signal.Signals(-proc.returncode).name})" if proc.returncode < 0
                       else f"failed (exit code {proc.returncode})")
                raise BuildFailed(f"the build process {how}" + (f": {lines[-1][:300]}" if lines else ""))
    finally:
        handed.unlink(missing_ok=True)
        for part in folder.glob("*.part.pt2"):  # a step the child had begun to write
            part.unlink(missing_ok=True)


@contextlib.contextmanager
def build_lock(root: Path, key: str) -> Iterator[None]:
    """Held while package `key` is built: another process (a second editor window's server) waits for it, then
    finds the package done instead of building it again. An advisory lock on a file: the system drops it when its
    holder dies, so a killed build never blocks the next one."""
    path = root / f".lock-{key}"
    with open(path, "a+b") as f:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks here; two builds at once only cost time
            yield
            return
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _tidy(root: Path, keep: Path) -> None:
    """Bound the cache: the KEEP_PACKAGES most recently used packages stay; builds left half done (a process
    killed mid-build: the next start of the same model resumes them) and their locks go once they are a day old,
    and at once when they are not this format's (the random .building-XXXX folders of earlier versions)."""
    now = time.time()
    packages = []
    for p in root.iterdir():
        if p.name.startswith((".building-", ".lock-")):
            key = p.name.split("-", 1)[1]
            stale = now - p.stat().st_mtime > 86400 or len(key) != KEY_CHARS
            if stale and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif stale:
                p.unlink(missing_ok=True)
        elif p.is_dir() and p != keep:
            packages.append(p)
    packages.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for p in packages[KEEP_PACKAGES - 1 :]:
        shutil.rmtree(p, ignore_errors=True)


# ---- loading: one copy of the weights -------------------------------------------------------------------------------

CONST_ALIGN = 64  # bytes: the AOTInductor runtime places each constant at a multiple of this in its blob (model_base.h)
_MADV_DONTNEED = 4  # madvise advice (Linux): drop these pages; a later read maps them from the file again
_FIELD = re.compile(r"constants_info_\[(\d+)\]\.(\w+) = (.*?);$", re.M)


class LayoutError(RuntimeError):
    """A package's constants are not laid out as this module reads them (another torch's runtime)."""


@dataclass
class Constant:
    """One constant of a compiled step, as its generated code declares it (constants_info_ in the wrapper .cpp)."""

    name: str  # the runtime's key
    fqn: str  # the module attribute it came from ("m.head.weight"), or a made-up name for folded/packed ones
    dtype: torch.dtype
    nbytes: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int  # storage offset, in elements
    folded: bool  # computed at run time from other constants (none with freezing); not in the blob
    mkldnn: str  # a oneDNN-packed tensor's layout description ("" for a plain strided tensor)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x.rstrip("L")) for x in text.strip("{} ").split(",") if x.strip())


def constants_of(wrapper_cpp: str) -> list[Constant]:
    """The constants a generated wrapper declares, in the runtime's order; LayoutError if it declares them
    otherwise than this reads them."""
    fields: dict[int, dict[str, str]] = {}
    for i, key, value in _FIELD.findall(wrapper_cpp):
        fields.setdefault(int(i), {})[key] = value
    out = []
    try:
        for i in range(len(fields)):
            f = fields[i]
            dtype = getattr(torch, f["dtype"].rsplit("cached_torch_dtype_", 1)[1].strip(")"))
            out.append(Constant(name=f["name"].strip('"'), fqn=f["original_fqn"].strip('"'), dtype=dtype,
                                nbytes=int(f["data_size"]), shape=_ints(f["shape"]), stride=_ints(f["stride"]),
                                offset=int(f["offset"]), folded=f["from_folded"] == "true",
                                mkldnn=f.get("opaque_metadata", "") if "mkldnn" in f.get("layout", "") else ""))
    except (KeyError, IndexError, ValueError, AttributeError) as e:
        raise LayoutError(f"a constant's declaration is not as expected ({type(e).__name__}: {e})") from e
    return out


class SharedWeights:
    """The tensors the loaded steps read, one copy of each: a constant that is one of the model's weights (the head,
    the norms, the rope tables) is the model's own tensor; a packed matrix found in several steps (the canvas and
    stream steps pack the same layers the same way) is kept once. The steps hold raw pointers into these tensors:
    they live as long as the steps, and the model's weights must not change in place while the steps serve."""

    def __init__(self, model: Denoiser):
        named = chain(model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False))
        self._model = {f"m.{name}": t.detach() for name, t in named}  # the steps' modules hold the model as `m`
        self._kept: dict[tuple, torch.Tensor] = {}  # content key -> the one tensor
        self.from_model = 0  # constants that are the model's own tensors
        self.deduplicated = 0  # constants another step already holds
        self.unshared = 0  # steps whose constants could not be placed (LayoutError): they keep the runtime's copy

    def nbytes(self) -> int:
        """Bytes held for the steps beyond the model's own weights."""
        return sum(torch.ops.mkldnn._nbytes(t) if t.is_mkldnn else t.untyped_storage().nbytes()
                   for t in self._kept.values())

    def tensor(self, c: Constant, t: torch.Tensor) -> torch.Tensor:
        """The tensor to serve constant `c`, whose value as loaded is `t` (a view into the runtime's copy)."""
        own = self._model.get(c.fqn)
        if (own is not None and not t.is_mkldnn and own.dtype == t.dtype and own.shape == t.shape
                and own.stride() == t.stride() and torch.equal(own, t)):
            self.from_model += 1
            return own
        key = _content_key(c, t)
        if key in self._kept:
            self.deduplicated += 1
        else:
            self._kept[key] = t.clone()
        return self._kept[key]


def _content_key(c: Constant, t: torch.Tensor) -> tuple:
    if t.is_mkldnn:
        raw = ctypes.string_at(torch.ops.mkldnn.data_ptr(t), torch.ops.mkldnn._nbytes(t))
    else:
        raw = t.contiguous().view(torch.uint8).numpy()
    return (c.dtype, c.shape, c.stride, c.mkldnn, hashlib.sha256(raw).digest())


def _adopt(runner, consts: list[Constant], weights: SharedWeights) -> None:
    """Point the runner's constants at `weights` and free its own copy. The runtime names each constant, but hands
    them out only by fqn, which two packed layouts of one matrix share: the others are read from its blob, whose
    layout (each constant at a 64-byte boundary, in order) is first checked against every constant it hands out."""
    blob = [c for c in consts if not c.folded]
    if {c.name for c in blob} != set(runner.get_constant_names_to_original_fqns()):
        raise LayoutError("the package's generated code and its library name different constants")
    by_fqn = runner.extract_constants_map(False)  # fqn -> the first constant of that fqn
    first: dict[str, str] = {}
    offsets: dict[str, int] = {}
    at = 0
    for c in blob:
        first.setdefault(c.fqn, c.name)
        offsets[c.name] = at
        at += -(-c.nbytes // CONST_ALIGN) * CONST_ALIGN
    bases = {by_fqn[c.fqn].untyped_storage().data_ptr() - offsets[c.name]
             for c in blob if first[c.fqn] == c.name and not c.mkldnn and c.nbytes}
    if len(bases) > 1:
        raise LayoutError("the runtime's constants are not where its layout puts them")
    base = bases.pop() if bases else 0
    table = {}
    for c in blob:
        if c.mkldnn or not c.nbytes:
            if first[c.fqn] != c.name:
                raise LayoutError(f"constant {c.name} is out of reach (packed, and its fqn is shared)")
            t = by_fqn[c.fqn]
        else:
            raw = (ctypes.c_char * c.nbytes).from_address(base + offsets[c.name])
            t = torch.frombuffer(raw, dtype=torch.uint8).view(c.dtype).as_strided(c.shape, c.stride, c.offset)
        table[c.name] = weights.tensor(c, t)
    del by_fqn  # views into the copy freed below
    runner.update_constant_buffer(table, True, True, True)  # into the spare buffer, as borrowed tensors
    runner.swap_constant_buffer()
    runner.free_inactive_constant_buffer()  # the runtime's own copy


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


_LIBC = _libc()


def _drop_embedded(library: str) -> int:
    """Hand back the pages of a loaded step library's embedded weights (read once, when the runtime copied them):
    they are read-only file pages, so dropping them is safe; returns the bytes dropped (0 where it cannot)."""
    if _LIBC is None:
        return 0
    try:
        lib = ctypes.CDLL(library, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)  # the runner's handle, not a second copy
        start = ctypes.addressof(ctypes.c_char.in_dll(lib, "_binary_constants_bin_start"))
        end = ctypes.addressof(ctypes.c_char.in_dll(lib, "_binary_constants_bin_end"))
    except (OSError, ValueError):  # no embedded weights (another packaging)
        return 0
    page = mmap.PAGESIZE
    lo, hi = -(-start // page) * page, end // page * page
    if hi <= lo or _LIBC.madvise(lo, hi - lo, _MADV_DONTNEED) != 0:
        return 0
    return hi - lo


class CompiledStep:
    """A compiled step loaded from its package: called with the flat tensor arguments, returns the flat outputs."""

    def __init__(self, runner, dropped: int):
        self.runner = runner
        self.dropped = dropped  # bytes of the library's embedded weights handed back to the system (_drop_embedded)

    def __call__(self, *args: torch.Tensor) -> list[torch.Tensor]:
        return self.runner.run(list(args))


def _load_step(path: Path, weights: SharedWeights) -> CompiledStep:
    """A step's package loaded with its constants in `weights`. The runtime is driven directly (not through
    torch._inductor's loader, whose import alone costs ~70 MB of a server that only runs steps)."""
    with zipfile.ZipFile(path) as z:
        libraries = [n for n in z.namelist() if n.endswith(".so")]
        sources = [n for n in z.namelist() if n.endswith(".wrapper.cpp")]
        if len(libraries) != 1 or len(sources) != 1:
            raise LayoutError(f"{path}: expected one library and its wrapper source, found {libraries + sources}")
        source = z.read(sources[0]).decode()
        folder = tempfile.mkdtemp(prefix="hone-aot-")
        try:
            library = z.extract(libraries[0], folder)
            runner = torch._C._aoti.AOTIModelContainerRunnerCpu(library, 1)
            try:
                _adopt(runner, constants_of(source), weights)
            except LayoutError:  # checked before anything changed: the step serves from the runtime's own copy
                weights.unshared += 1
            dropped = _drop_embedded(library)
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # a loaded library stays mapped after its file is gone
    return CompiledStep(runner, dropped)


class AotSteps:
    """Compiled canvas and stream steps with the signatures of the Denoiser methods of those names, the head, and a
    fresh stream's encoding. What they do not cover (more than MAX_NEW tokens — but a stream extension runs as
    several steps —, a shorter past, a batch, positions at the model's limit) runs eagerly."""

    def __init__(self, model: Denoiser, canvas, stream, head, encode):
        self.model, self._canvas, self._stream, self._head, self._encode = model, canvas, stream, head, encode
        self.weights: SharedWeights | None = None  # the one copy of the weights the steps read (kept alive here)

    @classmethod
    def load_or_build(cls, model: Denoiser, root: Path | None = None,
                      on_progress: Callable[[str], None] = lambda s: None) -> tuple[AotSteps, bool]:
        """The model's compiled steps from the cache, built there first if missing (in a child process,
        _build_in_child); returns them and whether they were built now."""
        root = root or cache_root()
        key = package_key(model)
        folder = root / key
        built = False
        if not folder.is_dir():
            root.mkdir(parents=True, exist_ok=True)
            with build_lock(root, key):  # another server building this package: wait for it, then load its work
                if not folder.is_dir():
                    partial = root / f".building-{key}"  # one name per package: a later start resumes it
                    partial.mkdir(exist_ok=True)
                    _build_in_child(model, partial, key, on_progress)
                    partial.rename(folder)  # atomic: a half-built package is never loaded
                    built = True
            try:
                _tidy(root, keep=folder)
            except OSError:  # another process tidying at the same time: the next build tidies again
                pass
        else:
            os.utime(folder)  # recently used: kept by _tidy
        weights = SharedWeights(model)
        steps = cls(model, *(_load_step(folder / f"{name}.pt2", weights) for name in STEPS))
        steps.weights = weights
        return steps, built

    def _covers(self, ids: torch.Tensor, positions: torch.Tensor, past: int, max_new: int = MAX_NEW) -> bool:
        n = ids.shape[1]
        return (ids.shape[0] == 1 and 1 <= n <= max_new and past >= MIN_PAST and ids.device.type == "cpu"
                and past + n < self.model.cfg.max_seq_len and int(positions[-1]) < self.model.cfg.max_seq_len)

    def canvas_logits(self, ids, positions, cache: KVCache, last) -> torch.Tensor:
        if not self._covers(ids, positions, cache[0][0].shape[2]):
            return self.model.canvas_logits(ids, positions, cache, last)
        return self._canvas(ids.contiguous(), positions.contiguous(), last.contiguous(), *_flat(cache))[0]

    def extend_stream(self, ids, positions, past: KVCache):
        n_past = past[0][0].shape[2]
        if ids.shape[1] > MAX_NEW and self._covers(ids, positions, n_past, max_new=self.model.cfg.max_seq_len):
            return self._extend_in_chunks(ids, positions, past)
        if not self._covers(ids, positions, n_past):
            return self.model.extend_stream(ids, positions, past)
        out = self._stream(ids.contiguous(), positions.contiguous(), *_flat(past))
        return out[0], _pairs(out[1:])

    def _extend_in_chunks(self, ids, positions, past: KVCache):
        """An extension longer than a compiled step takes (a prefix window slid by PREFIX_SLIDE re-encodes ~190
        tokens after the suffix it shares) as compiled steps of at most MAX_NEW tokens, each seeing the ones before:
        191 tokens after 66 in 37 ms instead of 48 eagerly (and 46 for the whole stream encoded afresh)."""
        n_past, hs, kv = past[0][0].shape[2], [], past
        for start in range(0, ids.shape[1], MAX_NEW):
            h, new = self.extend_stream(ids[:, start : start + MAX_NEW], positions[start : start + MAX_NEW], kv)
            hs.append(h)
            kv = [(torch.cat((k, nk), 2), torch.cat((v, nv), 2)) for (k, v), (nk, nv) in zip(kv, new)]
        return torch.cat(hs, 1), [(k[:, :, n_past:], v[:, :, n_past:]) for k, v in kv]

    def encode(self, ids, positions) -> tuple[torch.Tensor, KVCache]:
        """A causal stream encoded afresh: Denoiser.hidden(ids, positions, causal=True, keep_kv=True)."""
        t = ids.shape[1]
        if (ids.shape[0] != 1 or not MIN_PAST <= t < self.model.cfg.max_seq_len or ids.device.type != "cpu"
                or int(positions[-1]) >= self.model.cfg.max_seq_len):
            return self.model.hidden(ids, positions, causal=True, keep_kv=True)
        out = self._encode(ids.contiguous(), positions.contiguous())
        return out[0], _pairs(out[1:])

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """h (m, D) -> float logits (m, V)."""
        if not 1 <= h.shape[0] <= MAX_NEW or h.device.type != "cpu":
            return self.model.head(h).float()
        return self._head(h.contiguous())[0]


# ---- the build child ------------------------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1  # prctl option (Linux): a signal for this process when its parent ends


def _die_with(parent: int) -> None:
    """End this process with its parent (a build the server no longer waits for would only take cores; stopped,
    it would wait forever); a stopped process is ended too by SIGKILL."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it ended before the line above
        raise SystemExit("the server that started this build has ended")


def main(argv: list[str]) -> None:
    """`python -m model.compiled build FOLDER KEY PARENT_PID`: build package KEY into FOLDER from the model in
    FOLDER/MODEL_FILE (what _build_in_child starts), at BUILD_NICE, ended with its parent."""
    if len(argv) != 4 or argv[0] != "build":
        raise SystemExit("usage: python -m model.compiled build FOLDER KEY PARENT_PID")
    folder, key, parent = Path(argv[1]), argv[2], int(argv[3])
    _die_with(parent)
    with contextlib.suppress(AttributeError, OSError):  # not POSIX: normal priority
        os.setpriority(os.PRIO_PROCESS, 0, BUILD_NICE)
    model = torch.load(folder / MODEL_FILE, weights_only=False)  # our own file, written by the parent just now
    if package_key(model) != key:
        raise SystemExit(f"the model handed over is not the one of package {key}")
    _export(model, folder, lambda message: print(PROGRESS + message, flush=True))


if __name__ == "__main__":
    main(sys.argv[1:])
