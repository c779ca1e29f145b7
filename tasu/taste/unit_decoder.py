"""Unit decoder: text tokens + their RVQ speech vectors (+ a speaker vector) -> discrete speech units.

Design (non-autoregressive, so one parallel pass trains every unit position; it learns a tiny CPU task in ~100
steps, where an autoregressive decoder would still be learning to align):

    memory  = Enc( Embedding(text) + speech + sinusoid(i) [+ W_s speaker] )        [B, L, D], i = token position
    query_t = W_q [ sinusoid(t) ; sinusoid(u_t) ] [+ W_s speaker]                  [B, T, D]
              u_t = (t + 0.5) * L_b / T_b - 0.5: unit t's position mapped onto the text axis
    per layer: self-attention over unit positions, cross-attention to memory with an additive diagonal prior
               -(i - u_t)^2 / (2 width^2) (width in text tokens; 0 = no prior), FFN
    logits  = Linear(LN(h))                                                       [B, T, U]

The prior makes unit t look at the tokens spoken around its relative position from the first step; content
attention corrects for uneven speaking rates. The number of units T_b is known in training; for generation a
length head regresses log(T_b / L_b) from the mean memory (trained with MSE alongside the unit cross-entropy).

Vocoding is out of scope: `Vocoder` is the interface a units -> waveform model (e.g. a unit HiFi-GAN) must meet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tasu.taste.layers import AttentionBlock, FeedForward, lengths_to_mask, sinusoid


@runtime_checkable
class Vocoder(Protocol):
    """units [B, T] long with unit_lengths [B] (and an optional speaker vector [B, S]) -> (waveform [B, S_max]
    float in [-1, 1] at `sample_rate`, sample lengths [B])."""

    sample_rate: int

    def __call__(self, units: Tensor, unit_lengths: Tensor, speaker: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ...


@dataclass
class UnitDecoderOutput:
    """logits [B, T, U] over units; log_ratio [B] predicted log(units per text token)."""

    logits: Tensor
    log_ratio: Tensor


class _DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.self_attn = AttentionBlock(dim, heads, dropout)
        self.cross_attn = AttentionBlock(dim, heads, dropout)
        self.ffn = FeedForward(dim, dropout=dropout)

    def forward(self, h: Tensor, unit_pad: Tensor, memory: Tensor, text_pad: Tensor, bias: Tensor | None) -> Tensor:
        h = self.self_attn(h, key_padding_mask=unit_pad)
        h = self.cross_attn(h, memory, memory, key_padding_mask=text_pad, bias=bias)
        return self.ffn(h)


class _EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.attn = AttentionBlock(dim, heads, dropout)
        self.ffn = FeedForward(dim, dropout=dropout)

    def forward(self, h: Tensor, pad: Tensor) -> Tensor:
        return self.ffn(self.attn(h, key_padding_mask=pad))


class UnitDecoder(nn.Module):
    def __init__(self, text_vocab: int, dim: int, unit_vocab: int, num_layers: int = 2, heads: int = 4,
                 speaker_dim: int = 0, align_prior_width: float = 1.0, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"unit decoder: taste.dim {dim} must be divisible by taste.heads {heads}")
        self.dim, self.unit_vocab, self.speaker_dim = dim, unit_vocab, speaker_dim
        self.align_prior_width = align_prior_width
        self.embed = nn.Embedding(text_vocab, dim)
        self.speaker = nn.Linear(speaker_dim, dim) if speaker_dim > 0 else None
        self.encoder = nn.ModuleList([_EncoderLayer(dim, heads, dropout) for _ in range(num_layers)])
        self.memory_norm = nn.LayerNorm(dim)
        self.query = nn.Linear(2 * dim, dim)
        self.decoder = nn.ModuleList([_DecoderLayer(dim, heads, dropout) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, unit_vocab)
        self.length_head = nn.Linear(dim, 1)

    def _speaker(self, speaker: Tensor | None, b: int) -> Tensor | None:
        if self.speaker is None:
            if speaker is not None:
                raise ValueError("unit decoder: a speaker vector was given but taste.speaker_dim is 0")
            return None
        if speaker is None or speaker.shape != (b, self.speaker_dim):
            got = None if speaker is None else tuple(speaker.shape)
            raise ValueError(f"unit decoder: speaker must be [B={b}, taste.speaker_dim={self.speaker_dim}], got {got}")
        return self.speaker(speaker).unsqueeze(1)                                 # [B, 1, D]

    def encode(self, text_ids: Tensor, text_lengths: Tensor, speech: Tensor,
               speaker: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """memory [B, L, D], text padding [B, L] (True = pad), log_ratio [B]."""
        b, seq = text_ids.shape
        if speech.shape[:2] != (b, seq) or speech.shape[-1] != self.dim:
            raise ValueError(f"unit decoder: speech must be [B={b}, L={seq}, {self.dim}], got {tuple(speech.shape)}")
        text_pad = ~lengths_to_mask(text_lengths, seq, "unit decoder: text_lengths")
        spk = self._speaker(speaker, b)
        h = self.embed(text_ids) + speech.to(self.embed.weight.dtype)
        h = h + sinusoid(torch.arange(seq, device=h.device), self.dim).to(h.dtype)
        if spk is not None:
            h = h + spk
        for layer in self.encoder:
            h = layer(h, text_pad)
        memory = self.memory_norm(h)
        valid = (~text_pad).unsqueeze(-1).to(memory.dtype)
        pooled = (memory * valid).sum(1) / valid.sum(1)
        return memory, text_pad, self.length_head(pooled).squeeze(-1)

    def forward(self, text_ids: Tensor, text_lengths: Tensor, speech: Tensor, unit_lengths: Tensor,
                speaker: Tensor | None = None, max_units: int | None = None) -> UnitDecoderOutput:
        """text_ids [B, L], text_lengths [B], speech [B, L, D] (RVQ output), unit_lengths [B] -> logits [B, T, U]
        with T = max_units or max(unit_lengths)."""
        memory, text_pad, log_ratio = self.encode(text_ids, text_lengths, speech, speaker)
        b, seq = text_ids.shape
        t_max = int(unit_lengths.max()) if max_units is None else max_units
        unit_pad = ~lengths_to_mask(unit_lengths, t_max, "unit decoder: unit_lengths")    # [B, T]
        t = torch.arange(t_max, device=memory.device, dtype=torch.float32)
        ratio = text_lengths.float() / unit_lengths.float()                              # [B] tokens per unit
        u = (t.unsqueeze(0) + 0.5) * ratio.unsqueeze(1) - 0.5                             # [B, T] text-axis position
        q = torch.cat([sinusoid(t, self.dim).expand(b, -1, -1), sinusoid(u, self.dim)], dim=-1)
        h = self.query(q.to(memory.dtype))                                                # [B, T, D]
        spk = self._speaker(speaker, b)
        if spk is not None:
            h = h + spk
        bias = None
        if self.align_prior_width > 0:
            i = torch.arange(seq, device=memory.device, dtype=torch.float32)
            bias = -(i.view(1, 1, seq) - u.unsqueeze(-1)).pow(2) / (2.0 * self.align_prior_width ** 2)   # [B, T, L]
        for layer in self.decoder:
            h = layer(h, unit_pad, memory, text_pad, bias)
        return UnitDecoderOutput(logits=self.out(self.norm(h)), log_ratio=log_ratio)

    def loss(self, out: UnitDecoderOutput, units: Tensor, unit_lengths: Tensor,
             text_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(unit cross-entropy over valid positions, MSE of log(units per token)). units [B, T] long."""
        b, t, _ = out.logits.shape
        if units.shape != (b, t):
            raise ValueError(f"unit decoder: units must be [B={b}, T={t}], got {tuple(units.shape)}")
        if int(units.min()) < 0 or int(units.max()) >= self.unit_vocab:
            raise ValueError(f"unit decoder: unit ids must be in [0, taste.unit_vocab={self.unit_vocab}), got "
                             f"[{int(units.min())}, {int(units.max())}]")
        valid = lengths_to_mask(unit_lengths, t, "unit decoder: unit_lengths")
        ce = F.cross_entropy(out.logits[valid].float(), units[valid])
        target = (unit_lengths.float() / text_lengths.float()).log()
        return ce, F.mse_loss(out.log_ratio.float(), target)

    @torch.no_grad()
    def generate(self, text_ids: Tensor, text_lengths: Tensor, speech: Tensor, speaker: Tensor | None = None,
                 unit_lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Greedy units [B, T] and their lengths [B]; lengths come from the length head unless given."""
        if unit_lengths is None:
            _, _, log_ratio = self.encode(text_ids, text_lengths, speech, speaker)
            unit_lengths = (text_lengths.float() * log_ratio.float().exp()).round().clamp_min(1).long()
        out = self.forward(text_ids, text_lengths, speech, unit_lengths, speaker)
        units = out.logits.argmax(-1)
        return units.masked_fill(~lengths_to_mask(unit_lengths, units.shape[1], "unit_lengths"), 0), unit_lengths
