"""Unit discovery: k-means recovers separated clusters, chunking / streaming agree, save / load round trip."""

import pytest
import torch

from tasu.taste.units import MiniBatchKMeans, assign, fit_kmeans, load_centroids, save_centroids


def _blobs(k=6, per=50, dim=5, spread=20.0, noise=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * spread
    labels = torch.arange(k).repeat_interleave(per)
    x = centres[labels] + noise * torch.randn(k * per, dim, generator=g)
    perm = torch.randperm(k * per, generator=g)
    return x[perm], labels[perm], centres


def _same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when labels a and b define the same partition (equal up to renaming)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_fit_kmeans_recovers_separated_clusters():
    x, labels, centres = _blobs()
    c = fit_kmeans(x, 6, iters=20, seed=0)
    assert c.shape == (6, 5)
    assert torch.cdist(centres, c).min(dim=1).values.max() < 0.3          # each true centre found (noise 0.5 / sqrt 50)
    assert _same_partition(assign(x, c), labels)


@pytest.mark.parametrize("seed", range(8))
def test_kmeans_plus_plus_seeds_one_centre_per_cluster(seed):
    x, labels, _ = _blobs(k=10, seed=seed)
    c = fit_kmeans(x, 10, iters=0, seed=seed)                             # initialisation only, no Lloyd step
    assert _same_partition(assign(x, c), labels)


def test_seeded_and_chunk_independent():
    x, _, _ = _blobs(k=4, per=30, noise=3.0)
    a = fit_kmeans(x, 4, iters=10, seed=5)
    assert torch.equal(a, fit_kmeans(x, 4, iters=10, seed=5))
    assert torch.allclose(a, fit_kmeans(x, 4, iters=10, seed=5, chunk=7), atol=1e-5)
    assert torch.equal(assign(x, a), assign(x, a, chunk=11))


def test_empty_clusters_are_reseeded():
    x, _, _ = _blobs(k=3, per=20)
    init = torch.stack([x[0], x[0] + 1e-3, torch.full((5,), 1e4)])       # centre 2 starts far from everything
    c = fit_kmeans(x, 3, iters=10, init=init)
    assert torch.bincount(assign(x, c), minlength=3).min() > 0


def test_minibatch_kmeans_streams_to_the_clusters():
    x, labels, centres = _blobs(k=5, per=200)
    km = MiniBatchKMeans(5, seed=0)
    for batch in x.split(100):
        km.update(batch)
    assert torch.cdist(centres, km.centroids).min(dim=1).values.max() < 0.3
    assert _same_partition(assign(x, km.centroids), labels)
    assert int(km.counts.sum()) == x.shape[0]


def test_save_load_round_trip(tmp_path):
    c = torch.randn(7, 3)
    save_centroids(tmp_path / "units.safetensors", c, {"k": "7", "layer": "-1"})
    assert torch.equal(load_centroids(tmp_path / "units.safetensors"), c)
    from safetensors import safe_open
    with safe_open(str(tmp_path / "units.safetensors"), "pt") as f:
        assert f.metadata() == {"k": "7", "layer": "-1"}


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        fit_kmeans(torch.randn(3, 4, 5), 2)
    with pytest.raises(ValueError, match="do not match"):
        assign(torch.randn(4, 3), torch.randn(2, 5))
    with pytest.raises(ValueError, match=">= k"):
        MiniBatchKMeans(10).update(torch.randn(4, 2))
    with pytest.raises(TypeError, match="floating"):
        fit_kmeans(torch.ones(4, 2, dtype=torch.long), 2)
