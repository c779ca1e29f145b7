"""Triton exact `posterior_embed`: softmax(logits) @ E without storing the [N, V] softmax.

    lse kernel   one program per row: online max / sum-exp over V           -> lse [N] (fp32)
    fwd kernel   (row block, H block): sum over V blocks of exp(x - lse) @ E  -> out [N, H]
    dx kernel    (row block, V block): p * (g @ E^T - g . out)                -> dlogits [N, V]
    dE kernel    (V block, H block): sum over row blocks of p^T @ g           -> dE [V, H] (only if E needs grad)
Dot operands are always fp32 in registers: IEEE fp32 for fp32 inputs (no TF32, so results match the reference
to ~1e-6), TF32 tensor-core dots for 16-bit inputs (more mantissa than bf16 itself; it also keeps the kernels
testable in the Triton interpreter, whose bf16 dot is unsupported: triton-lang/triton#11584). Top-k mode is torch.topk +
F.embedding_bag (tasu.kernels.torch_ops.posterior_embed), which is already a single gather-reduce on CUDA.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tasu.kernels.torch_ops.posterior_embed import check_posterior_embed_inputs, posterior_embed_fused

_BN, _BV, _BH = 32, 64, 64
_BLOCK_LSE = 1024


@triton.jit
def _lse_kernel(x_ptr, lse_ptr, V, BLOCK_V: tl.constexpr):
    r = tl.program_id(0)
    base = x_ptr + r.to(tl.int64) * V
    m = tl.full([BLOCK_V], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_V], dtype=tl.float32)
    for v0 in range(0, V, BLOCK_V):
        offs = v0 + tl.arange(0, BLOCK_V)
        x = tl.load(base + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, x)
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)       # all -inf so far: keep exp() finite
        s = s * tl.exp(m - shift) + tl.exp(x - shift)
        m = m_new
    top = tl.max(m, axis=0)
    total = tl.sum(s * tl.exp(m - top), axis=0)
    tl.store(lse_ptr + r, top + tl.log(total))


@triton.jit
def _fwd_kernel(x_ptr, lse_ptr, e_ptr, out_ptr, N, V, H, BN: tl.constexpr, BV: tl.constexpr, BH: tl.constexpr,
                IEEE: tl.constexpr):
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    rh = tl.program_id(1) * BH + tl.arange(0, BH)
    lse = tl.load(lse_ptr + rn, mask=rn < N, other=0.0)
    acc = tl.zeros([BN, BH], dtype=tl.float32)
    for v0 in range(0, V, BV):
        rv = v0 + tl.arange(0, BV)
        x = tl.load(x_ptr + rn[:, None].to(tl.int64) * V + rv[None, :], mask=(rn[:, None] < N) & (rv[None, :] < V),
                    other=float("-inf")).to(tl.float32)
        p = tl.exp(x - lse[:, None])                                 # [BN, BV]
        e = tl.load(e_ptr + rv[:, None].to(tl.int64) * H + rh[None, :], mask=(rv[:, None] < V) & (rh[None, :] < H),
                    other=0.0)
        if IEEE:
            acc += tl.dot(p, e.to(tl.float32), input_precision="ieee")
        else:
            acc += tl.dot(p, e.to(tl.float32), input_precision="tf32")
    tl.store(out_ptr + rn[:, None].to(tl.int64) * H + rh[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=(rn[:, None] < N) & (rh[None, :] < H))


@triton.jit
def _dx_kernel(x_ptr, lse_ptr, e_ptr, g_ptr, go_ptr, dx_ptr, N, V, H, BN: tl.constexpr, BV: tl.constexpr,
               BH: tl.constexpr, IEEE: tl.constexpr):
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    rv = tl.program_id(1) * BV + tl.arange(0, BV)
    acc = tl.zeros([BN, BV], dtype=tl.float32)                       # g @ E^T for this block
    for h0 in range(0, H, BH):
        rh = h0 + tl.arange(0, BH)
        g = tl.load(g_ptr + rn[:, None].to(tl.int64) * H + rh[None, :], mask=(rn[:, None] < N) & (rh[None, :] < H),
                    other=0.0)
        et = tl.load(e_ptr + rv[None, :].to(tl.int64) * H + rh[:, None], mask=(rv[None, :] < V) & (rh[:, None] < H),
                     other=0.0)                                      # [BH, BV] = E^T block
        if IEEE:
            acc += tl.dot(g.to(tl.float32), et.to(tl.float32), input_precision="ieee")
        else:
            acc += tl.dot(g.to(tl.float32), et.to(tl.float32), input_precision="tf32")
    mask = (rn[:, None] < N) & (rv[None, :] < V)
    lse = tl.load(lse_ptr + rn, mask=rn < N, other=0.0)
    go = tl.load(go_ptr + rn, mask=rn < N, other=0.0)
    x = tl.load(x_ptr + rn[:, None].to(tl.int64) * V + rv[None, :], mask=mask, other=float("-inf")).to(tl.float32)
    dx = tl.exp(x - lse[:, None]) * (acc - go[:, None])
    tl.store(dx_ptr + rn[:, None].to(tl.int64) * V + rv[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _de_kernel(x_ptr, lse_ptr, g_ptr, de_ptr, N, V, H, BN: tl.constexpr, BV: tl.constexpr, BH: tl.constexpr,
               IEEE: tl.constexpr):
    rv = tl.program_id(0) * BV + tl.arange(0, BV)
    rh = tl.program_id(1) * BH + tl.arange(0, BH)
    acc = tl.zeros([BV, BH], dtype=tl.float32)                       # P^T @ g for this block
    for n0 in range(0, N, BN):
        rn = n0 + tl.arange(0, BN)
        xt = tl.load(x_ptr + rn[None, :].to(tl.int64) * V + rv[:, None], mask=(rn[None, :] < N) & (rv[:, None] < V),
                     other=float("-inf")).to(tl.float32)             # [BV, BN]
        lse = tl.load(lse_ptr + rn, mask=rn < N, other=0.0)
        pt = tl.exp(xt - lse[None, :])
        g = tl.load(g_ptr + rn[:, None].to(tl.int64) * H + rh[None, :], mask=(rn[:, None] < N) & (rh[None, :] < H),
                    other=0.0)
        if IEEE:
            acc += tl.dot(pt, g.to(tl.float32), input_precision="ieee")
        else:
            acc += tl.dot(pt, g.to(tl.float32), input_precision="tf32")
    tl.store(de_ptr + rv[:, None].to(tl.int64) * H + rh[None, :], acc, mask=(rv[:, None] < V) & (rh[None, :] < H))


def _row_lse(x: torch.Tensor) -> torch.Tensor:
    lse = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    if x.shape[0]:
        _lse_kernel[(x.shape[0],)](x, lse, x.shape[1], BLOCK_V=_BLOCK_LSE)
    return lse


class _ExactTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, embedding):
        v, h = embedding.shape
        x = logits.reshape(-1, v).contiguous()
        e = embedding.contiguous()
        n = x.shape[0]
        lse = _row_lse(x)
        out = torch.empty(n, h, dtype=e.dtype, device=e.device)
        ieee = e.dtype == torch.float32
        if n:
            grid = (triton.cdiv(n, _BN), triton.cdiv(h, _BH))
            _fwd_kernel[grid](x, lse, e, out, n, v, h, BN=_BN, BV=_BV, BH=_BH, IEEE=ieee)
        ctx.save_for_backward(x, lse, e, out)
        ctx.logits_shape = logits.shape
        return out.reshape(*logits.shape[:-1], h)

    @staticmethod
    def backward(ctx, grad_out):
        x, lse, e, out = ctx.saved_tensors
        n, v = x.shape
        h = e.shape[1]
        ieee = e.dtype == torch.float32
        g = grad_out.reshape(n, h).to(e.dtype).contiguous()
        d_x = d_e = None
        if ctx.needs_input_grad[0]:
            go = (g.float() * out.float()).sum(-1).contiguous()                 # [N] g . out
            d_x = torch.empty_like(x)
            if n:
                grid = (triton.cdiv(n, _BN), triton.cdiv(v, _BV))
                _dx_kernel[grid](x, lse, e, g, go, d_x, n, v, h, BN=_BN, BV=_BV, BH=_BH, IEEE=ieee)
            d_x = d_x.reshape(ctx.logits_shape)
        if ctx.needs_input_grad[1]:
            d_e32 = torch.zeros(v, h, dtype=torch.float32, device=e.device)
            if n:
                grid = (triton.cdiv(v, _BV), triton.cdiv(h, _BH))
                _de_kernel[grid](x, lse, g, d_e32, n, v, h, BN=_BN, BV=_BV, BH=_BH, IEEE=ieee)
            d_e = d_e32.to(e.dtype)
        return d_x, d_e


def posterior_embed_triton(logits: torch.Tensor, embedding: torch.Tensor, top_k: int | None = None) -> torch.Tensor:
    """Exact mode: Triton kernels (fp32 / bf16 / fp16). Top-k mode and fp64: the vectorised PyTorch path."""
    check_posterior_embed_inputs(logits, embedding, top_k)
    if top_k is not None or embedding.dtype == torch.float64 or logits.dtype == torch.float64:
        return posterior_embed_fused(logits, embedding, top_k)
    return _ExactTriton.apply(logits, embedding)
