"""Shared helpers for the sampler and backend tests: a recording backend, a standard request and the members of a
protocol."""

from __future__ import annotations

from model import layout
from model.backends import HoneBackend

PREFIX = "def add(a, b):\n    '''Return the sum.'''\n    return "
SUFFIX = "\n\n\nprint(add(1, 2))\n"


class Recorder:
    """Wraps the real backend and records every session layout and canvas the sampler sends (a canvas backend
    only: rule ar is not recorded)."""

    streams = False

    def __init__(self, inner: HoneBackend, on_predict=None):
        self.inner, self.on_predict = inner, on_predict
        self.sessions: list[tuple[list[int], list[int]]] = []
        self.canvases: list[list[int]] = []
        for name in ("mask_id", "bos_id", "eos_id", "null_ids", "newline_ids", "max_holes", "encode", "decode"):
            setattr(self, name, getattr(inner, name))

    def session(self, seg, cached):
        """Records the segments in the infill layout's order ([BOS] piece0 [hole0] … [EOS?]), whatever the model's."""
        self.sessions.append(layout.sequence("infill", seg, self.inner.specials))
        real = self.inner.session(seg, cached)
        rec = self

        class S:
            encoded = real.encoded
            def predict(self, canvas):
                rec.canvases.append(canvas.tolist())
                if rec.on_predict:
                    rec.on_predict(len(rec.canvases))
                return real.predict(canvas)

        return S()


def run(engine, pieces, opts, on_predict=None, cancel=None):
    from model.sampler import sample

    rec = Recorder(engine.backend, on_predict)
    return sample(rec, pieces, opts, cancel), rec


def protocol_members(proto: type) -> set[str]:
    """The attributes and methods a protocol (and the protocols it extends) declares."""
    names: set[str] = set()
    for cls in proto.__mro__:
        if not getattr(cls, "_is_protocol", False) or cls.__module__ == "typing":
            continue
        names |= set(cls.__dict__.get("__annotations__", {}))
        names |= {n for n, v in cls.__dict__.items() if callable(v) and not n.startswith("_")}
    return names
