"""Exact first projector layer for simulated (sparse two-valued) posteriors, without materialising [B, T, V].

A CPS frame is x = (1 - s) * onehot(i) + s / V (see `tasu.types.Posteriors`). It has only two distinct values,
    a = 1 - s + s/V   at index i,      c = s/V   everywhere else,
so LayerNorm(V) followed by Linear(V, D) collapses to a column gather plus per-frame scalars:
    mean   mu  = 1/V                                   (x sums to 1)
    var        = (1 - s)^2 * (V - 1) / V^2             (biased variance, as nn.LayerNorm)
    n_a = (a - mu) / sqrt(var + eps),   n_c = (c - mu) / sqrt(var + eps)
    y_j = n_j * gamma_j + beta_j                       (LayerNorm output; n_j = n_a at j = i, n_c elsewhere)
    W @ y + b = n_c * (W @ gamma) + W @ beta + b + (n_a - n_c) * gamma_i * W[:, i]
W @ gamma and W @ beta are computed once per call (O(V * D)); each frame then costs O(D). The LayerNorm + Linear
form runs through the `sim_project` kernel op (tasu.kernels), whose backward writes grad W as a rank-2 update plus
one scatter-add into the used columns; gradients to gamma, beta, W and b are exact.
Memory: O(B*T*D + V + D) besides the weights and their gradients.
"""

from __future__ import annotations

import torch
from torch import nn

from tasu.kernels import get_op


def _check(ids: torch.Tensor, smooth: torch.Tensor, vocab_size: int, weight: torch.Tensor) -> None:
    if ids.dtype != torch.long or ids.dim() != 2:
        raise ValueError(f"ids must be a [B, T] long tensor, got {tuple(ids.shape)} {ids.dtype}")
    if smooth.shape != ids.shape:
        raise ValueError(f"smooth {tuple(smooth.shape)} must have the shape of ids {tuple(ids.shape)}")
    if weight.dim() != 2 or weight.shape[1] != vocab_size:
        raise ValueError(f"weight {tuple(weight.shape)} must be [D, V] with V = vocab size {vocab_size}")


def sim_layernorm_linear(ids: torch.Tensor, smooth: torch.Tensor, vocab_size: int, ln: nn.LayerNorm,
                         linear: nn.Linear) -> torch.Tensor:
    """linear(ln(x)) for the sparse frames x = (1-smooth)*onehot(ids) + smooth/V; ids, smooth [B, T] -> [B, T, D]."""
    if tuple(ln.normalized_shape) != (vocab_size,):
        raise ValueError(f"LayerNorm normalises {tuple(ln.normalized_shape)}, expected ({vocab_size},)")
    return sim_layernorm_linear_fn(ids, smooth, vocab_size, ln.weight, ln.bias, ln.eps, linear.weight, linear.bias)


def sim_layernorm_linear_fn(ids: torch.Tensor, smooth: torch.Tensor, vocab_size: int, gamma: torch.Tensor | None,
                            beta: torch.Tensor | None, eps: float, weight: torch.Tensor,
                            bias: torch.Tensor | None) -> torch.Tensor:
    """Functional form of `sim_layernorm_linear` (gamma/beta [V] or None, weight [D, V], bias [D] or None).

    Runs the `sim_project` kernel op (`tasu.kernels.get_op`, so `kernels.impl` picks the implementation): the
    closed form above with a fused backward whose weight gradient is one scatter-add into the V columns."""
    _check(ids, smooth, vocab_size, weight)
    return get_op("sim_project")(ids, smooth, weight, bias, gamma, beta, eps)


def sim_linear(ids: torch.Tensor, smooth: torch.Tensor, vocab_size: int, weight: torch.Tensor,
               bias: torch.Tensor | None = None) -> torch.Tensor:
    """weight @ x + bias for sparse frames (no LayerNorm): (1-s) * W[:, i] + (s/V) * W.sum(1) + b; -> [B, T, D]."""
    _check(ids, smooth, vocab_size, weight)
    s = smooth.to(weight.dtype).unsqueeze(-1)                   # [B, T, 1]
    cols = weight.index_select(1, ids.reshape(-1)).t().reshape(*ids.shape, weight.shape[0])
    out = (1.0 - s) * cols + (s / vocab_size) * weight.sum(dim=1)
    if bias is not None:
        out = out + bias
    return out
