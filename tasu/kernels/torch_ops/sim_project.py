"""`sim_project`: LayerNorm(V) + Linear(V, D) of simulated (two-valued) CTC frames, exact, without [N, V].

A simulated frame (tasu.types.Posteriors, sparse layout) is x = (1 - s) * onehot(i) + s / V. The reference builds
x densely and runs F.layer_norm + F.linear (O(N V D)). The fused path uses the closed form (same algebra as
tasu.align.sim_project): with r = 1 - s, k = (V - 1) / V^2, rstd = 1 / sqrt(r^2 k + eps),
    n_c = -(r / V) rstd        (normalised value off the peak)      d = r rstd      (peak minus off-peak)
    out[n] = n_c[n] (W @ gamma) + (W @ beta + b) + d[n] gamma[i_n] W[:, i_n]
and its hand-written backward (g = dL/dout [N, D]; u = sum_n n_c[n] g[n], gb = sum_n g[n], h[n] = d[n] gamma[i_n] g[n]):
    dW     = u (x) gamma + gb (x) beta  +  scatter-add of h[n] into column i_n      (fused per row block of W)
    dgamma = W^T u + scatter-add of d[n] (W[:, i_n] . g[n]) at i_n       dbeta = W^T gb       dbias = gb
    ds[n]  = eps rstd^3 ((g[n] . W gamma) / V - gamma[i_n] (W[:, i_n] . g[n]))
Cost per call: O(V D) for the parameter terms (W @ gamma, W^T u: unavoidable while W changes every step) plus
O(N D) per frame; memory besides weights and their gradients: O(N D), independent of V.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tasu.kernels.checks import check_ids_in_range

# Rows of W handled together so that one block stays in L2 while it is used 3 times (gemv, gemv, column gather).
_BLOCK_BYTES = 1 << 20


def check_sim_project_inputs(ids: torch.Tensor, smooth: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                             ln_weight: torch.Tensor | None, ln_bias: torch.Tensor | None, eps: float) -> None:
    if ids.dtype != torch.long:
        raise ValueError(f"sim_project: ids must be a long tensor, got {ids.dtype}")
    if smooth.shape != ids.shape or not smooth.is_floating_point():
        raise ValueError(f"sim_project: smooth must be a float tensor shaped like ids {tuple(ids.shape)}, "
                         f"got {tuple(smooth.shape)} {smooth.dtype}")
    if weight.dim() != 2 or weight.shape[1] < 2:
        raise ValueError(f"sim_project: weight must be [D, V] with V >= 2, got {tuple(weight.shape)}")
    d, v = weight.shape
    if bias is not None and bias.shape != (d,):
        raise ValueError(f"sim_project: bias must be [{d}], got {tuple(bias.shape)}")
    for name, t in (("ln_weight", ln_weight), ("ln_bias", ln_bias)):
        if t is not None and t.shape != (v,):
            raise ValueError(f"sim_project: {name} must be [{v}] (LayerNorm over the vocabulary), got {tuple(t.shape)}")
    if not eps > 0:
        raise ValueError(f"sim_project: eps must be > 0, got {eps}")
    check_ids_in_range(ids, v, "sim_project: ids")                      # no host sync on an accelerator


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of the per-frame math and accumulations: at least fp32 (fp64 stays fp64)."""
    return torch.promote_types(dtype, torch.float32)


def frame_coefficients(smooth: torch.Tensor, vocab_size: int, eps: float,
                       dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """Per-frame scalars (n_c, d, rstd) in `dtype`, each shaped like `smooth` (see the module docstring)."""
    v = float(vocab_size)
    r = 1.0 - smooth.to(dtype)
    rstd = torch.rsqrt(r * r * ((v - 1.0) / (v * v)) + eps)
    return -(r / v) * rstd, r * rstd, rstd


def sim_project_reference(ids: torch.Tensor, smooth: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor | None = None, ln_weight: torch.Tensor | None = None,
                          ln_bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Definition: dense x = (1-s) onehot(ids) + s/V [..., V] -> LayerNorm (fp32) -> Linear; -> [..., D]."""
    check_sim_project_inputs(ids, smooth, weight, bias, ln_weight, ln_bias, eps)
    v, acc = weight.shape[1], acc_dtype(weight.dtype)
    s = smooth.to(acc).unsqueeze(-1)
    x = (1.0 - s) * F.one_hot(ids, v).to(acc) + s / v                  # [..., V]
    y = F.layer_norm(x, (v,), None if ln_weight is None else ln_weight.to(acc),
                     None if ln_bias is None else ln_bias.to(acc), eps)
    return F.linear(y.to(weight.dtype), weight, bias)


def _row_blocks(weight: torch.Tensor) -> list[slice]:
    d, v = weight.shape
    if weight.device.type != "cpu":
        return [slice(0, d)]            # accelerators: one launch per op beats a Python loop over blocks
    rows = max(1, _BLOCK_BYTES // (v * weight.element_size()))
    return [slice(r, min(r + rows, d)) for r in range(0, d, rows)]


def ln_rows(gamma: torch.Tensor | None, beta: torch.Tensor | None, v: int, dtype: torch.dtype,
            device: torch.device) -> torch.Tensor:
    """[2, V] = (gamma, beta) in `dtype` (ones / zeros where the LayerNorm has no affine parameters)."""
    out = torch.empty(2, v, dtype=dtype, device=device)
    out[0] = 1.0 if gamma is None else gamma.detach()
    out[1] = 0.0 if beta is None else beta.detach()
    return out


def weight_pass(weight: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None,
                flat_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pass over W: (W @ gamma [D], W @ beta [D], W[:, ids] [D, N]), all in W's dtype.

    Per row block (in L2): one [rows, V] x [V, 2] product for both LayerNorm vectors (as fast as a single gemv:
    both are bound by reading W), then the column gather from the cached block."""
    d, v = weight.shape
    gb = ln_rows(gamma, beta, v, weight.dtype, weight.device).t()          # [V, 2]
    wgb = torch.empty(d, 2, dtype=weight.dtype, device=weight.device)
    cols = torch.empty(d, flat_ids.numel(), dtype=weight.dtype, device=weight.device)
    for blk in _row_blocks(weight):
        w = weight[blk]
        torch.mm(w, gb, out=wgb[blk])
        torch.index_select(w, 1, flat_ids, out=cols[blk])
    return wgb[:, 0], wgb[:, 1], cols


class _SimProjectFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ids, smooth, weight, bias, gamma, beta, eps):
        d, v = weight.shape
        flat = ids.reshape(-1)
        acc = acc_dtype(weight.dtype)
        n_c, dd, rstd = frame_coefficients(smooth.reshape(-1), v, eps, acc)  # [N] each
        wg, wb, cols = weight_pass(weight, gamma, beta, flat)                 # [D], [D], [D, N]
        wg, wb = wg.to(acc), wb.to(acc)
        if bias is not None:
            wb = wb + bias.to(acc)
        gi = gamma.to(acc).index_select(0, flat) if gamma is not None else torch.ones_like(dd)   # [N]
        coef = dd * gi                                                        # [N]
        out = cols.t().to(acc) * coef.unsqueeze(1)                            # [N, D] peak term
        out.addmm_(torch.stack([n_c, torch.ones_like(n_c)], 1), torch.stack([wg, wb]))   # + n_c wg + wb (rank 2)
        ctx.save_for_backward(flat, n_c, dd, gi, rstd, cols, wg, weight, gamma, beta)
        ctx.eps, ctx.shape = eps, ids.shape
        return out.to(weight.dtype).reshape(*ids.shape, d)

    @staticmethod
    def backward(ctx, grad_out):
        flat, n_c, dd, gi, rstd, cols, wg, weight, gamma, beta = ctx.saved_tensors
        d, v = weight.shape
        coef = dd * gi                                                        # [N]
        g = grad_out.reshape(-1, d).to(n_c.dtype)                             # [N, D]
        need_s, need_w, need_b, need_g, need_be = (ctx.needs_input_grad[i] for i in (1, 2, 3, 4, 5))
        gb = g.sum(0)                                                         # [D]
        u = torch.mv(g.t(), n_c)                                              # [D]
        # e[n] = W[:, i_n] . g[n]: the only per-frame quantity that needs W (taken from the saved columns)
        e = (cols.to(g.dtype) * g.t()).sum(0) if (need_s or need_g) else None       # [N]
        d_w = d_gamma = d_beta = None
        if need_w or need_g or need_be:
            d_w, d_gamma, d_beta = _param_grads(weight, gamma, beta, flat, g, coef, u, gb, need_w, need_g, need_be)
        if need_g:
            d_gamma.index_add_(0, flat, dd * e)                               # peak term: d[n] (W[:, i_n] . g[n])
        d_s = None
        if need_s:
            q = torch.mv(g, wg)                                               # [N] g[n] . (W gamma)
            d_s = (ctx.eps * rstd.pow(3) * (q / v - gi * e)).reshape(ctx.shape)
        return (None, _cast(d_s, grad_out), d_w, _cast(gb if need_b else None, weight), _cast(d_gamma, gamma),
                _cast(d_beta, beta), None)


def _cast(t: torch.Tensor | None, like: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None or like is None else t.to(like.dtype)


def _param_grads(weight, gamma, beta, flat, g, coef, u, gb, need_w, need_g, need_be):
    """dW, dgamma, dbeta (in g's dtype; dW in W's dtype) in one pass over the row blocks of W:
        dW[blk]                 = [u, gb][blk] @ [gamma; beta]  (one K=2 product writes the block)
                                  + scatter-add of h[n] = coef[n] g[n] into column i_n (the block is in cache)
        [dgamma; dbeta]        += [u, gb][blk]^T @ W[blk]       (reads the same block of W)"""
    d, v = weight.shape
    dev, acc = weight.device, g.dtype
    d_w = torch.empty_like(weight) if need_w else None
    ug = torch.stack([u, gb], 1)                                          # [D, 2]
    d_gb = torch.zeros(2, v, dtype=acc, device=dev) if (need_g or need_be) else None   # [2, V]
    rows_gb = ln_rows(gamma, beta, v, acc, dev) if need_w else None       # [2, V]
    h_t = (g * coef.unsqueeze(1)).t().contiguous() if need_w else None    # [D, N]: column updates
    for blk in _row_blocks(weight):
        if need_w:
            direct = d_w.dtype == acc
            blk_acc = d_w[blk] if direct else torch.empty(d_w[blk].shape, dtype=acc, device=dev)   # [rows, V]
            torch.mm(ug[blk], rows_gb, out=blk_acc)
            blk_acc.index_add_(1, flat, h_t[blk])
            if not direct:
                d_w[blk].copy_(blk_acc)
        if d_gb is not None:
            d_gb.addmm_(ug[blk].t(), weight[blk].to(acc))                 # no copy for fp32 weights
    d_gamma = d_gb[0] if need_g else None
    d_beta = d_gb[1] if need_be else None
    return d_w, d_gamma, d_beta


def sim_project_fused(ids: torch.Tensor, smooth: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                      ln_weight: torch.Tensor | None = None, ln_bias: torch.Tensor | None = None,
                      eps: float = 1e-5) -> torch.Tensor:
    """Closed form with a fused backward (vectorised PyTorch, any device); equals `sim_project_reference`."""
    check_sim_project_inputs(ids, smooth, weight, bias, ln_weight, ln_bias, eps)
    return _SimProjectFn.apply(ids, smooth, weight, bias, ln_weight, ln_bias, eps)
