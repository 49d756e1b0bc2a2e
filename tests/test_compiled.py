"""Ahead-of-time compiled steps (model.compiled) on a tiny spm network: equal to the eager steps on the views the
context stream hands them, eager beyond their ranges, built once per model."""

import os
import threading

import torch

from model.checkpoint import load_model
from model.compiled import MAX_NEW, AotSteps, cache_root, package_key


def test_compiled_steps_equal_eager_and_are_built_once(spm_dir):
    model, _ = load_model(spm_dir)
    steps, _ = AotSteps.load_or_build(model)
    again, built = AotSteps.load_or_build(model)
    assert not built and (cache_root() / package_key(model)).is_dir()  # the second load comes from the cache
    ids = torch.randint(5, model.cfg.vocab_size, (1, 90))
    with torch.no_grad():
        h, kv = model.hidden(ids, causal=True, keep_kv=True)
        for past, n in ((3, 1), (40, 7), (61, 16), (20, MAX_NEW + 1)):  # the last runs eagerly (beyond the range)
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


def test_another_model_gets_its_own_package(spm_dir):
    model, _ = load_model(spm_dir)
    key = package_key(model)
    with torch.no_grad():
        model.head.weight[0, 0] += 1.0  # one weight changed: compiled code with the old weights frozen in is stale
    assert package_key(model) != key


def test_building_leaves_the_model_serving_meanwhile(spm_dir, tmp_path):
    """A build (here into a folder of its own, so it really builds) traces a copy of the model: the engine's
    requests keep running on the model itself, and get the same answers as before."""
    model, _ = load_model(spm_dir)
    ids = torch.randint(5, model.cfg.vocab_size, (1, 40))
    with torch.no_grad():
        want = model(ids)
    result: dict = {}
    builder = threading.Thread(target=lambda: result.update(built=AotSteps.load_or_build(model, tmp_path)[1]))
    builder.start()
    calls = 0
    with torch.no_grad():
        while builder.is_alive():
            torch.testing.assert_close(model(ids), want)
            calls += 1
    builder.join()
    assert result.get("built") is True and calls > 0


def test_the_cache_keeps_the_latest_packages(tmp_path):
    from model.compiled import KEEP_PACKAGES, _tidy

    dirs = []
    for i in range(KEEP_PACKAGES + 2):
        d = tmp_path / f"pkg{i}"
        d.mkdir()
        os.utime(d, (1000 + i, 1000 + i))  # pkg0 least recently used
        dirs.append(d)
    stale, fresh = tmp_path / ".building-old", tmp_path / ".building-now"
    stale.mkdir()
    fresh.mkdir()
    os.utime(stale, (1000, 1000))
    _tidy(tmp_path, keep=dirs[0])  # the package just built stays whatever its time
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([".building-now", "pkg0"] + [d.name for d in dirs[-(KEEP_PACKAGES - 1):]])
