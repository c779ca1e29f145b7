"""Dynamic batching with length buckets, and weighted mixing of sample streams.

A batch holds samples of one input kind ("text" or "audio") and one length bucket. Its cost is
`count x longest length` (what padding makes the model process): a batch is emitted when the next sample of
its bucket would push the cost past the budget (frames for audio, LLM tokens for text), or, without a budget,
when it holds `batch_size` samples. Bucket upper bounds are explicit or geometric up to the longest allowed
sample (ratio r = 64 ** (1 / (n - 1)) between bounds, so padding within a bucket stays below 1 - 1/r).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

import numpy as np

from tasu.data.config import DataConfig


def geometric_boundaries(max_len: int, num_buckets: int, span: float = 64.0) -> list[int]:
    """Upper bounds from max_len / span to max_len (the last bound is max_len)."""
    if num_buckets <= 1:
        return [max_len]
    r = span ** (1.0 / (num_buckets - 1))
    bounds = sorted({max(1, int(round(max_len / r ** i))) for i in range(num_buckets)})
    bounds[-1] = max_len
    return bounds


class BucketBatcher:
    """Streaming bucketed batcher over samples with an integer `length` and an `__input__` kind.

    `budgets[kind]` > 0: token / frame budget; 0: fixed `batch_size`. Buckets never flush on their own: the
    input streams are infinite, and an eval pass uses `fixed_batches` instead.
    """

    def __init__(self, boundaries: dict[str, list[int]], budgets: dict[str, int], batch_size: int):
        self.boundaries, self.budgets, self.batch_size = boundaries, budgets, batch_size

    def __call__(self, samples: Iterator[dict]) -> Iterator[list[dict]]:
        buckets: dict[tuple[str, int], list[dict]] = {}
        longest: dict[tuple[str, int], int] = {}
        for s in samples:
            kind, n = s["__input__"], int(s["length"])
            bounds = self.boundaries[kind]
            b = (kind, min(bisect.bisect_left(bounds, n), len(bounds) - 1))
            cur = buckets.setdefault(b, [])
            budget = self.budgets[kind]
            if budget > 0:
                if cur and (len(cur) + 1) * max(longest[b], n) > budget:
                    yield cur
                    cur = buckets[b] = []
                cur.append(s)
                longest[b] = n if len(cur) == 1 else max(longest[b], n)
            else:
                cur.append(s)
                if len(cur) >= self.batch_size:
                    yield cur
                    buckets[b] = []


def make_batcher(cfg: DataConfig) -> BucketBatcher:
    if cfg.bucket_boundaries is not None:
        bounds = {"text": list(cfg.bucket_boundaries), "audio": list(cfg.bucket_boundaries)}
    else:
        bounds = {"text": geometric_boundaries(cfg.max_sample_tokens, cfg.num_buckets),
                  "audio": geometric_boundaries(cfg.max_sample_frames, cfg.num_buckets)}
    return BucketBatcher(bounds, {"text": cfg.max_tokens, "audio": cfg.max_frames}, cfg.batch_size)


def fixed_batches(samples: Iterator[dict], batch_size: int) -> Iterator[list[dict]]:
    """In-order batches of `batch_size` samples of one input kind (a kind change closes the batch); the last
    batch may be smaller. For evaluation."""
    cur: list[dict] = []
    for s in samples:
        if cur and (len(cur) >= batch_size or s["__input__"] != cur[0]["__input__"]):
            yield cur
            cur = []
        cur.append(s)
    if cur:
        yield cur


class Mixer:
    """Draws source indices i.i.d. with probabilities proportional to `weights` from a seeded generator."""

    def __init__(self, weights: Sequence[float], rng: np.random.Generator):
        w = np.asarray(weights, dtype=np.float64)
        self.cdf = np.cumsum(w / w.sum())
        self.rng = rng

    def draw(self) -> int:
        if len(self.cdf) == 1:
            return 0
        return min(int(np.searchsorted(self.cdf, self.rng.random(), side="right")), len(self.cdf) - 1)


def padding_ratio(batches: Sequence[Sequence[int]]) -> float:
    """1 - real / padded positions over batches of lengths."""
    real = sum(sum(b) for b in batches)
    padded = sum(len(b) * max(b) for b in batches if b)
    return 1.0 - real / padded if padded else 0.0
