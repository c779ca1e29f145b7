"""PSD: the vectorised version equals the per-frame reference; a hand-made example; gradients; bad input."""

from __future__ import annotations

import pytest
import torch

from tasu.align.psd import psd_compress, psd_reference
from tasu.types import Posteriors


def peaky(seed: int, B: int, T: int, V: int, D: int, blank_frac: float = 0.4):
    """Log-probs whose argmax follows runs of labels (so PSD has runs to merge), plus features and lengths."""
    g = torch.Generator().manual_seed(seed)
    lab = torch.zeros(B, T, dtype=torch.long)
    for b in range(B):
        t = 0
        while t < T:
            run = int(torch.randint(1, 5, (1,), generator=g))
            blank = float(torch.rand(1, generator=g)) < blank_frac
            lab[b, t:t + run] = 0 if blank else int(torch.randint(1, min(V, 4), (1,), generator=g))
            t += run
    sharp = torch.rand(B, T, 1, generator=g) * 6 + 0.5  # some frames nearly one-hot, some flat
    logits = torch.randn(B, T, V, generator=g) + sharp * torch.nn.functional.one_hot(lab, V)
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    lengths[0], lengths[1 % B] = T, 1  # a full row and a row of length 1
    if B > 2:
        lengths[2] = 0
    feats = torch.randn(B, T, D, generator=g, dtype=torch.float64).float()
    return logits.log_softmax(-1), feats, lengths


def assert_same(a: Posteriors, b: Posteriors) -> None:
    assert a.lengths.tolist() == b.lengths.tolist()
    for name in ("probs", "log_probs", "features"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.shape == y.shape, name
            torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-6, msg=name)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("layout", ["probs", "log_probs", "both"])
def test_matches_reference(seed, layout):
    B, T, V, D = 5, 3 + 7 * seed, 6, 4
    lp, feats, lengths = peaky(seed, B, T, V, D)
    kw = {"probs": {"probs": lp.exp()}, "log_probs": {"log_probs": lp}, "both": {"probs": lp.exp(), "log_probs": lp}}
    post = Posteriors(lengths=lengths, vocab_size=V, features=feats, **kw[layout])
    for th in (0.3, 0.5, 0.9, 1.0):
        got, ref = psd_compress(post, th), psd_reference(post, th)
        assert_same(got, ref)
        assert bool((got.lengths <= lengths).all())
    if T >= 10:  # the inputs really contain runs: at threshold 1 only merging shortens a row
        assert bool((psd_compress(post, 1.0).lengths < lengths).any())
    nofeat = Posteriors(lengths=lengths, vocab_size=V, **kw[layout])
    assert psd_compress(nofeat).features is None
    assert_same(psd_compress(nofeat), psd_reference(nofeat))


def test_hand_example():
    # V = 3: 0 blank, 1 "a", 2 "b"; features = frame index
    frames = [
        [0.1, 0.8, 0.1],  # a  } run -> mean [0.2, 0.7, 0.1], feature 0.5
        [0.3, 0.6, 0.1],  # a  }
        [0.95, 0.03, 0.02],  # blank 0.95 >= 0.9 -> dropped
        [0.6, 0.3, 0.1],  # blank, kept alone
        [0.5, 0.2, 0.3],  # blank, kept alone (blank frames are never merged)
        [0.1, 0.1, 0.8],  # b  } run -> [0.15, 0.1, 0.75], feature 5.5
        [0.2, 0.1, 0.7],  # b  }
        [0.1, 0.8, 0.1],  # a again: a new run
        [0.3, 0.3, 0.4],  # beyond the row's length: ignored
    ]
    second = [[0.92, 0.04, 0.04], [0.97, 0.02, 0.01]] + [[0.0, 1.0, 0.0]] * 7  # all dropped -> length 0
    probs = torch.tensor([frames, second], dtype=torch.float64)
    feats = torch.arange(9, dtype=torch.float64).repeat(2, 1).unsqueeze(-1)
    post = Posteriors(lengths=torch.tensor([8, 2]), vocab_size=3, probs=probs, features=feats)
    out = psd_compress(post, 0.9)
    assert out.lengths.tolist() == [5, 0]
    expect = torch.tensor([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.5, 0.2, 0.3], [0.15, 0.1, 0.75], [0.1, 0.8, 0.1]],
                          dtype=torch.float64)
    torch.testing.assert_close(out.probs[0], expect)
    torch.testing.assert_close(out.features[0, :, 0], torch.tensor([0.5, 3.0, 4.0, 5.5, 7.0], dtype=torch.float64))
    assert (out.probs[1] == 0).all() and (out.features[1] == 0).all()  # padding is zeros
    # threshold 0.55: the two kept blank frames go too (0.6 and 0.5 -> only 0.6 >= 0.55)
    assert psd_compress(post, 0.55).lengths.tolist() == [4, 0]
    # all rows empty -> one padding column
    empty = psd_compress(Posteriors(lengths=torch.tensor([0, 0]), vocab_size=3, probs=probs), 0.9)
    assert empty.lengths.tolist() == [0, 0] and empty.probs.shape == (2, 1, 3)


@pytest.mark.parametrize("use_log", [False, True])
def test_gradients_match_reference(use_log):
    lp, feats, lengths = peaky(11, 4, 16, 7, 3)
    w = torch.randn(4, 16, 7)

    def grads(fn):
        x = lp.clone().requires_grad_(True)
        f = feats.clone().requires_grad_(True)
        src = x if use_log else x.exp()
        post = Posteriors(lengths=lengths, vocab_size=7, features=f,
                          **({"log_probs": src} if use_log else {"probs": src}))
        out = fn(post, 0.6)
        t = out.probs.shape[1]
        loss = (out.probs * w[:, :t]).sum() + (out.features ** 2).sum()
        if use_log:
            loss = loss + (out.log_probs * w[:, :t]).sum()
        loss.backward()
        return x.grad, f.grad

    gx, gf = grads(psd_compress)
    rx, rf = grads(psd_reference)
    torch.testing.assert_close(gx, rx, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gf, rf, atol=1e-5, rtol=1e-5)
    assert gx.abs().sum() > 0 and gf.abs().sum() > 0
    pad = torch.arange(16).unsqueeze(0) >= lengths.unsqueeze(1)
    assert (gf[pad] == 0).all()  # frames beyond a row's length get no gradient


def test_sparse_input_and_bf16():
    ids = torch.tensor([[1, 1, 0, 2, 2, 2], [3, 0, 0, 0, 0, 0]])
    smooth = torch.tensor([[0.1, 0.05, 0.02, 0.0, 0.3, 0.2], [0.1] * 6])
    sparse = Posteriors(lengths=torch.tensor([6, 2]), vocab_size=5, ids=ids, smooth=smooth)
    assert_same(psd_compress(sparse), psd_compress(sparse.to_dense()))
    assert psd_compress(sparse).lengths.tolist() == [2, 1]  # blank frame (0.98 blank) dropped; runs merged
    lp, feats, lengths = peaky(3, 3, 20, 6, 2)
    post = Posteriors(lengths=lengths, vocab_size=6, probs=lp.exp(), features=feats)
    half = psd_compress(post.to(dtype=torch.bfloat16))
    full = psd_compress(post)
    assert half.probs.dtype == torch.bfloat16
    if half.lengths.tolist() == full.lengths.tolist():  # bf16 rounding may flip a near-threshold frame
        torch.testing.assert_close(half.probs.float(), full.probs, atol=2e-2, rtol=2e-2)


def test_bad_input():
    probs = torch.full((2, 4, 3), 1 / 3)
    with pytest.raises(ValueError, match="lengths"):
        psd_compress(Posteriors(lengths=torch.tensor([5, 1]), vocab_size=3, probs=probs))
    with pytest.raises(ValueError, match="blank_threshold"):
        psd_compress(Posteriors(lengths=torch.tensor([4, 1]), vocab_size=3, probs=probs), 0.0)
    with pytest.raises(ValueError, match="features"):
        psd_compress(Posteriors(lengths=torch.tensor([4, 1]), vocab_size=3, probs=probs,
                                features=torch.zeros(2, 3, 1)))
    with pytest.raises(ValueError, match=r"\[B, T, V=4\]"):
        psd_compress(Posteriors(lengths=torch.tensor([4, 1]), vocab_size=4, probs=probs))
