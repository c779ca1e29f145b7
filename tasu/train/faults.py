"""Fault injection for tests (never active unless TASU_INJECT is set).

    TASU_INJECT="nan_loss@3,5"      the loss of steps 3 and 5 (1-based, per stage) becomes NaN on every rank
"""

from __future__ import annotations

import os


def _points() -> dict[str, set[int]]:
    spec = os.environ.get("TASU_INJECT", "")
    out: dict[str, set[int]] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, _, steps = part.partition("@")
        out[name] = {int(s) for s in steps.split(",") if s.strip()}
    return out


def active(name: str, step: int) -> bool:
    """True when fault `name` is injected at `step`."""
    return step in _points().get(name, set())
