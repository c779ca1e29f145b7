"""Exact simulated first layer (tasu.align.sim_project) vs the dense LayerNorm + Linear path."""

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from tasu.align.sim_project import sim_layernorm_linear, sim_linear
from tasu.types import Posteriors


class MaxNumel(TorchDispatchMode):
    """Records the largest tensor any aten op produces while active (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.max_numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        return out


def _layers(v: int, d: int, affine: bool = True, bias: bool = True, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ln = nn.LayerNorm(v, elementwise_affine=affine)
    lin = nn.Linear(v, d, bias=bias)
    with torch.no_grad():
        if affine:
            ln.weight.copy_(1.0 + 0.5 * torch.randn(v, generator=g))
            ln.bias.copy_(0.1 * torch.randn(v, generator=g))
        lin.weight.copy_(torch.randn(d, v, generator=g) / v**0.5)
        if bias:
            lin.bias.copy_(torch.randn(d, generator=g))
    return ln, lin


def _frames(b: int, t: int, v: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, v, (b, t), generator=g)
    smooth = torch.rand(b, t, generator=g) * 0.3
    smooth[0, 0], smooth[-1, -1] = 0.0, 1.0          # the extremes: clean one-hot, uniform
    return ids, smooth


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _grads(out: torch.Tensor, upstream: torch.Tensor, params) -> list[torch.Tensor]:
    return list(torch.autograd.grad((out * upstream).sum(), params))


@pytest.mark.parametrize("v", [1000, 25055])
@pytest.mark.parametrize("affine,bias", [(True, True), (False, False)])
def test_sim_matches_dense_forward_and_gradients(v, affine, bias):
    b, t, d = 2, 5, 16
    ln, lin = _layers(v, d, affine, bias, seed=v)
    ids, smooth = _frames(b, t, v, seed=v + 1)
    dense_x = Posteriors(lengths=torch.full((b,), t), vocab_size=v, ids=ids, smooth=smooth).dense_probs()
    params = [p for p in (ln.weight, ln.bias, lin.weight, lin.bias) if p is not None]
    upstream = torch.randn(b, t, d, generator=torch.Generator().manual_seed(3))

    ref = lin(ln(dense_x))
    sim = sim_layernorm_linear(ids, smooth, v, ln, lin)
    assert sim.shape == (b, t, d)
    assert _rel(sim, ref) <= 1e-5
    for g_sim, g_ref in zip(_grads(sim, upstream, params), _grads(ref, upstream, params)):
        assert _rel(g_sim, g_ref) <= 1e-5


def test_sim_linear_matches_dense():
    v, d = 1000, 12
    _, lin = _layers(v, d)
    ids, smooth = _frames(3, 4, v)
    dense_x = Posteriors(lengths=torch.full((3,), 4), vocab_size=v, ids=ids, smooth=smooth).dense_probs()
    ref = lin(dense_x)
    sim = sim_linear(ids, smooth, v, lin.weight, lin.bias)
    assert _rel(sim, ref) <= 1e-5
    up = torch.randn_like(ref)
    for g_sim, g_ref in zip(_grads(sim, up, [lin.weight, lin.bias]), _grads(ref, up, [lin.weight, lin.bias])):
        assert _rel(g_sim, g_ref) <= 1e-5


@pytest.mark.parametrize("v", [25055, 250550])
def test_sim_never_builds_frames_times_vocab(v):
    # B*T = 64 frames and D = 8: a [B, T, V] tensor has 8x more elements than anything the weights need ([D, V]).
    b, t, d = 4, 16, 8
    ln, lin = _layers(v, d, seed=5)
    ids, smooth = _frames(b, t, v)
    rec = MaxNumel()
    with rec:
        out = sim_layernorm_linear(ids, smooth, v, ln, lin)
        out.square().sum().backward()
    assert rec.max_numel <= d * v < b * t * v
    # the detector does fire on the dense path
    rec_dense = MaxNumel()
    with rec_dense:
        x = Posteriors(lengths=torch.full((b,), t), vocab_size=v, ids=ids, smooth=smooth).dense_probs()
        lin(ln(x)).sum().backward()
    assert rec_dense.max_numel >= b * t * v


def test_bad_inputs_name_the_culprit():
    ln, lin = _layers(50, 4)
    ids, smooth = _frames(2, 3, 50)
    with pytest.raises(ValueError, match="LayerNorm normalises"):
        sim_layernorm_linear(ids, smooth, 51, ln, lin)
    with pytest.raises(ValueError, match="smooth"):
        sim_layernorm_linear(ids, smooth[:, :2], 50, ln, lin)
    with pytest.raises(ValueError, match="long"):
        sim_layernorm_linear(ids.float(), smooth, 50, ln, lin)
    with pytest.raises(ValueError, match="vocab size"):
        sim_linear(ids, smooth, 50, torch.zeros(4, 49))
