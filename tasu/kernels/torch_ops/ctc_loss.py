"""`ctc_loss` on raw logits: log-softmax in fp32, memory bounded for large vocabularies.

Reference: F.ctc_loss(log_softmax(logits.float()).transpose(0, 1), ...) — it holds an fp32 [T, B, V] copy (and its
gradient): 9.7 GB at B=16, T=1000, V=151936.

Reduced path (exact): CTC only ever reads, per frame, the log-probabilities of the blank and of the labels of the
sample's own target. Per sample we therefore build a normalised distribution over 2 + S reduced classes
    0 = blank,  1 + s = label of target position s (duplicates and padding -> an impossible class),
    1 + S = "every other vocabulary entry" (mass m = 1 - sum of the other classes),
from a pass over T in blocks of frames (fp32 log-sum-exp and column gathers; no [T, B, V] tensor), run the stock
F.ctc_loss on [T, B, 2 + S], and chain its gradient G back to the logits block by block (p = softmax):
    dlogit_v = sum_c G_c [v == v_c] + G_other [v unused] p_v / m - p_v sum_c G_c.
Because the reduced distribution is normalised, this is exact whatever convention the CTC backend uses for
its log-prob gradient (PyTorch's native and cuDNN kernels return d/d(pre-log-softmax)).
Repeated labels keep their CTC meaning: a repeated label maps to the reduced class of its first occurrence.

When V <= 2 + S (a character vocabulary) nothing is saved: the plain definition runs instead.
Targets: padded [B, S] or concatenated 1-D (as F.ctc_loss). Reductions "none" | "mean" | "sum" as F.ctc_loss.
The `triton` (CUDA) variant runs the native CTC kernel on the reduced problem in float64 (exact, and cheap at
[B, T, 2 + S]); cuDNN's CTC was tried and is not used (see _native_ctc_fp64).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_BLOCK_BYTES = 8 << 20       # fp32 [B, frames, V] block: a few MB stays in cache across its 3 passes
_IMPOSSIBLE = -1e30          # log-prob of reduced classes that no path may use (finite: keeps CTC grads NaN-free)
_REDUCTIONS = ("none", "mean", "sum")


def check_ctc_inputs(logits: torch.Tensor, targets: torch.Tensor, input_lengths: torch.Tensor,
                     target_lengths: torch.Tensor, blank: int, reduction: str) -> None:
    if logits.dim() != 3 or not logits.is_floating_point():
        raise ValueError(f"ctc_loss: logits must be a float [B, T, V] tensor, got {tuple(logits.shape)} {logits.dtype}")
    b, t, v = logits.shape
    for name, x in (("input_lengths", input_lengths), ("target_lengths", target_lengths)):
        if x.shape != (b,) or x.is_floating_point():
            raise ValueError(f"ctc_loss: {name} must be an integer [{b}] tensor, got {tuple(x.shape)} {x.dtype}")
    if targets.is_floating_point() or targets.dim() not in (1, 2) or (targets.dim() == 2 and targets.shape[0] != b):
        raise ValueError(f"ctc_loss: targets must be integer [B={b}, S] (padded) or 1-D (concatenated), got "
                         f"{tuple(targets.shape)} {targets.dtype}")
    if not 0 <= blank < v:
        raise ValueError(f"ctc_loss: blank {blank} is outside the vocabulary [0, {v})")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"ctc_loss: reduction must be one of {_REDUCTIONS}, got '{reduction}'")


def ctc_loss_reference(logits: torch.Tensor, targets: torch.Tensor, input_lengths: torch.Tensor,
                       target_lengths: torch.Tensor, blank: int = 0, reduction: str = "mean",
                       zero_infinity: bool = False) -> torch.Tensor:
    """Definition: F.ctc_loss over the fp32 (or fp64) log-softmax of the logits."""
    check_ctc_inputs(logits, targets, input_lengths, target_lengths, blank, reduction)
    lp = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1).transpose(0, 1)
    return F.ctc_loss(lp, targets, input_lengths, target_lengths, blank, reduction, zero_infinity)


def padded_targets(targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """[B, S] padded targets (S = max target length) from padded or concatenated targets."""
    tl = target_lengths.to(targets.device).long()
    s = int(tl.max()) if tl.numel() else 0
    if targets.dim() == 2:
        return targets[:, :s].long()
    offsets = torch.cumsum(tl, 0) - tl                                          # [B]
    pos = offsets.unsqueeze(1) + torch.arange(s, device=targets.device)         # [B, S]
    valid = torch.arange(s, device=targets.device) < tl.unsqueeze(1)
    return torch.where(valid, targets.long()[pos.clamp_max(max(targets.numel() - 1, 0))], 0)


@dataclass
class ReducedProblem:
    cols: torch.Tensor          # [B, 1 + S] vocabulary id read by each reduced class (blank, then targets)
    live: torch.Tensor          # [B, 1 + S] bool: class is blank or a first occurrence of a valid target label
    used: torch.Tensor          # [B, V] bool: vocabulary ids that have their own reduced class
    targets: torch.Tensor       # [B, S] long reduced targets (1 + first-occurrence position)


def reduce_problem(targets: torch.Tensor, target_lengths: torch.Tensor, vocab: int, blank: int) -> ReducedProblem:
    tgt = padded_targets(targets, target_lengths)                               # [B, S]
    b, s = tgt.shape
    dev = tgt.device
    valid = torch.arange(s, device=dev) < target_lengths.to(dev).unsqueeze(1)   # [B, S]
    if bool(((tgt == blank) & valid).any()) or bool(((tgt < 0) | (tgt >= vocab))[valid].any()):
        raise ValueError(f"ctc_loss: targets must be labels in [0, {vocab}) other than the blank {blank}")
    tgt = torch.where(valid, tgt, blank)
    same = (tgt.unsqueeze(2) == tgt.unsqueeze(1)) & torch.ones(s, s, dtype=torch.bool, device=dev).tril()  # [B,S,S]
    first = same.to(torch.uint8).argmax(-1)                                     # [B, S] first s' <= s, same label
    is_first = (first == torch.arange(s, device=dev)) & valid
    cols = torch.cat([torch.full((b, 1), blank, dtype=torch.long, device=dev), tgt], dim=1)
    live = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=dev), is_first], dim=1)
    used = torch.zeros(b, vocab, dtype=torch.bool, device=dev).scatter_(1, cols, True)
    return ReducedProblem(cols=cols, live=live, used=used, targets=torch.where(valid, 1 + first, 1))


def _frame_blocks(b: int, t: int, v: int) -> list[slice]:
    rows = max(1, _BLOCK_BYTES // max(1, 4 * b * v))
    return [slice(r, min(r + rows, t)) for r in range(0, t, rows)]


def reduced_log_probs(logits: torch.Tensor, prob: ReducedProblem) -> tuple[torch.Tensor, ...]:
    """([B, T, 2 + S] reduced log-probs, lse over V [B, T], 1 / other-mass [B, T] (0 if none)), all >= fp32.

    One pass over the logits in frame blocks (log-sum-exp + column gather). The "other" class gets
    log(1 - sum of the live classes' probabilities): no path uses it, it only makes the reduced distribution
    sum to one, so its fp32 cancellation error (~1e-7 absolute) is harmless.
    """
    b, t, v = logits.shape
    acc = torch.promote_types(logits.dtype, torch.float32)
    k = prob.cols.shape[1]
    lse = torch.empty(b, t, dtype=acc, device=logits.device)
    picked = torch.empty(b, t, k, dtype=acc, device=logits.device)
    for blk in _frame_blocks(b, t, v):
        x = logits[:, blk].to(acc)                                              # [B, f, V] (no copy for fp32)
        lse[:, blk] = torch.logsumexp(x, -1)
        picked[:, blk] = x.gather(2, prob.cols.unsqueeze(1).expand(b, x.shape[1], k))
    lp = (picked - lse.unsqueeze(-1)).masked_fill_(~prob.live.unsqueeze(1), float("-inf"))   # [B, T, 1 + S]
    other = 1.0 - lp.exp().sum(-1)                                              # [B, T] mass of unused ids
    has_other = other > 0
    lp_other = torch.where(has_other, other.clamp_min(1e-38).log(), torch.full_like(other, _IMPOSSIBLE))
    inv_other = torch.where(has_other, 1.0 / other.clamp_min(1e-38), torch.zeros_like(other))
    red = torch.cat([lp.clamp_min(_IMPOSSIBLE), lp_other.unsqueeze(-1)], dim=-1)
    return red, lse, inv_other


class _ReducedCTCFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, prob, input_lengths, target_lengths, reduction, zero_infinity, ctc_call):
        red, lse, inv_other = reduced_log_probs(logits, prob)
        with torch.enable_grad():
            leaf = red.detach().requires_grad_()
            loss = ctc_call(leaf, prob, input_lengths, target_lengths, reduction, zero_infinity)
        ctx.save_for_backward(logits, lse, inv_other, leaf, loss)
        ctx.prob = prob
        return loss.detach()

    @staticmethod
    def backward(ctx, grad_loss):
        logits, lse, inv_other, leaf, loss = ctx.saved_tensors
        prob = ctx.prob
        (g_red,) = torch.autograd.grad(loss, leaf, grad_loss)                  # [B, T, 2 + S]
        b, t, v = logits.shape
        k = prob.cols.shape[1]
        live = prob.live.unsqueeze(1)                                           # [B, 1, 1 + S]
        g_cols = g_red[..., :k] * live                                          # impossible classes carry nothing
        g_other = g_red[..., k]                                                 # [B, T]
        # d logit_v = p_v (G_o / m - sum G) for unused v;  + G_c - p_c G_o / m at the live column of v
        o_coef = g_other * inv_other                                            # [B, T]
        coef = (o_coef - g_cols.sum(-1) - g_other).unsqueeze(-1)                # [B, T, 1]
        fix = g_cols - leaf.detach()[..., :k].exp() * live * o_coef.unsqueeze(-1)   # [B, T, 1 + S]
        d = torch.empty_like(logits)
        for blk in _frame_blocks(b, t, v):
            x = logits[:, blk]
            out = d[:, blk] if d.dtype == lse.dtype else torch.empty(x.shape, dtype=lse.dtype, device=x.device)
            torch.sub(x.to(lse.dtype), lse[:, blk].unsqueeze(-1), out=out)
            out.exp_().mul_(coef[:, blk])                                       # p * coef
            out.scatter_add_(2, prob.cols.unsqueeze(1).expand(b, x.shape[1], k), fix[:, blk])
            if out.data_ptr() != d[:, blk].data_ptr():
                d[:, blk] = out
        return d, None, None, None, None, None, None


def _native_ctc(red, prob, input_lengths, target_lengths, reduction, zero_infinity):
    return F.ctc_loss(red.transpose(0, 1), prob.targets, input_lengths, target_lengths, 0, reduction, zero_infinity)


def _native_ctc_fp64(red, prob, input_lengths, target_lengths, reduction, zero_infinity):
    """PyTorch's native CTC on the reduced [B, T, 2 + S] problem in float64: cheap at that size, and exact where the
    native CUDA kernel's fp32 gradients are ~2e-5 (relative) off, over the equivalence tests' 1e-5 bound.
    cuDNN's CTC is not used: on torch 2.11 + cu130 (H100, 2026-11-22) the call PyTorch's own test accepted for
    cuDNN returned a loss unlike the reference's (benchmarks/README.md)."""
    loss = F.ctc_loss(red.double().transpose(0, 1), prob.targets, input_lengths, target_lengths, 0, reduction,
                      zero_infinity)
    return loss.to(red.dtype)


def plain_is_cheaper(vocab: int, target_lengths: torch.Tensor) -> bool:
    """A small vocabulary (characters) is no larger than the reduced one (2 + S classes): run the definition."""
    return vocab <= 2 + (int(target_lengths.max()) if target_lengths.numel() else 0)


def _reduced(logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity, ctc_call):
    check_ctc_inputs(logits, targets, input_lengths, target_lengths, blank, reduction)
    if plain_is_cheaper(logits.shape[-1], target_lengths):
        return ctc_loss_reference(logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity)
    prob = reduce_problem(targets, target_lengths, logits.shape[-1], blank)
    return _ReducedCTCFn.apply(logits, prob, input_lengths, target_lengths, reduction, zero_infinity, ctc_call)


def ctc_loss_reduced(logits: torch.Tensor, targets: torch.Tensor, input_lengths: torch.Tensor,
                     target_lengths: torch.Tensor, blank: int = 0, reduction: str = "mean",
                     zero_infinity: bool = False) -> torch.Tensor:
    """Exact CTC over the reduced per-sample vocabulary (native CTC kernel, any device)."""
    return _reduced(logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity, _native_ctc)


def ctc_loss_cuda(logits: torch.Tensor, targets: torch.Tensor, input_lengths: torch.Tensor,
                  target_lengths: torch.Tensor, blank: int = 0, reduction: str = "mean",
                  zero_infinity: bool = False) -> torch.Tensor:
    """The reduced CTC (one pass over the [B, T, V] logits) with the native CTC kernel in float64 on [B, T, 2 + S]."""
    return _reduced(logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity,
                    _native_ctc_fp64)
