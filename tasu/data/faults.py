"""Counting, logging and limiting skipped samples (read-time faults) and filtered samples (length policy).

Every skip is logged on logger "tasu.data" with the sample key (when known) and where it was read, and counted
by reason. `data.on_error=fail` stops at the first fault; otherwise the run stops once faults exceed
`data.max_skip_ratio` of the samples read (checked after `data.skip_check_after` samples), and also when more
than half of the samples are filtered (a stream that can never produce a batch).
"""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger("tasu.data")

_MAX_FILTERED_RATIO = 0.5


class DataError(RuntimeError):
    """The data stream cannot go on; the message says why and which config key governs it."""


class FaultCounter:
    """Counters of one reader (a worker, or an evaluation pass)."""

    def __init__(self, max_skip_ratio: float, check_after: int, on_error: str, label: str = ""):
        self.max_skip_ratio, self.check_after, self.on_error, self.label = max_skip_ratio, check_after, on_error, label
        self.read = 0
        self.skipped: Counter = Counter()
        self.filtered: Counter = Counter()

    def ok(self) -> None:
        self.read += 1

    def skip(self, reason: str, key: str | None, detail: str, where: str, count: int = 1,
             already_read: bool = False) -> None:
        """`count` samples lost for `reason` (a damaged tar range can lose several at once). `already_read`: the
        sample was counted by `ok()` before (it failed in a later stage, e.g. audio decoding after batching)."""
        if not already_read:
            self.read += count
        self.skipped[reason] += count
        who = f"sample {key!r}" if key is not None else f"{count} sample(s)"
        log.warning("tasu.data%s: skipped %s (%s) at %s: %s", f" [{self.label}]" if self.label else "", who, reason,
                    where, detail)
        if self.on_error == "fail":
            raise DataError(f"bad sample {key!r} at {where}: {reason}: {detail} (data.on_error=fail; set "
                            "data.on_error=skip to skip and count such samples)")
        self.check()

    def filter(self, reason: str, key: str | None, detail: str, where: str) -> None:
        self.read += 1
        self.filtered[reason] += 1
        log.debug("tasu.data: filtered sample %r (%s) at %s: %s", key, reason, where, detail)
        self.check()

    def check(self) -> None:
        if self.read < self.check_after:
            return
        bad = sum(self.skipped.values())
        if bad > self.max_skip_ratio * self.read:
            raise DataError(f"too many bad samples{f' [{self.label}]' if self.label else ''}: skipped {bad} of "
                            f"{self.read} read ({bad / self.read:.2%} > data.max_skip_ratio="
                            f"{self.max_skip_ratio:.2%}); by reason: {dict(self.skipped)}. Fix the data (see the "
                            "'skipped' warnings for keys) or raise data.max_skip_ratio")
        filtered = sum(self.filtered.values())
        if filtered > _MAX_FILTERED_RATIO * self.read:
            raise DataError(f"{filtered} of {self.read} samples were filtered by length ({dict(self.filtered)}): "
                            "check data.max_sample_frames / data.min_sample_frames / data.max_sample_tokens")

    def snapshot(self) -> dict:
        return {"read": self.read, "skipped": dict(self.skipped), "filtered": dict(self.filtered)}


def stats_sub(a: dict, b: dict) -> dict:
    """a - b for snapshots."""
    return {"read": a["read"] - b["read"],
            "skipped": {k: v - b["skipped"].get(k, 0) for k, v in a["skipped"].items() if v - b["skipped"].get(k, 0)},
            "filtered": {k: v - b["filtered"].get(k, 0) for k, v in a["filtered"].items()
                         if v - b["filtered"].get(k, 0)}}


def stats_add(a: dict, b: dict) -> dict:
    """a + b for snapshots."""
    return {"read": a["read"] + b["read"], "skipped": dict(Counter(a["skipped"]) + Counter(b["skipped"])),
            "filtered": dict(Counter(a["filtered"]) + Counter(b["filtered"]))}


def empty_stats() -> dict:
    return {"read": 0, "skipped": {}, "filtered": {}}
