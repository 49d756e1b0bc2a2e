"""Ahead-of-time compiled steps (model.compiled) on a tiny spm network: equal to the eager steps on the views the
context stream hands them, eager beyond their ranges, built once per model."""

import json
import os
import subprocess
import sys
import threading

import pytest
import torch

from conftest import copy_built_steps
from model.checkpoint import load_model
from model.compiled import MAX_NEW, AotSteps, cache_root, constants_of, package_key


def test_compiled_steps_equal_eager_and_are_built_once(spm_dir):
    model, _ = load_model(spm_dir)
    steps, _ = AotSteps.load_or_build(model)
    again, built = AotSteps.load_or_build(model)
    assert not built and (cache_root() / package_key(model)).is_dir()  # the second load comes from the cache
    ids = torch.randint(5, model.cfg.vocab_size, (1, 90))
    with torch.no_grad():
        h, kv = model.hidden(ids, causal=True, keep_kv=True)
        for past, n in ((3, 1), (40, 7), (61, 16), (20, MAX_NEW + 1)):  # the last: a canvas beyond the range runs
            # eagerly, a stream extension as two compiled steps
            views = [(k[:, :, :past], v[:, :, :past]) for k, v in kv]  # strided views into longer buffers
            new, pos = torch.randint(5, model.cfg.vocab_size, (1, n)), torch.arange(past, past + n)
            last = h[0, past - 1 : past]
            torch.testing.assert_close(again.canvas_logits(new, pos, views, last),
                                       model.canvas_logits(new, pos, views, last), rtol=1e-4, atol=1e-4)
            got_h, got_kv = again.extend_stream(new, pos, views)
            want_h, want_kv = model.extend_stream(new, pos, views)
            torch.testing.assert_close(got_h, want_h, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(got_kv, want_kv, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(again.head(h[0, :n]), model.head(h[0, :n]).float(), rtol=1e-4, atol=1e-4)
        for t in (1, 2, 37, 90):  # a stream encoded afresh (one token runs eagerly: below the range)
            pos = torch.arange(t)
            torch.testing.assert_close(again.encode(ids[:, :t], pos),
                                       model.hidden(ids[:, :t], pos, causal=True, keep_kv=True), rtol=1e-4, atol=1e-4)


def test_a_long_extension_runs_as_compiled_steps(spm_dir):
    """A stream extended by more than a compiled step takes (a slid prefix window re-encodes ~190 tokens) runs as
    several compiled steps, each seeing the ones before, never the eager model, with the eager model's answer."""
    model, _ = load_model(spm_dir)
    steps, _ = AotSteps.load_or_build(model)
    ids = torch.randint(5, model.cfg.vocab_size, (1, 40 + 2 * MAX_NEW + 9))
    with torch.no_grad():
        _, past = model.hidden(ids[:, :40], causal=True, keep_kv=True)
        new, pos = ids[:, 40:], torch.arange(40, ids.shape[1])
        want_h, want_kv = model.extend_stream(new, pos, past)
        eager = []
        model.extend_stream = lambda *args: eager.append(args) or pytest.fail("the eager extension ran")
        got_h, got_kv = steps.extend_stream(new, pos, past)
    assert not eager and got_h.shape == want_h.shape and got_kv[0][0].shape == want_kv[0][0].shape
    torch.testing.assert_close(got_h, want_h, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_kv, want_kv, rtol=1e-4, atol=1e-4)


def test_loaded_steps_keep_one_copy_of_the_weights(spm_dir):
    """The steps read the model's own tensors where a constant is one of its weights, the canvas and stream steps
    one shared tensor for each matrix both pack the same way, and the runtime's own copy is gone; the steps still
    give the eager model's logits."""
    model, _ = load_model(spm_dir)
    steps, _ = AotSteps.load_or_build(model)
    canvas = steps._canvas.runner.extract_constants_map(False)
    stream = steps._stream.runner.extract_constants_map(False)
    assert canvas["m.head.weight"].data_ptr() == model.head.weight.data_ptr()
    assert canvas["m.blocks.0.norm1.weight"].data_ptr() == model.blocks[0].norm1.weight.data_ptr()
    packed = [fqn for fqn, t in canvas.items() if not fqn.startswith("m.") and not t.is_mkldnn]
    assert packed and any(stream.get(fqn) is not None and stream[fqn].data_ptr() == canvas[fqn].data_ptr()
                          for fqn in packed)
    assert steps.weights.from_model > 0 and steps.weights.deduplicated > 0
    encode = steps._encode.runner.extract_constants_map(False)  # its matmuls read the weights unpacked: no copy
    own = {t.data_ptr() for t in [*model.parameters(), *model.buffers()]}
    assert encode and all(t.data_ptr() in own for t in encode.values())
    if sys.platform.startswith("linux"):  # the library's embedded copy, read once at load, is handed back
        assert min(step.dropped for step in (steps._canvas, steps._stream, steps._head, steps._encode)) > 0
    ids = torch.randint(5, model.cfg.vocab_size, (1, 30))
    with torch.no_grad():
        h, kv = model.hidden(ids, causal=True, keep_kv=True)
        new, pos = torch.randint(5, model.cfg.vocab_size, (1, 5)), torch.arange(30, 35)
        torch.testing.assert_close(steps.canvas_logits(new, pos, kv, h[0, -1:]),
                                   model.canvas_logits(new, pos, kv, h[0, -1:]), rtol=1e-4, atol=1e-4)


def test_a_step_whose_constants_cannot_be_placed_keeps_its_own_copy(spm_dir, monkeypatch):
    """A package whose generated code does not name the constants its library holds (another torch's layout): the
    step serves from the runtime's own copy of the weights, as before, and gives the eager answers."""
    from model import compiled

    model, _ = load_model(spm_dir)
    AotSteps.load_or_build(model)
    monkeypatch.setattr(compiled, "constants_of", lambda source: [])  # the constants table went missing
    steps, built = AotSteps.load_or_build(model)
    assert not built and steps.weights.unshared == len(compiled.STEPS) and steps.weights.from_model == 0
    canvas = steps._canvas.runner.extract_constants_map(False)
    assert canvas["m.head.weight"].data_ptr() != model.head.weight.data_ptr()
    h = model.embed(torch.randint(5, model.cfg.vocab_size, (1, 7)))[0]
    with torch.no_grad():
        torch.testing.assert_close(steps.head(h), model.head(h).float(), rtol=1e-4, atol=1e-4)


def test_a_wrapper_declares_its_constants():
    """The constants table of a generated wrapper, as AOTInductor writes it, read field by field."""
    source = """
    constants_info_[0].name = "m_head_weight";
    constants_info_[0].dtype = cached_torch_dtype_float32;
    constants_info_[0].offset = 0;
    constants_info_[0].data_size = 131072;
    constants_info_[0].from_folded = false;
    constants_info_[0].shape = {512, 64};
    constants_info_[0].stride = {64, 1};
    constants_info_[0].layout = static_cast<int32_t>(cached_torch_layout_strided);
    constants_info_[0].original_fqn = "m.head.weight";
    constants_info_[1].name = "_frozen_param3";
    constants_info_[1].dtype = cached_torch_dtype_bfloat16;
    constants_info_[1].offset = 2;
    constants_info_[1].data_size = 1000;
    constants_info_[1].from_folded = true;
    constants_info_[1].shape = {8, 64};
    constants_info_[1].stride = {1, 0};
    constants_info_[1].layout = static_cast<int32_t>(cached_torch_layout__mkldnn);
    constants_info_[1].opaque_metadata = {1L, 0L, 32L};
    constants_info_[1].original_fqn = "_frozen_param3";
"""
    head, packed = constants_of(source)
    assert (head.name, head.fqn, head.dtype, head.nbytes, head.shape, head.stride, head.offset, head.folded,
            head.mkldnn) == ("m_head_weight", "m.head.weight", torch.float32, 131072, (512, 64), (64, 1), 0, False, "")
    assert (packed.dtype, packed.offset, packed.folded, packed.mkldnn) == (torch.bfloat16, 2, True, "{1L, 0L, 32L}")


def test_another_model_gets_its_own_package(spm_dir):
    model, _ = load_model(spm_dir)
    key = package_key(model)
    with torch.no_grad():
        model.head.weight[0, 0] += 1.0  # one weight changed: compiled code with the old weights frozen in is stale
    assert package_key(model) != key


def test_building_leaves_the_model_serving_meanwhile(spm_dir, tmp_path):
    """A build (here into a folder of its own, so it really builds) runs beside requests: they keep running on the
    model and get the same answers as before, the build is stopped during each and still finishes."""
    from model.compiled import GATE

    model, _ = load_model(spm_dir)
    ids = torch.randint(5, model.cfg.vocab_size, (1, 40))
    with torch.no_grad():
        want = model(ids)
    copy_built_steps(model, tmp_path / f".building-{package_key(model)}", leave=("head",))  # one step left
    pauses = GATE.pauses
    result: dict = {}
    builder = threading.Thread(target=lambda: result.update(built=AotSteps.load_or_build(model, tmp_path)[1]))
    builder.start()
    calls = 0
    with torch.no_grad():
        while builder.is_alive():
            with GATE.serving():
                torch.testing.assert_close(model(ids), want)
            calls += 1
            builder.join(0.05)  # the build runs at the lowest priority: between requests it needs the cores
    assert result.get("built") is True and calls > 0 and GATE.pauses > pauses


def test_the_cache_keeps_the_latest_packages(tmp_path):
    from model.compiled import KEEP_PACKAGES, _tidy

    dirs = []
    for i in range(KEEP_PACKAGES + 2):
        d = tmp_path / f"pkg{i}"
        d.mkdir()
        os.utime(d, (1000 + i, 1000 + i))  # pkg0 least recently used
        dirs.append(d)
    stale, fresh, old_format = tmp_path / f".building-{'a' * 24}", tmp_path / f".building-{'b' * 24}", tmp_path / ".building-x1"
    for d in (stale, fresh, old_format):
        d.mkdir()
    os.utime(stale, (1000, 1000))
    _tidy(tmp_path, keep=dirs[0])  # the package just built stays whatever its time
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([fresh.name, "pkg0"] + [d.name for d in dirs[-(KEEP_PACKAGES - 1):]])


def test_an_interrupted_build_resumes_where_it_stopped(spm_dir, tmp_path):
    """A server stopped while its build compiles a step: the next start keeps the steps finished before (here the
    canvas and stream steps, as an earlier start left them, and the head step this start compiled) and builds only
    the rest, and no half-built folder is left behind."""
    model, _ = load_model(spm_dir)
    key = package_key(model)
    copy_built_steps(model, tmp_path / f".building-{key}", leave=("head", "encode"))

    def stop_at_encode(msg):
        if msg.startswith("exporting the encode"):
            raise KeyboardInterrupt  # the process going away mid-build

    said: list[str] = []
    try:
        AotSteps.load_or_build(model, tmp_path, on_progress=lambda msg: (said.append(msg), stop_at_encode(msg)))
    except KeyboardInterrupt:
        pass
    assert "compiling the head step (AOTInductor)" in said  # this start built one step before it was stopped
    assert sorted(p.name for p in (tmp_path / f".building-{key}").iterdir()) == ["canvas.pt2", "head.pt2", "stream.pt2"]
    said.clear()
    steps, built = AotSteps.load_or_build(model, tmp_path, on_progress=said.append)
    assert built and "the head step was built before" in said and "compiling the head step (AOTInductor)" not in said
    assert "compiling the encode step (AOTInductor)" in said
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [key]  # nothing half-built is left
    ids = torch.randint(5, model.cfg.vocab_size, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(steps.head(model.embed(ids)[0]), model.head(model.embed(ids)[0]).float(),
                                   rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(steps.encode(ids, torch.arange(9)), model.hidden(ids, torch.arange(9), causal=True,
                                                                                     keep_kv=True), rtol=1e-4, atol=1e-4)


def test_a_package_is_never_built_twice_at_once(spm_dir, tmp_path):
    """Another server holds the package's build lock: this one waits for it and loads what the other built."""
    from model.compiled import build_lock

    model, _ = load_model(spm_dir)
    key = package_key(model)
    copy_built_steps(model, tmp_path / "other" / key)  # what the other server will have built
    said: list[str] = []
    result: dict = {}
    with build_lock(tmp_path, key):
        waiter = threading.Thread(target=lambda: result.update(
            built=AotSteps.load_or_build(model, tmp_path, on_progress=said.append)[1]))
        waiter.start()
        (tmp_path / "other" / key).rename(tmp_path / key)  # the other server finishes while holding the lock
    waiter.join()
    assert result["built"] is False and said == []  # it built nothing: it waited and loaded the other's package


def test_the_build_runs_in_a_child_and_the_server_only_loads_it(spm_dir, tmp_path):
    """A first build for a model leaves the process that asked for it as lean as a later load: torch.export and
    Inductor are imported (and their leftovers kept) by the build child only; this process loads the packages, which
    give the eager model's answers. Run in a fresh interpreter: other tests here import torch._inductor. (The other
    steps were built before: the child builds the head's.)"""
    model, _ = load_model(spm_dir)
    copy_built_steps(model, tmp_path / f".building-{package_key(model)}", leave=("head",))
    script = f"""
import json, sys, torch
from pathlib import Path
from model.checkpoint import load_model
from model.compiled import AotSteps
model, _ = load_model({str(spm_dir)!r})
said = []
steps, built = AotSteps.load_or_build(model, Path({str(tmp_path)!r}), on_progress=said.append)
h = model.embed(torch.randint(5, model.cfg.vocab_size, (1, 7)))[0]
with torch.no_grad():
    same = torch.allclose(steps.head(h), model.head(h).float(), rtol=1e-4, atol=1e-4)
print(json.dumps([built, same, sorted(m for m in sys.modules if m.startswith(("torch._inductor", "torch._dynamo"))),
                  said]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    built, same, imported, said = json.loads(out.stdout.strip().splitlines()[-1])
    assert built and same
    assert imported == []  # the build's machinery (Inductor; Dynamo, which export runs) never came into this process
    assert "compiling the head step (AOTInductor)" in said and "the canvas step was built before" in said  # the
    # child's progress, passed on
    package = tmp_path / package_key(model)
    assert sorted(p.name for p in package.iterdir()) == ["canvas.pt2", "encode.pt2", "head.pt2", "stream.pt2"]


def test_a_failed_or_killed_build_says_why(spm_dir, tmp_path, monkeypatch):
    """The build child fails (no C++ compiler, say) or is killed: loading raises with the reason, which the engine
    shows in its status while the eager steps keep serving; nothing half-built is taken for a package."""
    from model import compiled
    from model.engine import Engine

    model, _ = load_model(spm_dir)
    monkeypatch.setattr(compiled, "build_command",
                        lambda folder, key: [sys.executable, "-c", "import sys; sys.exit('no C++ compiler here')"])
    with pytest.raises(compiled.BuildFailed, match="failed \\(exit code 1\\): no C\\+\\+ compiler here"):
        AotSteps.load_or_build(model, tmp_path)
    monkeypatch.setattr(compiled, "build_command", lambda folder, key: ["sh", "-c", "kill -9 $$"])
    with pytest.raises(compiled.BuildFailed, match="was killed \\(SIGKILL\\)"):
        AotSteps.load_or_build(model, tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [f".building-{package_key(model)}"]
    assert not any((tmp_path / f".building-{package_key(model)}").iterdir())  # nor the model handed over
    monkeypatch.setattr(compiled, "cache_root", lambda: tmp_path)
    engine = Engine.load(spm_dir, "cpu", threads=1)
    assert engine.compile() == "eager (compiling failed: BuildFailed: the build process was killed (SIGKILL))"


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]  # R running, S sleeping, T stopped


def _until(pred) -> bool:
    for _ in range(2000):  # polled, at most ~20 s
        if pred():
            return True
        threading.Event().wait(0.01)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process states from /proc")
def test_a_build_is_stopped_while_a_request_runs():
    """A stand-in build (a child that starts a compiler of its own, in one process group) is stopped, compiler
    included, while a request is served, and continues once none is."""
    from model.compiled import BuildGate

    spin = "import subprocess, sys; c = subprocess.Popen([sys.executable, '-c', 'while True: pass']); " \
           "print(c.pid, flush=True); c.wait()"
    build = subprocess.Popen([sys.executable, "-c", spin], stdout=subprocess.PIPE, text=True, process_group=0)
    try:
        compiler = int(build.stdout.readline())
        gate = BuildGate()
        with gate.building(build.pid):
            assert _until(lambda: _state(compiler) == "R")
            with gate.serving():
                with gate.serving():  # a second request at once
                    assert _until(lambda: _state(compiler) == "T" and _state(build.pid) == "T")
                assert _state(compiler) == "T"  # one request still runs
            assert _until(lambda: _state(compiler) == "R")
            assert gate.pauses == 1
            with gate.serving():
                assert _until(lambda: _state(compiler) == "T")
        assert _until(lambda: _state(compiler) == "R")  # a gate it has left does not keep it stopped
    finally:
        os.killpg(build.pid, 9)
        build.wait()
