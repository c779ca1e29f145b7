"""Fused ops with one implementation per backend (see tasu.kernels.dispatch for the selection rules).

    sim_project(ids, smooth, weight, bias=None, ln_weight=None, ln_bias=None, eps=1e-5) -> [..., D]
        LayerNorm(V) + Linear(V, D) of simulated frames (1 - s) onehot(i) + s / V, exact, O(N D) per frame.
    psd_compress(probs, lengths, features=None, blank_id=0, blank_threshold=0.9) -> (probs', features', lengths')
        batched PSD of [B, T, V] posteriors (+ [B, T, D] features), no per-frame loop.
    posterior_embed(logits, embedding, top_k=None) -> [..., H]
        LegoSLM: softmax(logits) @ E exactly, or renormalised top-k as an embedding-bag.
    ctc_loss(logits, targets, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=False)
        CTC on raw logits, log-softmax in fp32, memory bounded for large vocabularies.

Each call dispatches through `get_op(name)`; pass an implementation to `get_op` to pin one.
"""

from __future__ import annotations

from tasu.kernels.config import KernelsConfig
from tasu.kernels.dispatch import IMPLS, OPS, configure, get_op, resolve


def sim_project(ids, smooth, weight, bias=None, ln_weight=None, ln_bias=None, eps: float = 1e-5):
    return get_op("sim_project")(ids, smooth, weight, bias, ln_weight, ln_bias, eps)


def psd_compress(probs, lengths, features=None, blank_id: int = 0, blank_threshold: float = 0.9):
    return get_op("psd_compress")(probs, lengths, features, blank_id, blank_threshold)


def posterior_embed(logits, embedding, top_k: int | None = None):
    return get_op("posterior_embed")(logits, embedding, top_k)


def ctc_loss(logits, targets, input_lengths, target_lengths, blank: int = 0, reduction: str = "mean",
             zero_infinity: bool = False):
    return get_op("ctc_loss")(logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity)


__all__ = ["IMPLS", "OPS", "KernelsConfig", "configure", "ctc_loss", "get_op", "posterior_embed", "psd_compress",
           "resolve", "sim_project"]
