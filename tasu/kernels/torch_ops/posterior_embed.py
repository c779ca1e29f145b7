"""`posterior_embed` (LegoSLM): softmax(logits) x the LLM embedding matrix, exact or top-k.

    exact:  out[n] = sum_v softmax(logits[n])_v E[v]                          logits [..., V], E [V, H] -> [..., H]
    top-k:  out[n] = sum_{v in topk(logits[n])} softmax(logits[n, topk])_v E[v]  (probabilities renormalised over
            the k largest logits; the issue's range is k = 8 ... 32)
The reference materialises the [N, V] softmax and runs a dense einsum. The fused exact path takes a row-blocked
log-sum-exp, then walks V in column blocks (probabilities recomputed from the logits, also in backward; the
[N, V] softmax never exists): same O(N V H) time, memory O(N * block) instead of O(N V).
The top-k path is an embedding-bag: O(N k H) instead of O(N V H).
Math runs in >= fp32; the output has E's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_BLOCK_BYTES = 32 << 20   # fp32 temporaries per block in the exact path


def check_posterior_embed_inputs(logits: torch.Tensor, embedding: torch.Tensor, top_k: int | None) -> None:
    if logits.dim() < 1 or not logits.is_floating_point():
        raise ValueError(f"posterior_embed: logits must be a float [..., V] tensor, got {tuple(logits.shape)} "
                         f"{logits.dtype}")
    if embedding.dim() != 2 or embedding.shape[0] != logits.shape[-1]:
        raise ValueError(f"posterior_embed: embedding must be [V={logits.shape[-1]}, H], got {tuple(embedding.shape)}")
    if top_k is not None and not 1 <= top_k <= logits.shape[-1]:
        raise ValueError(f"posterior_embed: top_k must be in [1, V={logits.shape[-1]}] or None, got {top_k}")


def _acc(embedding: torch.Tensor) -> torch.dtype:
    return torch.promote_types(embedding.dtype, torch.float32)


def posterior_embed_reference(logits: torch.Tensor, embedding: torch.Tensor, top_k: int | None = None) -> torch.Tensor:
    """Definition: dense softmax (masked to the top-k logits and renormalised when top_k is set) x E."""
    check_posterior_embed_inputs(logits, embedding, top_k)
    acc = _acc(embedding)
    p = torch.softmax(logits.to(acc), dim=-1)                                  # [..., V]
    if top_k is not None:
        idx = logits.topk(top_k, dim=-1).indices
        p = p * torch.zeros_like(p).scatter_(-1, idx, 1.0)
        p = p / p.sum(-1, keepdim=True)
    return torch.einsum("...v,vh->...h", p, embedding.to(acc)).to(embedding.dtype)


def _blocks(total: int, per_block: int) -> list[slice]:
    per_block = max(1, per_block)
    return [slice(r, min(r + per_block, total)) for r in range(0, total, per_block)]


def row_lse(x: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """[N] log-sum-exp of the rows of x [N, V], in row blocks (torch.logsumexp would hold an [N, V] temporary)."""
    lse = torch.empty(x.shape[0], dtype=acc, device=x.device)
    for blk in _blocks(x.shape[0], _BLOCK_BYTES // (4 * x.shape[1])):
        lse[blk] = torch.logsumexp(x[blk].to(acc), dim=-1)
    return lse


class _ExactFn(torch.autograd.Function):
    # Column blocks of V: each block of E is read once (row blocks would stream all of E once per block), the
    # logits twice (log-sum-exp, then the block's probabilities exp(x - lse)); temporaries are [N, block].
    @staticmethod
    def forward(ctx, logits, embedding):
        v, h = embedding.shape
        x = logits.reshape(-1, v)
        acc = _acc(embedding)
        lse = row_lse(x, acc).unsqueeze(1)                                      # [N, 1]
        out = torch.zeros(x.shape[0], h, dtype=acc, device=x.device)
        for blk in _blocks(v, _BLOCK_BYTES // (4 * max(1, x.shape[0]))):
            p = torch.exp(x[:, blk].to(acc) - lse)                              # [N, c] softmax columns
            out.addmm_(p, embedding[blk].to(acc))                               # += P[:, c] @ E[c]
        ctx.save_for_backward(logits, embedding, lse, out)
        return out.to(embedding.dtype).reshape(*logits.shape[:-1], h)

    @staticmethod
    def backward(ctx, grad_out):
        logits, embedding, lse, out = ctx.saved_tensors
        v, h = embedding.shape
        x = logits.reshape(-1, v)
        acc = out.dtype
        g = grad_out.reshape(-1, h).to(acc)                                     # [N, H]
        need_x, need_e = ctx.needs_input_grad
        d_x = torch.empty_like(x) if need_x else None
        d_e = torch.empty(v, h, dtype=embedding.dtype, device=x.device) if need_e else None
        go = (g * out).sum(-1, keepdim=True)                                    # [N, 1] = g . out = sum_v p_v (g . E_v)
        for blk in _blocks(v, _BLOCK_BYTES // (4 * max(1, x.shape[0]))):
            p = torch.exp(x[:, blk].to(acc) - lse)                              # [N, c], recomputed
            if need_x:
                d_x[:, blk] = (p * (g @ embedding[blk].to(acc).t() - go)).to(x.dtype)   # softmax backward of g E^T
            if need_e:
                d_e[blk] = (p.t() @ g).to(embedding.dtype)                      # E grad: P^T g
        return (None if d_x is None else d_x.reshape(logits.shape), d_e)


class _TopKFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, embedding, top_k):
        v, h = embedding.shape
        x = logits.reshape(-1, v)
        acc = _acc(embedding)
        vals, idx = x.topk(top_k, dim=-1)                                       # [N, k]
        w = torch.softmax(vals.to(acc), dim=-1)                                 # [N, k] renormalised top-k probs
        out = F.embedding_bag(idx, embedding, per_sample_weights=w.to(embedding.dtype), mode="sum")   # [N, H]
        ctx.save_for_backward(idx, w, embedding)
        ctx.logits_shape, ctx.logits_dtype = logits.shape, logits.dtype
        return out.reshape(*logits.shape[:-1], h)

    @staticmethod
    def backward(ctx, grad_out):
        idx, w, embedding = ctx.saved_tensors
        v, h = embedding.shape
        g = grad_out.reshape(-1, h).to(w.dtype)                                 # [N, H]
        need_x, need_e = ctx.needs_input_grad[:2]
        d_x = d_e = None
        if need_x:
            ge = torch.einsum("nh,nkh->nk", g, F.embedding(idx, embedding).to(w.dtype))   # [N, k] g . E[idx]
            d_vals = w * (ge - (w * ge).sum(-1, keepdim=True))                  # softmax backward over the k logits
            d_x = torch.zeros(idx.shape[0], v, dtype=ctx.logits_dtype, device=idx.device)
            d_x = d_x.scatter_(1, idx, d_vals.to(ctx.logits_dtype)).reshape(ctx.logits_shape)
        if need_e:
            rows = (w.unsqueeze(-1) * g.unsqueeze(1)).reshape(-1, h)            # [N k, H]
            d_e = torch.zeros(v, h, dtype=w.dtype, device=g.device).index_add_(0, idx.reshape(-1), rows)
            d_e = d_e.to(embedding.dtype)
        return d_x, d_e, None


def posterior_embed_fused(logits: torch.Tensor, embedding: torch.Tensor, top_k: int | None = None) -> torch.Tensor:
    """Row-blocked exact product, or the top-k embedding-bag (any device); equals the reference."""
    check_posterior_embed_inputs(logits, embedding, top_k)
    if top_k is None:
        return _ExactFn.apply(logits, embedding)
    return _TopKFn.apply(logits, embedding, top_k)
