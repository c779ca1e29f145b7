"""TASTE / TASLM metrics: unit reconstruction accuracy, token rate, bitrate, next-speech selection accuracy."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def unit_accuracy(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> float:
    """Fraction of positions where pred == target, over mask (True = counted; default all). pred/target [B, T]."""
    if pred.shape != target.shape:
        raise ValueError(f"unit_accuracy: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if mask is None:
        mask = torch.ones_like(target, dtype=torch.bool)
    elif mask.shape != target.shape:
        raise ValueError(f"unit_accuracy: mask {tuple(mask.shape)} does not match target {tuple(target.shape)}")
    n = int(mask.sum())
    if n == 0:
        raise ValueError("unit_accuracy: the mask selects no position")
    return float(((pred == target) & mask).sum()) / n


def tokens_per_second(token_lengths: Tensor | Sequence[int], durations_s: Tensor | Sequence[float]) -> float:
    """Corpus token rate: total tokens / total seconds of audio (not a mean of per-utterance rates)."""
    lengths = torch.as_tensor(token_lengths, dtype=torch.float64)
    durations = torch.as_tensor(durations_s, dtype=torch.float64)
    if lengths.shape != durations.shape or lengths.dim() != 1:
        raise ValueError(f"tokens_per_second: lengths {tuple(lengths.shape)} and durations "
                         f"{tuple(durations.shape)} must be matching 1-d sequences")
    if bool((durations < 0).any()) or float(durations.sum()) <= 0.0:
        raise ValueError("tokens_per_second: durations must be >= 0 with a positive total")
    return float(lengths.sum() / durations.sum())


def bitrate(codebook_sizes: Sequence[int], tokens_per_sec: float) -> float:
    """Bits per second of audio = tokens_per_sec * sum_n log2(K_n) (each token carries one code per codebook).
    E.g. 4 codebooks x 512 codes at 3.0 tokens/s: 3.0 * 4 * 9 = 108 bits/s."""
    if len(codebook_sizes) == 0 or any(int(k) < 1 for k in codebook_sizes):
        raise ValueError(f"bitrate: codebook_sizes must be a non-empty list of sizes >= 1, got {list(codebook_sizes)}")
    if tokens_per_sec < 0:
        raise ValueError(f"bitrate: tokens_per_sec must be >= 0, got {tokens_per_sec}")
    return tokens_per_sec * sum(math.log2(int(k)) for k in codebook_sizes)


def next_speech_selection_accuracy(scores: Tensor, true_index: Tensor) -> float:
    """Likelihood-based next-speech selection: the model picks the candidate with the highest score.

    scores [B, C] (log-likelihood of each candidate continuation; the caller decides on length normalisation),
    true_index [B] long. Ties are broken at random in expectation: a row whose true candidate ties with m - 1
    others for the maximum counts 1 / m, so a constant scorer gets exactly chance (1 / C)."""
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(f"next_speech_selection_accuracy: scores must be [B, C >= 2], got {tuple(scores.shape)}")
    if true_index.shape != scores.shape[:1]:
        raise ValueError(f"next_speech_selection_accuracy: true_index must be [B={scores.shape[0]}], "
                         f"got {tuple(true_index.shape)}")
    if int(true_index.min()) < 0 or int(true_index.max()) >= scores.shape[1]:
        raise ValueError(f"next_speech_selection_accuracy: true_index must be in [0, {scores.shape[1]})")
    if bool(torch.isnan(scores).any()):
        raise ValueError("next_speech_selection_accuracy: scores contain NaN")
    best = scores == scores.max(dim=1, keepdim=True).values                    # [B, C]
    hit = best.gather(1, true_index.long().unsqueeze(1)).squeeze(1).double()
    return float((hit / best.sum(dim=1).double()).mean())
