"""Equivalence checks of the Triton kernels against the float64 reference, on any device.

Shared by the Triton-interpreter tier (CPU tensors, tests/test_kernels_triton.py) and the CUDA tier (tests/
test_kernels_cuda.py). Each check takes the kernel module (imported by the caller: the interpreter tier must
define the kernels with TRITON_INTERPRET=1) and the device; the reference always runs in float64 on the CPU.
Tolerances (max |impl - ref| / max |ref|): fp32 <= 1e-5, bf16 <= 1e-2.
"""

from __future__ import annotations

import torch

from tasu.kernels.torch_ops.posterior_embed import posterior_embed_reference
from tasu.kernels.torch_ops.psd import psd_compress_reference
from tasu.kernels.torch_ops.sim_project import sim_project_reference

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def rel_err(a, ref) -> float:
    a, ref = a.detach().double().cpu(), ref.detach().double().cpu()
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    return float((a - ref).abs().max()) / (scale if scale > 1e-12 else 1.0) if ref.numel() else 0.0


def assert_close(got, want, dtype, what):
    for i, (a, r) in enumerate(zip(got, want)):
        assert a.shape == r.shape, f"{what}[{i}] shape {tuple(a.shape)} != {tuple(r.shape)}"
        assert rel_err(a, r) <= TOL[dtype], f"{what}[{i}] relative error {rel_err(a, r):.2e}"


def leaf64(x):
    return x.detach().double().cpu().requires_grad_()


def leaf(x, device):
    return x.detach().to(device).requires_grad_()


def check_sim_project(tsim, dtype, affine, device="cpu", v=45, d=150, shape=(3, 6), seed=21, bias=True):
    """D not a multiple of the block (masks), four frames on one column (colliding atomic adds)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, v, shape, generator=g)
    ids.view(-1)[:4] = 7
    smooth = torch.rand(shape, generator=g) * 0.4
    w = (torch.randn(d, v, generator=g) / v**0.5).to(dtype)
    b = torch.randn(d, generator=g).to(dtype) if bias else None
    gam = (1 + 0.2 * torch.randn(v, generator=g)) if affine else None
    bet = (0.2 * torch.randn(v, generator=g)) if affine else None
    go = torch.randn(*shape, d, generator=g).to(dtype)
    eps = 0.05
    args = [None if x is None else leaf(x, device) for x in (smooth, w, b, gam, bet)]
    out = tsim.sim_project_triton(ids.to(device), *args, eps)
    args64 = [None if x is None else leaf64(x) for x in args]
    ref = sim_project_reference(ids, *args64, eps)
    assert_close([out], [ref], dtype, "out")
    live = [x for x in args if x is not None]
    live64 = [x for x in args64 if x is not None]
    assert_close(torch.autograd.grad(out, live, go.to(device)), torch.autograd.grad(ref, live64, go.double()), dtype,
                 "grads")


def check_psd(tpsd, dtype, device="cpu", b=3, t=25, v=1100, dim=7, seed=22):
    """V larger than one argmax block; repeated labels and blank runs; a zero-length row."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, v, (b, t), generator=g)
    label[:, 1::3] = label[:, ::3][:, : label[:, 1::3].shape[1]]
    label[:, ::4] = 0
    logits = torch.randn(b, t, v, generator=g)
    logits.scatter_(2, label.unsqueeze(-1), 9.0 + 3 * torch.rand(b, t, 1, generator=g))
    probs = leaf(logits.softmax(-1).to(dtype), device)
    feats = leaf(torch.randn(b, t, dim, generator=g).to(dtype), device)
    lengths = torch.tensor([t, t * 2 // 5, 0][:b] + [t] * max(0, b - 3))
    p, f, n = tpsd.psd_compress_triton(probs, lengths.to(device), feats, 0, 0.9)
    p64, f64 = leaf64(probs), leaf64(feats)
    rp, rf, rn = psd_compress_reference(p64, lengths, f64, 0, 0.9)
    assert torch.equal(n.cpu(), rn)
    assert_close([p, f], [rp, rf], dtype, "out")
    gp, gf = torch.randn(rp.shape, generator=g), torch.randn(rf.shape, generator=g)
    got = torch.autograd.grad((p.double() * gp.to(device)).sum() + (f.double() * gf.to(device)).sum(),
                              [probs, feats])
    want = torch.autograd.grad((rp * gp).sum() + (rf * gf).sum(), [p64, f64])
    assert_close(got, want, dtype, "grads")


def check_argmax_takes_the_first_maximum(tpsd, device="cpu"):
    probs = torch.zeros(1, 3, 2100)
    probs[0, 0, [5, 1500]] = 1.0                        # tie across two blocks -> 5
    probs[0, 1, [1030, 1031]] = 1.0                     # tie inside a block -> 1030
    probs[0, 2, 2099] = 1.0                             # last element (masked tail block)
    assert tpsd.frame_argmax_triton(probs.to(device)).tolist() == [[5, 1030, 2099]]


def check_posterior_embed_exact(tpe, dtype, device="cpu", n=(2, 19), v=150, h=70, seed=23):
    """N, V, H not block multiples by default."""
    g = torch.Generator().manual_seed(seed)
    logits = leaf((3 * torch.randn(*n, v, generator=g)).to(dtype), device)
    emb = leaf(torch.randn(v, h, generator=g).to(dtype), device)
    go = torch.randn(*n, h, generator=g).to(dtype)
    out = tpe.posterior_embed_triton(logits, emb)
    x64 = [leaf64(logits), leaf64(emb)]
    ref = posterior_embed_reference(*x64)
    assert_close([out], [ref], dtype, "out")
    assert_close(torch.autograd.grad(out, [logits, emb], go.to(device)), torch.autograd.grad(ref, x64, go.double()),
                 dtype, "grads")
