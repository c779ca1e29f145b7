"""Triton `sim_project`: per-frame scalars + column gather + combine in one kernel (forward), column dot products +
atomic scatter-add of the frame's gradient into its W column (backward). W @ [gamma, beta], W^T u and the rank-2
dense part of dW stay with cuBLAS (one pass over W each). Formulas: tasu.kernels.torch_ops.sim_project.
The forward is launch-bound on a GPU (an H100 is busy ~0.15 ms of a ~0.9 ms call: benchmarks/README.md), so it
keeps its launches to three.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tasu.kernels.torch_ops.sim_project import (
    check_sim_project_inputs,
    frame_coefficients,
    ln_rows,
    sim_project_fused,
)

_BLOCK_D = 128


@triton.jit
def _fwd_kernel(out_ptr, w_ptr, ids_ptr, smooth_ptr, gamma_ptr, wgb_ptr, bias_ptr, D, V, k_v, inv_v, eps,
                HAS_GAMMA: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_D: tl.constexpr):
    # one program per (frame n, block of D): out[n, d] = n_c wg[d] + wb[d] (+ b[d]) + d_n gamma[i_n] W[d, i_n],
    # with the frame's scalars (torch_ops.sim_project.frame_coefficients) computed here in fp32: no extra launches
    n = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = offs < D
    i = tl.load(ids_ptr + n)
    r = 1.0 - tl.load(smooth_ptr + n).to(tl.float32)
    rstd = 1.0 / tl.sqrt(r * r * k_v + eps)
    nc = -(r * inv_v) * rstd
    cf = r * rstd
    if HAS_GAMMA:
        cf = cf * tl.load(gamma_ptr + i).to(tl.float32)
    col = tl.load(w_ptr + offs.to(tl.int64) * V + i, mask=mask, other=0.0).to(tl.float32)
    wg = tl.load(wgb_ptr + offs * 2, mask=mask, other=0.0).to(tl.float32)          # [D, 2] = W @ [gamma, beta]
    wb = tl.load(wgb_ptr + offs * 2 + 1, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        wb += tl.load(bias_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    out = nc * wg + wb + cf * col
    tl.store(out_ptr + n.to(tl.int64) * D + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_kernel(g_ptr, w_ptr, ids_ptr, coef_ptr, wg_ptr, dw_ptr, e_ptr, q_ptr, D, V, BLOCK_D: tl.constexpr,
                WRITE_DW: tl.constexpr):
    # one program per frame n: e[n] = W[:, i_n] . g[n], q[n] = (W gamma) . g[n], dW[:, i_n] += coef[n] g[n]
    n = tl.program_id(0)
    i = tl.load(ids_ptr + n)
    cf = tl.load(coef_ptr + n)
    e = tl.zeros([BLOCK_D], dtype=tl.float32)
    q = tl.zeros([BLOCK_D], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs = d0 + tl.arange(0, BLOCK_D)
        mask = offs < D
        g = tl.load(g_ptr + n.to(tl.int64) * D + offs, mask=mask, other=0.0).to(tl.float32)
        col = tl.load(w_ptr + offs.to(tl.int64) * V + i, mask=mask, other=0.0).to(tl.float32)
        wg = tl.load(wg_ptr + offs, mask=mask, other=0.0)
        e += g * col
        q += g * wg
        if WRITE_DW:
            tl.atomic_add(dw_ptr + offs.to(tl.int64) * V + i, cf * g, mask=mask)
    tl.store(e_ptr + n, tl.sum(e, axis=0))
    tl.store(q_ptr + n, tl.sum(q, axis=0))


class _SimProjectTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ids, smooth, weight, bias, gamma, beta, eps):
        # launches: the [V, 2] LayerNorm rows, one [D, V] x [V, 2] product (the op's only read of W), the kernel
        d, v = weight.shape
        flat = ids.reshape(-1).contiguous()
        sm = smooth.reshape(-1).contiguous()
        n = flat.numel()
        w = weight.contiguous()
        wgb = torch.mm(w, ln_rows(gamma, beta, v, w.dtype, w.device).t())                 # [D, 2]
        out = torch.empty(n, d, dtype=w.dtype, device=w.device)
        if n:
            _fwd_kernel[(n, triton.cdiv(d, _BLOCK_D))](
                out, w, flat, sm, gamma if gamma is not None else wgb, wgb, bias if bias is not None else wgb, d, v,
                (v - 1.0) / (v * v), 1.0 / v, eps, HAS_GAMMA=gamma is not None, HAS_BIAS=bias is not None,
                BLOCK_D=_BLOCK_D)
        ctx.save_for_backward(flat, sm, wgb, w, gamma, beta)
        ctx.eps, ctx.shape = eps, ids.shape
        return out.reshape(*ids.shape, d)

    @staticmethod
    def backward(ctx, grad_out):
        flat, sm, wgb, w, gamma, beta = ctx.saved_tensors
        d, v = w.shape
        n = flat.numel()
        n_c, dd, rstd = frame_coefficients(sm, v, ctx.eps)                      # [N] fp32 (as the kernel's)
        gi = gamma.float().index_select(0, flat) if gamma is not None else torch.ones_like(dd)
        wg = wgb[:, 0].float().contiguous()
        need_s, need_w, need_b, need_g, need_be = (ctx.needs_input_grad[i] for i in (1, 2, 3, 4, 5))
        g = grad_out.reshape(n, d).contiguous()
        g32 = g.float()
        gb = g32.sum(0)                                                         # [D]
        u = torch.mv(g32.t(), n_c)                                              # [D]
        ug = torch.stack([u, gb], 1)                                            # [D, 2]
        if need_w:   # rank-2 dense part u (x) gamma + gb (x) beta; the kernel adds the column scatter
            dw = torch.mm(ug, ln_rows(gamma, beta, v, torch.float32, w.device))
        else:
            dw = torch.empty(1, dtype=torch.float32, device=w.device)
        e = torch.empty(n, dtype=torch.float32, device=w.device)
        q = torch.empty(n, dtype=torch.float32, device=w.device)
        if n:
            _bwd_kernel[(n,)](g, w, flat, (dd * gi).contiguous(), wg, dw, e, q, d, v, BLOCK_D=_BLOCK_D,
                              WRITE_DW=need_w)
        d_gamma = d_beta = d_s = None
        if need_g or need_be:
            d_gb = torch.mm(ug.t().to(w.dtype), w).float()                      # [2, V]: W^T u, W^T gb in one pass
            if need_g:
                d_gamma = d_gb[0].index_add_(0, flat, dd * e).to(gamma.dtype)
            if need_be:
                d_beta = d_gb[1].to(beta.dtype)
        if need_s:
            d_s = (ctx.eps * rstd.pow(3) * (q / v - gi * e)).reshape(ctx.shape).to(grad_out.dtype)
        return (None, d_s, dw.to(w.dtype) if need_w else None, gb.to(w.dtype) if need_b else None, d_gamma, d_beta,
                None)


def sim_project_triton(ids: torch.Tensor, smooth: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                       ln_weight: torch.Tensor | None = None, ln_bias: torch.Tensor | None = None,
                       eps: float = 1e-5) -> torch.Tensor:
    """Triton closed-form sim_project (fp32 / bf16 / fp16 weights; fp64 uses the vectorised PyTorch path)."""
    check_sim_project_inputs(ids, smooth, weight, bias, ln_weight, ln_bias, eps)
    if weight.dtype == torch.float64:
        return sim_project_fused(ids, smooth, weight, bias, ln_weight, ln_bias, eps)
    return _SimProjectTriton.apply(ids, smooth, weight, bias, ln_weight, ln_bias, eps)
