"""Discrete speech units: k-means over encoder features (unit discovery), assignment, save / load.

Features [N, D] (frames of any number of utterances, padding already removed) -> centroids [k, D] -> unit ids [N].
Memory stays bounded by chunking: no [N, k] distance matrix larger than `chunk` x k is ever built, so N can be
millions of frames. Features that do not fit in memory at all go through `MiniBatchKMeans` (Sculley 2010: per-centre
learning rate 1 / count), one batch at a time, e.g. straight from the data pipeline.

Initialisation is greedy k-means++ (seeded, deterministic for a given seed and input), which places one centre in
each well-separated cluster with high probability; empty clusters during Lloyd are re-seeded with the points farthest
from their centre, so all k centres stay in use whenever N >= k distinct points exist.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

_CHUNK = 8192


def _check_features(features: Tensor, name: str) -> None:
    if features.dim() != 2 or features.shape[0] == 0:
        raise ValueError(f"{name}: features must be a non-empty [N, D] tensor, got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise TypeError(f"{name}: features must be floating point, got {features.dtype}")


def _sq_dist(x: Tensor, c: Tensor) -> Tensor:
    """[n, k] squared Euclidean distances between rows of x [n, D] and c [k, D] (fp32, clamped at 0)."""
    x = x.float()
    c = c.float()
    d = x.pow(2).sum(1, keepdim=True) - 2.0 * x @ c.t() + c.pow(2).sum(1).unsqueeze(0)
    return d.clamp_min_(0.0)


def assign(features: Tensor, centroids: Tensor, chunk: int = _CHUNK) -> Tensor:
    """ids [N] long: index of the nearest centroid [k, D] for every row of features [N, D] (ties -> lowest id)."""
    ids, _ = _assign_with_dist(features, centroids, chunk)
    return ids


def _assign_with_dist(features: Tensor, centroids: Tensor, chunk: int = _CHUNK) -> tuple[Tensor, Tensor]:
    _check_features(features, "assign")
    if centroids.dim() != 2 or centroids.shape[1] != features.shape[1]:
        raise ValueError(f"assign: centroids {tuple(centroids.shape)} do not match features of dim {features.shape[1]}")
    ids, dists = [], []
    for s in range(0, features.shape[0], chunk):
        d = _sq_dist(features[s:s + chunk], centroids)
        m, i = d.min(dim=1)
        ids.append(i)
        dists.append(m)
    return torch.cat(ids), torch.cat(dists)


def kmeans_plus_plus(features: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """[k, D] initial centres by greedy k-means++ (as scikit-learn): the first uniformly; then 2 + ln(k) candidates
    drawn with probability ~ squared distance to the nearest chosen centre, keeping the candidate that lowers the
    total squared distance most. The greedy trials make "one centre per well-separated cluster" near certain.

    Fewer than k distinct points: once every point is chosen (all distances 0) the rest are drawn uniformly, i.e.
    duplicates (the caller decides what to do with them). Random draws run on CPU (device-agnostic generator).
    """
    n = features.shape[0]
    x = features.float()
    trials = 2 + int(math.log(k)) if k > 1 else 1
    first = int(torch.randint(n, (1,), generator=generator))
    chosen = [first]
    closest = _sq_dist(x, x[first:first + 1]).squeeze(1)                     # [N] distance to the nearest centre
    for _ in range(1, k):
        total = float(closest.sum())
        if total <= 0.0:
            chosen.append(int(torch.randint(n, (1,), generator=generator)))
            continue
        cand = torch.multinomial(closest.cpu() / total, trials, replacement=True, generator=generator)
        cand = cand.to(x.device)
        new = torch.minimum(closest.unsqueeze(0), _sq_dist(x[cand], x))     # [trials, N]
        best = int(new.sum(dim=1).argmin())
        chosen.append(int(cand[best]))
        closest = new[best]
    return x[torch.tensor(chosen, device=x.device)]


def fit_kmeans(features: Tensor, k: int, iters: int = 20, seed: int = 0, chunk: int = _CHUNK,
               init: Tensor | None = None) -> Tensor:
    """Lloyd's k-means: centroids [k, D] (fp32) for features [N, D].

    `init` [k, D] replaces the k-means++ initialisation. Stops early when no assignment changes. Empty clusters take
    the points currently farthest from their centres (one each), so no centre stays dead while points are left.
    """
    _check_features(features, "fit_kmeans")
    if k < 1:
        raise ValueError(f"fit_kmeans: k must be >= 1, got {k}")
    if iters < 0:
        raise ValueError(f"fit_kmeans: iters must be >= 0, got {iters}")
    x = features.float()
    n, d = x.shape
    g = torch.Generator().manual_seed(seed)
    if init is not None:
        if init.shape != (k, d):
            raise ValueError(f"fit_kmeans: init has shape {tuple(init.shape)}, expected {(k, d)}")
        c = init.float().clone().to(x.device)
    else:
        c = kmeans_plus_plus(x, k, g)
    prev = None
    for _ in range(iters):
        ids, dist = _assign_with_dist(x, c, chunk)
        if prev is not None and torch.equal(ids, prev):
            break
        prev = ids
        sums = torch.zeros(k, d, device=x.device).index_add_(0, ids, x)
        counts = torch.bincount(ids, minlength=k).to(x.dtype)
        filled = counts > 0
        c[filled] = sums[filled] / counts[filled].unsqueeze(1)
        empty = (~filled).nonzero().squeeze(1)
        if empty.numel():
            far = dist.argsort(descending=True)[: empty.numel()]
            c[empty[: far.numel()]] = x[far]
    return c


class MiniBatchKMeans:
    """Streaming k-means for features that do not fit in memory: `update(batch)` per batch, `centroids` at the end.

    The first batch (>= k rows) is clustered by `fit_kmeans` to initialise; every later batch moves each centre toward
    the mean of its assigned rows with step count_batch / count_total (Sculley's per-centre learning rate).
    """

    def __init__(self, k: int, seed: int = 0, init_iters: int = 10, chunk: int = _CHUNK):
        if k < 1:
            raise ValueError(f"MiniBatchKMeans: k must be >= 1, got {k}")
        self.k, self.seed, self.init_iters, self.chunk = k, seed, init_iters, chunk
        self.centroids: Tensor | None = None                                   # [k, D]
        self.counts: Tensor | None = None                                      # [k] rows seen per centre

    def update(self, batch: Tensor) -> None:
        _check_features(batch, "MiniBatchKMeans.update")
        x = batch.float()
        if self.centroids is None:
            if x.shape[0] < self.k:
                raise ValueError(f"MiniBatchKMeans: the first batch has {x.shape[0]} rows, needs >= k = {self.k}")
            self.centroids = fit_kmeans(x, self.k, self.init_iters, self.seed, self.chunk)
            self.counts = torch.zeros(self.k, device=x.device)
        elif x.shape[1] != self.centroids.shape[1]:
            raise ValueError(f"MiniBatchKMeans.update: batch dim {x.shape[1]} != centroid dim "
                             f"{self.centroids.shape[1]}")
        ids = assign(x, self.centroids, self.chunk)
        n = torch.bincount(ids, minlength=self.k).to(x.dtype)
        sums = torch.zeros_like(self.centroids).index_add_(0, ids, x)
        self.counts += n
        hit = n > 0
        # c <- c + (n_b / n_total) * (mean_b - c)  ==  running mean of every row ever assigned to c
        step = (n[hit] / self.counts[hit]).unsqueeze(1)
        self.centroids[hit] += step * (sums[hit] / n[hit].unsqueeze(1) - self.centroids[hit])


def save_centroids(path: str | Path, centroids: Tensor, metadata: dict[str, str] | None = None) -> None:
    """Write centroids [k, D] to a safetensors file (key `centroids`) with optional string metadata."""
    if centroids.dim() != 2:
        raise ValueError(f"save_centroids: centroids must be [k, D], got shape {tuple(centroids.shape)}")
    save_file({"centroids": centroids.detach().float().contiguous().cpu()}, str(path), metadata=metadata)


def load_centroids(path: str | Path) -> Tensor:
    """Centroids [k, D] (fp32, CPU) from a file written by `save_centroids`."""
    tensors = load_file(str(path))
    if "centroids" not in tensors:
        raise KeyError(f"load_centroids: {path} has no 'centroids' tensor (keys: {sorted(tensors)})")
    return tensors["centroids"]
