"""model.types: the engine's option and result types."""

from __future__ import annotations

from model.types import Stats


def test_stats_add_covers_every_field():
    """Every field of Stats is summed (a flag is or-ed): a field added later cannot be dropped by the sum."""
    a = Stats(**{f: (False if isinstance(getattr(Stats(), f), bool) else 1) for f in Stats.__struct_fields__})
    b = Stats(**{f: (True if isinstance(getattr(Stats(), f), bool) else 2) for f in Stats.__struct_fields__})
    a.add(b)
    for f in Stats.__struct_fields__:
        want = True if isinstance(getattr(Stats(), f), bool) else 3
        assert getattr(a, f) == want, f
