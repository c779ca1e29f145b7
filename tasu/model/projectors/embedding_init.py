"""`init="embedding"`: start linear-silu so that each CTC unit lands on the LLM's embedding of that unit.

For a clean one-hot of unit i, LayerNorm (gamma = 1, beta = 0) gives n = n_c * 1 + (n_a - n_c) * e_i with the
closed-form n_a, n_c of `tasu.align.sim_project`. With Y [V, H] the targets (Y[0] = 0 for the blank,
Y[i] = E[ctc_to_llm_ids[i - 1]]) the first layer's linear core
    U = Y^T / (n_a - n_c),   c = -n_c * U @ 1            gives U @ n + c = Y[i]   exactly.
The SiLU is then bypassed by one of two constructions on the first hidden units:
- hidden >= 2H (exact): units [0, H) carry +Y[i], units [H, 2H) carry -Y[i], and fc2 = [I, -I]; since
  silu(y) - silu(-y) = y for every y, the projector outputs E[llm id] exactly.
- H <= hidden < 2H (approximate): units [0, H) carry alpha * Y[i] + m with m = 10 and alpha = 1 / max|Y|, and
  fc2 = I / alpha, fc2.bias = -m / alpha; silu(z) = z * sigmoid(z) ~ z for z ~ m, error <= ~1e-3 * max|Y|.
The remaining hidden units keep their random first layer and get zero fc2 columns: inert at the start, trainable.
LayerNorm removes a frame's mean and scale, so smoothed one-hots (s > 0) also land close to E[llm id]
(scaled by ~(1 - s) toward the mean embedding because of LayerNorm's eps). The blank lands on the zero vector.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tasu.model.projectors.base import check_llm_ids
from tasu.model.projectors.mlp import LinearSiLUProjector

_OFFSET = 10.0


@torch.no_grad()
def init_linear_silu_to_embeddings(proj: LinearSiLUProjector, embedding: Tensor, ctc_to_llm_ids: list[int]) -> str:
    """Initialise `proj` in place (see module docstring). embedding: [V_llm, H]. Returns "exact" or "offset"."""
    if proj.input_kind != "posteriors":
        raise ValueError("model.projector.init=embedding is defined for posteriors input only (not features)")
    v, hidden, h = proj.in_dim, proj.fc1.out_features, proj.out_dim
    if embedding.shape[1] != h:
        raise ValueError(f"LLM embedding width {embedding.shape[1]} != projector output {h}")
    if hidden < h:
        raise ValueError(f"model.projector.init=embedding needs model.projector.hidden >= the LLM hidden size {h} "
                         f"(got {hidden}); {2 * h} or more makes it exact")
    llm_ids = check_llm_ids(ctc_to_llm_ids, v, embedding.shape[0], "model.projector.init=embedding")
    w_dtype = proj.fc1.weight.dtype
    y = torch.zeros(v, h, dtype=torch.float64, device=embedding.device)
    y[1:] = embedding.index_select(0, llm_ids.to(embedding.device)).double()       # [V, H]; blank row 0

    proj.norm.reset_parameters()                                                    # gamma = 1, beta = 0
    inv_std = 1.0 / ((v - 1) / v**2 + proj.norm.eps) ** 0.5
    n_a, n_c = (1.0 - 1.0 / v) * inv_std, -(1.0 / v) * inv_std
    u = y.t() / (n_a - n_c)                                                         # [H, V]
    c = -n_c * u.sum(dim=1)                                                         # [H]

    dev = proj.fc1.weight.device
    eye = torch.eye(h, dtype=torch.float64)
    fc2_w = torch.zeros(h, hidden, dtype=torch.float64)
    proj.fc2.bias.zero_()
    if hidden >= 2 * h:
        mode = "exact"
        proj.fc1.weight[:h] = u.to(dev, w_dtype)
        proj.fc1.bias[:h] = c.to(dev, w_dtype)
        proj.fc1.weight[h:2 * h] = (-u).to(dev, w_dtype)
        proj.fc1.bias[h:2 * h] = (-c).to(dev, w_dtype)
        fc2_w[:, :h], fc2_w[:, h:2 * h] = eye, -eye
    else:
        mode = "offset"
        alpha = 1.0 / float(y.abs().max().clamp_min(1e-12))
        proj.fc1.weight[:h] = (alpha * u).to(dev, w_dtype)
        proj.fc1.bias[:h] = (alpha * c + _OFFSET).to(dev, w_dtype)
        fc2_w[:, :h] = eye / alpha
        proj.fc2.bias.fill_(-_OFFSET / alpha)
    proj.fc2.weight.copy_(fc2_w.to(dev, w_dtype))
    return mode
