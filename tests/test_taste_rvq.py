"""TASTE residual VQ: k-means init, EMA update (hand-checked), quantizer dropout, straight-through, masks, stats."""

import pytest
import torch

from tasu.taste.rvq import ResidualVQ


def _clustered(n_clusters=32, per=20, dim=8, spread=10.0, noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=g) * spread
    x = centres.repeat_interleave(per, 0) + noise * torch.randn(n_clusters * per, dim, generator=g)
    return x[torch.randperm(x.shape[0], generator=g)], centres


def test_kmeans_init_uses_most_codes_on_clustered_data():
    x, _ = _clustered()
    z = x.view(8, -1, 8) + 30.0                                           # [B=8, L=80, D=8], not centred
    rvq = ResidualVQ(2, 32, 8, kmeans_init=True, kmeans_iters=10).train()
    out = rvq(z)
    assert out.used_fraction.min() >= 0.9, out.used_fraction
    assert out.perplexity[0] > 28                                         # 32 equal clusters -> perplexity ~32
    # control: the same data against the random (un-initialised) codebook leaves most codes unused
    cold = ResidualVQ(2, 32, 8, kmeans_init=False).eval()
    assert cold(z).used_fraction[0] < 0.3


def test_kmeans_init_recovers_separated_clusters():
    x, centres = _clustered(n_clusters=8, per=30, spread=20.0)
    rvq = ResidualVQ(1, 8, 8, kmeans_iters=10).train()
    rvq(x.view(1, -1, 8))
    # every true centre has a code within the noise level (codes are the cluster means, EMA-moved once)
    d = torch.cdist(centres, rvq.embed[0]).min(dim=1).values
    assert d.max() < 0.1, d


def test_passes_through_until_enough_vectors_are_collected():
    x, _ = _clustered()
    batches = x.view(8, 4, 20, 8)                                         # 8 batches of 80 vectors
    rvq = ResidualVQ(2, 32, 8, kmeans_init_vectors=200).train()
    for i in range(2):                                                    # 80, 160 < 200 collected
        z = batches[i].clone().requires_grad_(True)
        out = rvq(z)
        assert not rvq.is_initialised
        assert out.quantized is z and (out.codes == -1).all() and out.commit_loss == 0
        assert out.n_active.tolist() == [0] * 4
    rvq.eval()
    assert (rvq(batches[0]).codes == -1).all()                            # eval never initialises
    with pytest.raises(RuntimeError, match="not initialised"):
        rvq.encode(batches[0])
    rvq.train()
    out = rvq(batches[2])                                                 # 240 >= 200: init on all three batches
    assert rvq.is_initialised and (out.codes >= 0).all()
    assert out.used_fraction[0] >= 0.9                                    # codes drawn from all 240 vectors
    assert rvq._init_buffer == []


def test_ema_update_matches_hand_computed_formula():
    rvq = ResidualVQ(1, 2, 2, decay=0.5, epsilon=0.1, beta=0.25, kmeans_init=False).train()
    rvq.embed[0] = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    rvq.embed_sum[0] = rvq.embed[0].clone()
    rvq.cluster_size.fill_(1.0)
    z = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [9.0, 9.0]]])   # codes 0, 0, 0, 1
    out = rvq(z)
    assert out.codes[0, :, 0].tolist() == [0, 0, 0, 1]
    # N <- 0.5 * 1 + 0.5 * [3, 1] = [2, 1];  S <- 0.5 * e + 0.5 * [sum] = [1.5, 1.5], [9.5, 9.5]
    assert rvq.cluster_size[0].tolist() == [2.0, 1.0]
    assert torch.allclose(rvq.embed_sum[0], torch.tensor([[1.5, 1.5], [9.5, 9.5]]))
    # Laplace: N' = (N + 0.1) / (3 + 2 * 0.1) * 3 = [1.96875, 1.03125]; e = S / N'
    expected = torch.tensor([[1.5 / 1.96875] * 2, [9.5 / 1.03125] * 2])
    assert torch.allclose(rvq.embed[0], expected, atol=1e-6)
    # code 1 moved from 10 toward the mean (9) of what it was assigned
    assert 9.0 < rvq.embed[0, 1, 0] < 10.0
    # commitment: beta * mean over positions and dims of (z - e_pre)^2 with the pre-update codebook
    pre = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [10.0, 10.0]])
    assert torch.isclose(out.commit_loss, 0.25 * (z[0] - pre).pow(2).mean())


def test_eval_mode_never_updates_and_uses_all_codebooks():
    x, _ = _clustered()
    z = x.view(8, -1, 8)
    rvq = ResidualVQ(4, 16, 8, dropout_prob=1.0).train()
    rvq(z)
    rvq.eval()
    before = rvq.embed.clone()
    out = rvq(z)
    assert torch.equal(rvq.embed, before)
    assert out.n_active.tolist() == [4] * 8
    assert torch.allclose(out.quantized, rvq.decode(out.codes), atol=1e-5)


def test_quantizer_dropout_uses_a_prefix_per_sample():
    x, _ = _clustered(per=40)
    z = x.view(64, -1, 8)                                                 # [64, 20, 8]
    rvq = ResidualVQ(4, 16, 8, dropout_prob=1.0, seed=3).train()
    rvq(z)                                                                # init
    embed = rvq.embed.clone()                                             # codes below are chosen with this
    out = rvq(z)
    assert set(out.n_active.tolist()) == {1, 2, 3, 4}
    for b in range(64):
        n = int(out.n_active[b])
        want = sum(embed[i][out.codes[b, :, i]] for i in range(n))
        assert torch.allclose(out.quantized[b], want, atol=1e-5)
    # no dropout -> every sample uses all codebooks
    rvq.dropout_prob = 0.0
    assert rvq(z).n_active.tolist() == [4] * 64


def test_reconstruction_error_falls_with_more_codebooks():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 32, 8, generator=g)
    rvq = ResidualVQ(4, 16, 8).train()
    for _ in range(3):
        rvq(z)
    rvq.eval()
    errs = [float((rvq(z, n_quantizers=n).quantized - z).pow(2).mean()) for n in range(1, 5)]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 0.5 * errs[0]


def test_straight_through_gradient_is_identity():
    rvq = ResidualVQ(2, 8, 4, beta=0.0, kmeans_init=False).eval()
    z = torch.randn(2, 5, 4, requires_grad=True)
    w = torch.randn(2, 5, 4)
    out = rvq(z)
    assert torch.allclose(out.quantized, rvq.decode(out.codes), atol=1e-6)   # forward: the quantised values
    (out.quantized * w).sum().backward()
    assert torch.allclose(z.grad, w)                                      # backward: identity


def test_commit_loss_gradient_pulls_toward_codes():
    rvq = ResidualVQ(1, 4, 3, beta=1.0, kmeans_init=False).eval()
    z = torch.randn(1, 6, 3, requires_grad=True)
    out = rvq(z)
    out.commit_loss.backward()
    q = rvq.embed[0][out.codes[0, :, 0]]
    assert torch.allclose(z.grad[0], 2.0 * (z[0] - q).detach() / (6 * 3), atol=1e-6)


def test_padding_does_not_touch_statistics_or_init():
    x, _ = _clustered(per=10)
    z = x.view(4, -1, 8)                                                  # [4, 80, 8]
    padded = torch.cat([z, 100.0 * torch.randn(4, 7, 8)], dim=1)
    mask = torch.zeros(4, 87, dtype=torch.bool)
    mask[:, :80] = True
    a, b = ResidualVQ(2, 16, 8).train(), ResidualVQ(2, 16, 8).train()
    for _ in range(2):
        out_a, out_b = a(z), b(padded, mask)
    assert torch.allclose(a.embed, b.embed) and torch.allclose(a.cluster_size, b.cluster_size)
    assert torch.allclose(out_a.commit_loss, out_b.commit_loss)
    assert torch.equal(out_a.codes, out_b.codes[:, :80])


def test_usage_stats_of_a_known_assignment():
    rvq = ResidualVQ(1, 4, 1, kmeans_init=False).eval()
    rvq.embed[0] = torch.tensor([[0.0], [10.0], [20.0], [30.0]])
    even = rvq(torch.tensor([[[0.0], [10.0], [20.0], [30.0]]]))
    assert torch.isclose(even.perplexity[0], torch.tensor(4.0)) and even.used_fraction[0] == 1.0
    half = rvq(torch.tensor([[[0.0], [0.0], [20.0], [20.0]]]))
    assert torch.isclose(half.perplexity[0], torch.tensor(2.0)) and half.used_fraction[0] == 0.5


def test_dead_codes_are_replaced_by_batch_vectors():
    rvq = ResidualVQ(1, 4, 2, decay=0.1, kmeans_init=False, dead_code_threshold=0.5).train()
    rvq.embed[0] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [1e3, 1e3]])
    rvq.embed_sum[0] = rvq.embed[0].clone()
    z = torch.tensor([[[0.1, 0.0], [1.0, 1.1], [2.0, 1.9]]])
    rvq(z)
    # code 3 got nothing: N = 0.1 < 0.5 -> reset to one of the batch residuals
    assert any(torch.allclose(rvq.embed[0, 3], z[0, i]) for i in range(3))
    assert rvq.cluster_size[0, 3] == 0.5
    assert (rvq.cluster_size[0, :3] > 0.5).all()


def test_half_precision_cast_keeps_fp32_codebooks():
    rvq = ResidualVQ(2, 8, 4).bfloat16().train()
    assert rvq.embed.dtype == rvq.cluster_size.dtype == rvq.embed_sum.dtype == torch.float32
    out = rvq(torch.randn(2, 16, 4).bfloat16())
    assert out.quantized.dtype == torch.bfloat16 and torch.isfinite(out.quantized.float()).all()


def test_bad_inputs_name_the_culprit():
    rvq = ResidualVQ(2, 8, 4)
    with pytest.raises(ValueError, match=r"\[B, L, 4\]"):
        rvq(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="n_quantizers"):
        rvq(torch.randn(2, 3, 4), n_quantizers=3)
    with pytest.raises(ValueError, match="mask"):
        rvq(torch.randn(2, 3, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match="decay"):
        ResidualVQ(2, 8, 4, decay=1.0)
