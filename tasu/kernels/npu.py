"""Ascend NPU implementations. The Ascend adapter's guarded import and device check live in the backend facade
(tasu.backend.npu_available); nothing here imports it or names its device module.

NOT verified on NPU hardware: the adapter needs Huawei's CANN libraries, which no registry carries, so this module
is exercised here only through the dispatch tests (with a faked backend) and by running the same code on CPU.

The adapter registers its kernels behind the ordinary aten ops, so the NPU path is the vectorised PyTorch path
restricted to ops that the adapter documents (op-plugin): index_select / index_add / scatter for sim_project and
psd_compress, mm + softmax for posterior_embed; F.ctc_loss dispatches to aclnnCtcLoss. Two choices differ from
the cpu path: top-k posterior_embed gathers embedding rows and uses bmm instead of F.embedding_bag (no NPU
embedding_bag kernel is documented), and ctc_loss keeps padded int64 targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tasu.kernels.torch_ops.ctc_loss import ctc_loss_reduced
from tasu.kernels.torch_ops.posterior_embed import _acc, check_posterior_embed_inputs, posterior_embed_fused
from tasu.kernels.torch_ops.psd import psd_compress_vectorised
from tasu.kernels.torch_ops.sim_project import sim_project_fused


def npu_available() -> bool:
    """The Ascend adapter imports and sees a device (the guarded check lives in the backend facade)."""
    try:
        from tasu.backend import npu_available as backend_npu_available
    except ImportError:
        return False
    return backend_npu_available()


def sim_project_npu(ids, smooth, weight, bias=None, ln_weight=None, ln_bias=None, eps=1e-5):
    """Closed-form sim_project (index_select / index_add / mv: aten kernels the Ascend op-plugin documents)."""
    return sim_project_fused(ids, smooth, weight, bias, ln_weight, ln_bias, eps)


def psd_compress_npu(probs, lengths, features=None, blank_id=0, blank_threshold=0.9):
    """Vectorised PSD (argmax, cumsum, index_select / index_add / index_copy on the NPU)."""
    return psd_compress_vectorised(probs, lengths, features, blank_id, blank_threshold)


class _TopKGatherFn(torch.autograd.Function):
    """Top-k posterior embedding as gather + batched matmul (no embedding_bag)."""

    @staticmethod
    def forward(ctx, logits, embedding, top_k):
        v, h = embedding.shape
        x = logits.reshape(-1, v)
        vals, idx = x.topk(top_k, dim=-1)                                     # [N, k]
        w = torch.softmax(vals.to(_acc(embedding)), dim=-1)                   # [N, k]
        rows = F.embedding(idx, embedding)                                    # [N, k, H]
        out = torch.bmm(w.to(embedding.dtype).unsqueeze(1), rows).squeeze(1)  # [N, H]
        ctx.save_for_backward(idx, w, embedding)
        ctx.logits_shape, ctx.logits_dtype = logits.shape, logits.dtype
        return out.reshape(*logits.shape[:-1], h)

    @staticmethod
    def backward(ctx, grad_out):
        idx, w, embedding = ctx.saved_tensors
        v, h = embedding.shape
        g = grad_out.reshape(-1, h).to(w.dtype)
        d_x = d_e = None
        if ctx.needs_input_grad[0]:
            ge = torch.bmm(F.embedding(idx, embedding).to(w.dtype), g.unsqueeze(-1)).squeeze(-1)   # [N, k]
            d_vals = w * (ge - (w * ge).sum(-1, keepdim=True))
            d_x = torch.zeros(idx.shape[0], v, dtype=ctx.logits_dtype, device=idx.device)
            d_x = d_x.scatter_(1, idx, d_vals.to(ctx.logits_dtype)).reshape(ctx.logits_shape)
        if ctx.needs_input_grad[1]:
            rows = (w.unsqueeze(-1) * g.unsqueeze(1)).reshape(-1, h)
            d_e = torch.zeros(v, h, dtype=w.dtype, device=g.device).index_add_(0, idx.reshape(-1), rows)
            d_e = d_e.to(embedding.dtype)
        return d_x, d_e, None


def posterior_embed_npu(logits, embedding, top_k=None):
    """Exact: row-blocked softmax @ E (mm). Top-k: topk + row gather + bmm."""
    check_posterior_embed_inputs(logits, embedding, top_k)
    if top_k is None:
        return posterior_embed_fused(logits, embedding, None)
    return _TopKGatherFn.apply(logits, embedding, top_k)


def ctc_loss_npu(logits, targets, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=False):
    """Reduced-vocabulary CTC; F.ctc_loss runs the Ascend aclnnCtcLoss on NPU tensors."""
    return ctc_loss_reduced(logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity)
