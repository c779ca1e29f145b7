"""Triton `psd_compress`: one kernel for the per-frame argmax over V, PyTorch on the small [B, T] plan, one kernel
that writes every output slot (mean of its run of frames, zeros in padding) for probs and again for features.
Backward is the plan's gather (tasu.kernels.torch_ops.psd.spread_grad). Semantics: tasu.kernels.torch_ops.psd.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tasu.kernels.torch_ops.psd import check_psd_inputs, plan_psd, psd_compress_vectorised, spread_grad

_BLOCK_V = 1024
_BLOCK_C = 512


@triton.jit
def _argmax_kernel(p_ptr, out_ptr, V, BLOCK_V: tl.constexpr):
    # one program per frame; each lane keeps its first maximum, the smallest index among the best lanes wins
    f = tl.program_id(0)
    base = p_ptr + f.to(tl.int64) * V
    best = tl.full([BLOCK_V], float("-inf"), tl.float32)
    arg = tl.zeros([BLOCK_V], dtype=tl.int32)
    for v0 in range(0, V, BLOCK_V):
        offs = v0 + tl.arange(0, BLOCK_V)
        x = tl.load(base + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
        take = x > best
        best = tl.where(take, x, best)
        arg = tl.where(take, offs, arg)
    top = tl.max(best, axis=0)
    first = tl.min(tl.where(best == top, arg, V), axis=0)
    tl.store(out_ptr + f, first.to(tl.int64))


@triton.jit
def _merge_kernel(x_ptr, out_ptr, src_ptr, cnt_ptr, C, BLOCK_C: tl.constexpr):
    # one program per (output slot, block of C): mean of x[src .. src + cnt) (zeros when cnt == 0)
    slot = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = offs < C
    src = tl.load(src_ptr + slot)
    cnt = tl.load(cnt_ptr + slot)
    acc = tl.zeros([BLOCK_C], dtype=tl.float32)
    for j in range(0, cnt):
        acc += tl.load(x_ptr + (src + j) * C + offs, mask=mask, other=0.0).to(tl.float32)
    mean = acc / tl.maximum(cnt, 1).to(tl.float32)
    tl.store(out_ptr + slot.to(tl.int64) * C + offs, mean.to(out_ptr.dtype.element_ty), mask=mask)


def _merge(x: torch.Tensor, plan) -> torch.Tensor:
    b, t, c = x.shape
    out = torch.empty(b, plan.t_out, c, dtype=x.dtype, device=x.device)
    if b * t == 0 or c == 0:
        return out.zero_()
    _merge_kernel[(b * plan.t_out, triton.cdiv(c, _BLOCK_C))](x.contiguous(), out, plan.src_first, plan.slot_count,
                                                              c, BLOCK_C=_BLOCK_C)
    return out


class _PSDTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, probs, features, plan):
        ctx.plan, ctx.t_in = plan, probs.shape[1]
        return _merge(probs, plan), (_merge(features, plan) if features is not None else None)

    @staticmethod
    def backward(ctx, g_probs, g_feat):
        d_probs = spread_grad(g_probs, ctx.plan, ctx.t_in) if ctx.needs_input_grad[0] else None
        d_feat = spread_grad(g_feat, ctx.plan, ctx.t_in) if ctx.needs_input_grad[1] and g_feat is not None else None
        return d_probs, d_feat, None


def frame_argmax_triton(probs: torch.Tensor) -> torch.Tensor:
    b, t, v = probs.shape
    out = torch.empty(b, t, dtype=torch.long, device=probs.device)
    if b * t:
        _argmax_kernel[(b * t,)](probs.contiguous(), out, v, BLOCK_V=_BLOCK_V)
    return out


def psd_compress_triton(probs: torch.Tensor, lengths: torch.Tensor, features: torch.Tensor | None = None,
                        blank_id: int = 0, blank_threshold: float = 0.9):
    """Triton PSD (fp32 / bf16 / fp16; fp64 uses the vectorised PyTorch path)."""
    check_psd_inputs(probs, lengths, features, blank_id, blank_threshold)
    if probs.dtype == torch.float64 or (features is not None and features.dtype == torch.float64):
        return psd_compress_vectorised(probs, lengths, features, blank_id, blank_threshold)
    plan = plan_psd(frame_argmax_triton(probs), probs[..., blank_id], lengths, blank_id, blank_threshold, probs.dtype)
    out_p, out_f = _PSDTriton.apply(probs, features, plan)
    return out_p, out_f, plan.lengths.to(lengths.device)
