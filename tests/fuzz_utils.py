"""Shared machinery of the fuzz suites (tests/test_fuzz_*.py).

Every fuzz target is one hypothesis body turned into two tests by `fuzz_tests`: a short one in the default suite
and a long one marked `slow` (`pytest -m slow`). The example counts are the `FUZZ_SMALL` / `FUZZ_BIG` numbers
each module passes; RELIABILITY.md records what a real slow run executed. Hypothesis's own example database is
off (`database=None`): runs are reproducible from the printed seed, and nothing is written into the repo.

`tally(target, **counts)` accumulates what the bodies saw (inputs, bad items reported, items read); with
TASU_FUZZ_TALLY=<file> set, each module appends its totals there as JSON lines at teardown, which is where the
counts in RELIABILITY.md come from.
"""

from __future__ import annotations

import functools
import json
import os
from collections import Counter, defaultdict

import pytest
from hypothesis import HealthCheck, given, settings

TALLY: dict[str, Counter] = defaultdict(Counter)


def tally(target: str, **counts: int) -> None:
    TALLY[target].update(counts)


def write_tally(module: str) -> None:
    """Append this module's totals to $TASU_FUZZ_TALLY (no-op when unset) and reset them."""
    path = os.environ.get("TASU_FUZZ_TALLY")
    if path and TALLY:
        with open(path, "a", encoding="utf-8") as f:
            for target, c in sorted(TALLY.items()):
                f.write(json.dumps({"module": module, "target": target, **c}) + "\n")
    TALLY.clear()


def fuzz_tests(small: int, big: int, **strategies):
    """Decorator: one body -> (default-suite test with `small` examples, slow-tier test with `big` examples).

        test_x, test_x_slow = fuzz_tests(60, 3000, data=st.binary())(_body)
    """
    def deco(body):
        def make(n: int):
            @settings(max_examples=n, deadline=None, database=None, derandomize=False,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                             HealthCheck.filter_too_much])
            @given(**strategies)
            @functools.wraps(body)
            def test(**kw):
                return body(**kw)
            return test
        slow = make(big)
        slow.pytestmark = [*getattr(slow, "pytestmark", []), pytest.mark.slow.mark]  # also works on lambdas
        return make(small), slow
    return deco


def nonblank_lines(raw: list[bytes]) -> list[int]:
    """Line numbers (1-based) of a manifest that must yield exactly one item: non-blank after decoding (UTF-8, a
    BOM allowed on line 1), or undecodable."""
    out = []
    for n, r in enumerate(raw, 1):
        try:
            if r.decode("utf-8-sig" if n == 1 else "utf-8").strip():
                out.append(n)
        except UnicodeDecodeError:
            out.append(n)
    return out
