"""Triton `sim_project`: per-frame column gather + combine (forward), column dot products + atomic scatter-add of
the frame's gradient into its W column (backward). W @ gamma, W @ beta, W^T u and the rank-2 dense part of dW
stay with cuBLAS gemv / outer products (one pass over W each). Formulas: tasu.kernels.torch_ops.sim_project.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tasu.kernels.torch_ops.sim_project import check_sim_project_inputs, frame_coefficients, sim_project_fused

_BLOCK_D = 128


@triton.jit
def _fwd_kernel(out_ptr, w_ptr, ids_ptr, nc_ptr, coef_ptr, wg_ptr, wb_ptr, D, V, BLOCK_D: tl.constexpr):
    # one program per (frame n, block of D): out[n, d] = n_c[n] wg[d] + wb[d] + coef[n] W[d, i_n]
    n = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = offs < D
    i = tl.load(ids_ptr + n)
    nc = tl.load(nc_ptr + n)
    cf = tl.load(coef_ptr + n)
    col = tl.load(w_ptr + offs.to(tl.int64) * V + i, mask=mask, other=0.0).to(tl.float32)
    wg = tl.load(wg_ptr + offs, mask=mask, other=0.0)
    wb = tl.load(wb_ptr + offs, mask=mask, other=0.0)
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
        d, v = weight.shape
        flat = ids.reshape(-1).contiguous()
        n = flat.numel()
        n_c, dd, rstd = frame_coefficients(smooth.reshape(-1), v, eps)          # [N] fp32
        gi = gamma.float().index_select(0, flat) if gamma is not None else torch.ones_like(dd)
        coef = (dd * gi).contiguous()
        w = weight.contiguous()
        # W @ gamma and W @ beta in one pass over W (the op's only O(V D) read)
        cols = [gamma if gamma is not None else torch.ones(v, device=w.device)] + ([beta] if beta is not None else [])
        prods = torch.mm(w, torch.stack(cols, 1).to(w.dtype)).float()                   # [D, 1 or 2]
        wg = prods[:, 0].contiguous()
        wb = prods[:, 1].contiguous() if beta is not None else torch.zeros(d, dtype=torch.float32, device=w.device)
        if bias is not None:
            wb += bias.float()
        out = torch.empty(n, d, dtype=w.dtype, device=w.device)
        if n:
            _fwd_kernel[(n, triton.cdiv(d, _BLOCK_D))](out, w, flat, n_c.contiguous(), coef, wg, wb, d, v,
                                                       BLOCK_D=_BLOCK_D)
        ctx.save_for_backward(flat, n_c, dd, gi, rstd, wg, w, gamma, beta)
        ctx.eps, ctx.shape = eps, ids.shape
        return out.reshape(*ids.shape, d)

    @staticmethod
    def backward(ctx, grad_out):
        flat, n_c, dd, gi, rstd, wg, w, gamma, beta = ctx.saved_tensors
        d, v = w.shape
        n = flat.numel()
        need_s, need_w, need_b, need_g, need_be = (ctx.needs_input_grad[i] for i in (1, 2, 3, 4, 5))
        g = grad_out.reshape(n, d).contiguous()
        g32 = g.float()
        gb = g32.sum(0)                                                         # [D]
        u = torch.mv(g32.t(), n_c)                                              # [D]
        if need_w:
            dw = torch.outer(u, gamma.float() if gamma is not None else torch.ones(v, device=w.device))
            if beta is not None:
                dw.addr_(gb, beta.float())
        else:
            dw = torch.empty(1, dtype=torch.float32, device=w.device)
        e = torch.empty(n, dtype=torch.float32, device=w.device)
        q = torch.empty(n, dtype=torch.float32, device=w.device)
        if n:
            _bwd_kernel[(n,)](g, w, flat, (dd * gi).contiguous(), wg, dw, e, q, d, v, BLOCK_D=_BLOCK_D,
                              WRITE_DW=need_w)
        d_gamma = d_beta = d_s = None
        if need_g:
            d_gamma = torch.mv(w.t(), u.to(w.dtype)).float().index_add_(0, flat, dd * e).to(gamma.dtype)
        if need_be:
            d_beta = torch.mv(w.t(), gb.to(w.dtype)).to(beta.dtype)
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
