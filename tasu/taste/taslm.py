"""TASLM pieces around a causal LLM (the LLM itself, e.g. an HF model + peft LoRA, lives elsewhere).

Joint text/speech sequence, one step per text token: the input at position i is the text token embedding plus the
(delayed) speech embedding; from the hidden state [B, L, H] the LM predicts the next text token (its own LM head)
and, through `SpeechHeads`, the N RVQ codes of the speech slot of the next position.

Delay: speech codes sit `delay` positions to the right of the text token they belong to, so when the model emits
the speech of token i it has already seen (generated) text tokens up to i + delay: the text leads, as in TASLM.

    text      t0  t1  t2  t3  <pad>...                 (the caller pads text to L + delay)
    speech    --  c0  c1  c2  c3                       delay = 1, "--" = PAD_CODE

Convention: PAD_CODE = -1 marks "no speech code here": `SpeechEmbedding` maps it to a zero vector and
`taslm_loss` ignores it as a target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PAD_CODE = -1


def _check_codes(codes: Tensor, text_lengths: Tensor, name: str) -> None:
    if codes.dim() != 3:
        raise ValueError(f"{name}: codes must be [B, L, N], got shape {tuple(codes.shape)}")
    if text_lengths.shape != codes.shape[:1]:
        raise ValueError(f"{name}: text_lengths must be [B={codes.shape[0]}], got {tuple(text_lengths.shape)}")
    if int(text_lengths.min()) < 0 or int(text_lengths.max()) > codes.shape[1]:
        raise ValueError(f"{name}: text_lengths must be in [0, L={codes.shape[1]}], got "
                         f"[{int(text_lengths.min())}, {int(text_lengths.max())}]")


def delay_codes(codes: Tensor, text_lengths: Tensor, delay: int, pad_code: int = PAD_CODE) -> Tensor:
    """codes [B, L, N] (one row of N codes per text token) -> [B, L + delay, N] with
    out[b, i + delay] = codes[b, i] for i < text_lengths[b] and `pad_code` everywhere else."""
    _check_codes(codes, text_lengths, "delay_codes")
    if delay < 0:
        raise ValueError(f"delay_codes: taste.delay must be >= 0, got {delay}")
    b, seq, n = codes.shape
    valid = torch.arange(seq, device=codes.device).unsqueeze(0) < text_lengths.to(codes.device).unsqueeze(1)
    out = codes.new_full((b, seq + delay, n), pad_code)
    out[:, delay:] = codes.masked_fill(~valid.unsqueeze(-1), pad_code)
    return out


def undelay_codes(delayed: Tensor, text_lengths: Tensor, delay: int, pad_code: int = PAD_CODE) -> Tensor:
    """Inverse of `delay_codes`: [B, L + delay, N] -> [B, L, N] (positions >= text_lengths get `pad_code`)."""
    if delayed.dim() != 3 or delayed.shape[1] < delay:
        raise ValueError(f"undelay_codes: expected [B, L + {delay}, N], got {tuple(delayed.shape)}")
    codes = delayed[:, delay:]
    _check_codes(codes, text_lengths, "undelay_codes")
    valid = torch.arange(codes.shape[1], device=codes.device).unsqueeze(0) < text_lengths.to(codes.device).unsqueeze(1)
    return codes.masked_fill(~valid.unsqueeze(-1), pad_code)


class SpeechHeads(nn.Module):
    """N per-codebook classifiers over the LLM hidden state: [B, L, H] -> N x [B, L, K] logits."""

    def __init__(self, hidden: int, num_codebooks: int, codebook_size: int):
        super().__init__()
        self.heads = nn.ModuleList([nn.Linear(hidden, codebook_size) for _ in range(num_codebooks)])

    def forward(self, hidden_states: Tensor) -> list[Tensor]:
        return [head(hidden_states) for head in self.heads]


class SpeechEmbedding(nn.Module):
    """Input side: codes [B, L, N] -> [B, L, H], the sum over codebooks of a per-codebook embedding; PAD_CODE
    (any code < 0) contributes zero, so positions without speech add nothing to the text embedding."""

    def __init__(self, hidden: int, num_codebooks: int, codebook_size: int):
        super().__init__()
        self.codebook_size = codebook_size
        self.tables = nn.ModuleList([nn.Embedding(codebook_size, hidden) for _ in range(num_codebooks)])

    def forward(self, codes: Tensor) -> Tensor:
        if codes.dim() != 3 or codes.shape[-1] != len(self.tables):
            raise ValueError(f"SpeechEmbedding: codes must be [B, L, {len(self.tables)}], got {tuple(codes.shape)}")
        if int(codes.max()) >= self.codebook_size:
            raise ValueError(f"SpeechEmbedding: code {int(codes.max())} >= codebook_size {self.codebook_size}")
        out = 0
        for n, table in enumerate(self.tables):
            c = codes[..., n]
            out = out + table(c.clamp_min(0)) * (c >= 0).unsqueeze(-1).to(table.weight.dtype)
        return out


@dataclass
class TaslmLoss:
    """total = w_text * text + w_speech * mean(per_codebook); per_codebook [N]."""

    total: Tensor
    text: Tensor
    speech: Tensor
    per_codebook: Tensor


def taslm_loss(text_logits: Tensor, text_targets: Tensor, speech_logits: list[Tensor], speech_targets: Tensor,
               w_text: float = 1.0, w_speech: float = 1.0, text_ignore_index: int = -100) -> TaslmLoss:
    """Weighted joint loss. Logits and targets are already aligned (the caller shifts for next-token prediction).

    text_logits [B, L, V], text_targets [B, L] (text_ignore_index = ignored); speech_logits N x [B, L, K],
    speech_targets [B, L, N] (codes < 0, e.g. PAD_CODE, are ignored). Each CE is a mean over its non-ignored
    positions; a codebook with no target at all contributes 0."""
    if speech_targets.dim() != 3 or speech_targets.shape[-1] != len(speech_logits):
        raise ValueError(f"taslm_loss: speech_targets must be [B, L, N={len(speech_logits)}], "
                         f"got {tuple(speech_targets.shape)}")
    if text_logits.shape[:2] != text_targets.shape:
        raise ValueError(f"taslm_loss: text_logits {tuple(text_logits.shape)} do not match targets "
                         f"{tuple(text_targets.shape)}")
    text = _masked_ce(text_logits, text_targets, text_targets != text_ignore_index)
    per = []
    for n, logits in enumerate(speech_logits):
        tgt = speech_targets[..., n]
        if logits.shape[:2] != tgt.shape:
            raise ValueError(f"taslm_loss: speech_logits[{n}] {tuple(logits.shape)} do not match targets "
                             f"{tuple(tgt.shape)}")
        per.append(_masked_ce(logits, tgt, tgt >= 0))
    per_t = torch.stack(per)
    speech = per_t.mean()
    return TaslmLoss(total=w_text * text + w_speech * speech, text=text, speech=speech, per_codebook=per_t)


def _masked_ce(logits: Tensor, targets: Tensor, keep: Tensor) -> Tensor:
    if not bool(keep.any()):
        return logits.sum() * 0.0                                          # keeps the graph, contributes 0
    return F.cross_entropy(logits[keep].float(), targets[keep])
