"""Fault injection for tests (never active unless TASU_INJECT is set).

    TASU_INJECT="nan_loss@3,5"      the loss of steps 3 and 5 (1-based, per stage) becomes NaN on every rank
    TASU_INJECT="kill_in_save@6"    SIGKILL (as `kill -9`) while saving the checkpoint of step 6, after DeepSpeed
                                    wrote its files into the tmp-* folder and before the rank state
    TASU_INJECT="kill_before_rename@6"   ... after COMPLETE is written into tmp-*, before the rename publishes it
    TASU_INJECT="kill_before_prune@6"    ... after the rename, before older checkpoints are pruned
Several points: "nan_loss@3;kill_in_save@6". The kill points take down every rank that has the variable set
(the whole job in a single process run); RELIABILITY.md lists the tests that use them.
"""

from __future__ import annotations

import os
import signal


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


def kill_point(name: str, step: int) -> None:
    """Die here, as `kill -9` would (no cleanup, no flush), when fault `name` is injected at `step`."""
    if active(name, step):
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))  # SIGTERM where no SIGKILL (Windows)
