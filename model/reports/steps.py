"""`hone bench steps`: the spm model's two hot steps (a canvas step, a stream extension) under each way of running
them, side by side on the same inputs: eager PyTorch, torch.compile (inductor, weights frozen), torch.export +
AOTInductor (model.compiled, what the engine uses) and ONNX Runtime (when onnxruntime, onnx and onnxscript are
installed). ms per step for 1, 9 and 16 new tokens after a 300-token stream, the largest difference from eager,
the build time, and the two limits of a step on this machine: its arithmetic at the measured matmul rate and its
weight reads at the measured memory bandwidth. Human-readable lines, then one JSON line."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..compiled import AotSteps, CanvasStep, StreamStep, example_inputs, export_specs
from ..engine import Engine
from ..network import Denoiser
from .bench import matmul_gflops, memory_gbs

CONTEXT = 300  # stream tokens before the step: a typical completion's context
SIZES = (1, 9, 16)  # new tokens: one AR token, a verified draft, a single-line canvas


def _ms(fn: Callable, reps: int) -> float:
    for _ in range(3):
        fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) * 1000 / reps


def _first(out) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def step_limits(model: Denoiser, n: int, gflops: float, gbs: float) -> tuple[float, float]:
    """ms of one step of n tokens at the compute limit and at the weight-read limit (every matrix read once)."""
    flops = 2 * n * sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "embed" not in name)
    flops += 2 * n * model.cfg.vocab_size * model.cfg.d_model  # the head (tied to the embedding)
    weights = sum(p.numel() * p.element_size() for p in model.parameters() if p.dim() == 2)
    return flops / gflops / 1e6, weights / gbs / 1e6


def _torch_compile(model: Denoiser):
    def build(module):
        fn = torch.compile(module, dynamic=True)

        def call(*args):
            with torch._inductor.config.patch(freezing=True):  # a recompile for a new shape freezes as well
                return fn(*args)
        return call
    return build(CanvasStep(model)), build(StreamStep(model))


def _onnx(model: Denoiser, folder: Path):
    import onnxruntime as ort  # optional: reported as missing when absent

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = torch.get_num_threads(), 1
    calls = []
    for name, module, args, dims, _ in export_specs(model)[:2]:  # the canvas and stream steps
        path = folder / f"{name}.onnx"
        torch.onnx.export(module, args, dynamic_shapes=dims, dynamo=True, verbose=False).save(str(path))
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inputs = [i.name for i in sess.get_inputs()]

        def call(*a, sess=sess, inputs=inputs):
            given = dict(zip(["ids", "positions", "last"][: len(a) - 2 * model.cfg.n_layers]
                             + [f"kv_{i}" for i in range(2 * model.cfg.n_layers)], a))
            return [torch.from_numpy(o) for o in sess.run(None, {k: given[k].numpy() for k in inputs})]
        calls.append(call)
    return tuple(calls)


WAYS = ("eager", "torch.compile", "aotinductor", "onnxruntime")


def run(model_dir: str | None, threads: int | None = None, reps: int = 30, ways: tuple[str, ...] = WAYS) -> dict:
    engine = Engine.load(model_dir, "cpu", threads=threads)
    net = engine.backend.network
    if net is None or not engine.backend.streams:
        raise SystemExit("bench steps needs a Hone spm model (its canvas and stream steps)")
    model = net.model
    gflops, gbs = matmul_gflops(), memory_gbs()
    figures: dict = {"model": engine.name, "threads": torch.get_num_threads(), "context": CONTEXT,
                     "matmul_gflops": round(gflops, 1), "memory_gbs": round(gbs, 1), "limits": {}, "ways": {}}
    print(f"model {engine.name}, {torch.get_num_threads()} threads; this machine: {gflops:.0f} GFLOP/s float32 matmul, "
          f"{gbs:.1f} GB/s memory")
    for n in SIZES:
        flop_ms, read_ms = step_limits(model, n, gflops, gbs)
        figures["limits"][n] = {"flop_ms": round(flop_ms, 3), "weight_read_ms": round(read_ms, 3)}
    inputs = {n: example_inputs(model, CONTEXT, n) for n in SIZES}
    with torch.no_grad():
        eager = {n: (CanvasStep(model)(*inputs[n][0]), _first(StreamStep(model)(*inputs[n][1]))) for n in SIZES}

        def aot():  # from the engine's cache when it has the package (the build time is then a load time)
            steps, _ = AotSteps.load_or_build(model)
            return steps._canvas, steps._stream

        builders: dict[str, Callable] = {"eager": lambda: (CanvasStep(model), StreamStep(model)),
                                         "torch.compile": lambda: _torch_compile(model),
                                         "aotinductor": aot,
                                         "onnxruntime": lambda: _onnx(model, Path(tempfile.mkdtemp(prefix="hone-onnx-")))}
        for name in ways:
            build = builders[name]
            t = time.perf_counter()
            try:
                canvas, stream = build()
                for n in SIZES:  # first calls: torch.compile compiles here
                    canvas(*inputs[n][0]), stream(*inputs[n][1])
            except ImportError as e:
                figures["ways"][name] = {"error": f"not installed ({e.name})"}
                print(f"{name:14s} not installed ({e.name})")
                continue
            except Exception as e:  # noqa: BLE001 - one way failing must not hide the others
                figures["ways"][name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"}
                print(f"{name:14s} failed: {figures['ways'][name]['error']}")
                continue
            row: dict = {"build_s": round(time.perf_counter() - t, 1)}
            for n in SIZES:
                c_args, s_args = inputs[n]
                err = max((_first(canvas(*c_args)) - eager[n][0]).abs().max().item(),
                          (_first(stream(*s_args)) - eager[n][1]).abs().max().item())
                row[n] = {"canvas_ms": round(_ms(lambda: canvas(*c_args), reps), 2),
                          "stream_ms": round(_ms(lambda: stream(*s_args), reps), 2), "max_abs_diff": float(f"{err:.2g}")}
            figures["ways"][name] = row
            cells = "  ".join(f"n={n}: canvas {row[n]['canvas_ms']:6.2f} stream {row[n]['stream_ms']:6.2f}" for n in SIZES)
            diff = max(row[n]["max_abs_diff"] for n in SIZES)
            print(f"{name:14s} {cells} ms  (build or load {row['build_s']:.0f} s, max |diff| {diff:.1g})")
    lim = "  ".join(f"n={n}: {v['flop_ms']:.2f} flop / {v['weight_read_ms']:.2f} read" for n, v in figures["limits"].items())
    print(f"{'limits':14s} {lim} ms")
    print(json.dumps(figures))
    return figures
