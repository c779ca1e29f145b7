"""Triton kernels vs the reference, run on CPU through the Triton interpreter (slow tier).

TRITON_INTERPRET=1 must be set before a kernel is defined (`@triton.jit` reads it at decoration time), so this
module sets it first and (re)imports tasu.kernels.triton_impl afterwards. Same tolerances as the default tier
(fp32 <= 1e-5, bf16 <= 1e-2, relative to a float64 reference on the same inputs).
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch

os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="Triton is an optional dependency (pip install triton)")

pytestmark = pytest.mark.slow


def _load(name: str):
    full = f"tasu.kernels.triton_impl.{name}"
    if full in sys.modules:            # defined earlier without the interpreter: define the kernels again
        return importlib.reload(sys.modules[full])
    return importlib.import_module(full)


tsim, tpsd, tpe = _load("sim_project"), _load("psd"), _load("posterior_embed")

from tasu.kernels.torch_ops.posterior_embed import posterior_embed_reference  # noqa: E402
from tasu.kernels.torch_ops.psd import psd_compress_reference  # noqa: E402
from tasu.kernels.torch_ops.sim_project import sim_project_reference  # noqa: E402

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def rel_err(a, ref) -> float:
    a, ref = a.detach().double(), ref.detach().double()
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    return float((a - ref).abs().max()) / (scale if scale > 1e-12 else 1.0) if ref.numel() else 0.0


def assert_close(got, want, dtype, what):
    for i, (a, r) in enumerate(zip(got, want)):
        assert a.shape == r.shape, f"{what}[{i}] shape {tuple(a.shape)} != {tuple(r.shape)}"
        assert rel_err(a, r) <= TOL[dtype], f"{what}[{i}] relative error {rel_err(a, r):.2e}"


def leaf64(x):
    return x.detach().double().requires_grad_()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("affine", [True, False])
def test_triton_sim_project(dtype, affine):
    g = torch.Generator().manual_seed(21)
    v, d = 45, 150                                      # D not a multiple of the block: masks are exercised
    ids = torch.randint(0, v, (3, 6), generator=g)
    ids[0, :4] = 7                                      # colliding atomic adds into one column
    smooth = (torch.rand(3, 6, generator=g) * 0.4).requires_grad_()
    w = (torch.randn(d, v, generator=g) / v**0.5).to(dtype).requires_grad_()
    b = torch.randn(d, generator=g).to(dtype).requires_grad_()
    gam = (1 + 0.2 * torch.randn(v, generator=g)).requires_grad_() if affine else None
    bet = (0.2 * torch.randn(v, generator=g)).requires_grad_() if affine else None
    go = torch.randn(3, 6, d, generator=g).to(dtype)
    eps = 0.05
    out = tsim.sim_project_triton(ids, smooth, w, b, gam, bet, eps)
    xs = [x for x in (smooth, w, b, gam, bet) if x is not None]
    x64 = [leaf64(x) for x in xs]
    full = x64 + [None] * (5 - len(x64))
    ref = sim_project_reference(ids, *full, eps)
    assert_close([out], [ref], dtype, "out")
    assert_close(torch.autograd.grad(out, xs, go), torch.autograd.grad(ref, x64, go.double()), dtype, "grads")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_psd(dtype):
    g = torch.Generator().manual_seed(22)
    b, t, v, dim = 3, 25, 1100, 7                       # V > one argmax block
    label = torch.randint(0, v, (b, t), generator=g)
    label[:, 1::3] = label[:, ::3][:, : label[:, 1::3].shape[1]]
    label[:, ::4] = 0
    logits = torch.randn(b, t, v, generator=g)
    logits.scatter_(2, label.unsqueeze(-1), 9.0 + 3 * torch.rand(b, t, 1, generator=g))
    probs = logits.softmax(-1).to(dtype).requires_grad_()
    feats = torch.randn(b, t, dim, generator=g).to(dtype).requires_grad_()
    lengths = torch.tensor([t, 11, 0])
    p, f, n = tpsd.psd_compress_triton(probs, lengths, feats, 0, 0.9)
    p64, f64 = leaf64(probs), leaf64(feats)
    rp, rf, rn = psd_compress_reference(p64, lengths, f64, 0, 0.9)
    assert torch.equal(n, rn)
    assert_close([p, f], [rp, rf], dtype, "out")
    gp, gf = torch.randn(rp.shape, generator=g), torch.randn(rf.shape, generator=g)
    got = torch.autograd.grad((p.double() * gp).sum() + (f.double() * gf).sum(), [probs, feats])
    want = torch.autograd.grad((rp * gp).sum() + (rf * gf).sum(), [p64, f64])
    assert_close(got, want, dtype, "grads")


def test_triton_argmax_takes_the_first_maximum():
    probs = torch.zeros(1, 3, 2100)
    probs[0, 0, [5, 1500]] = 1.0                        # tie across two blocks -> 5
    probs[0, 1, [1030, 1031]] = 1.0                     # tie inside a block -> 1030
    probs[0, 2, 2099] = 1.0                             # last element (masked tail block)
    assert tpsd.frame_argmax_triton(probs).tolist() == [[5, 1030, 2099]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_posterior_embed_exact(dtype):
    g = torch.Generator().manual_seed(23)
    logits = (3 * torch.randn(2, 19, 150, generator=g)).to(dtype).requires_grad_()   # N, V, H not block multiples
    emb = torch.randn(150, 70, generator=g).to(dtype).requires_grad_()
    go = torch.randn(2, 19, 70, generator=g).to(dtype)
    out = tpe.posterior_embed_triton(logits, emb)
    x64 = [leaf64(logits), leaf64(emb)]
    ref = posterior_embed_reference(*x64)
    assert_close([out], [ref], dtype, "out")
    assert_close(torch.autograd.grad(out, [logits, emb], go), torch.autograd.grad(ref, x64, go.double()), dtype,
                 "grads")
