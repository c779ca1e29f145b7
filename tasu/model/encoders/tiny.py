"""A small pre-LayerNorm transformer CTC encoder built from `EncoderConfig` (tests, toy runs).

feats [B, F, M] -> conv front end (Conv1d k3 + GELU, then Conv1d kernel = stride = `subsample` + GELU)
-> + sinusoidal positions -> n_layers x (MHSA with a key padding mask, FFN 4d) -> LayerNorm -> CTC head.
T = ceil(F / subsample). Frames past a row's length are zeroed before every convolution, so a row's output
does not depend on how long the other rows of its batch are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tasu.model.encoders.base import CTCEncoder, EncoderOutput, length_mask
from tasu.model.encoders.heads import build_head


def sinusoids(length: int, dim: int, device=None, dtype=None) -> Tensor:
    """[length, dim] fixed sinusoidal positions (sin on the first half, cos on the second, as Whisper)."""
    half = dim // 2
    inv = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) / max(half - 1, 1))
    ang = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1) * inv.unsqueeze(0)
    pe = torch.cat([ang.sin(), ang.cos()], dim=1)
    if pe.shape[1] < dim:  # odd dim
        pe = F.pad(pe, (0, dim - pe.shape[1]))
    return pe.to(dtype) if dtype is not None else pe


class TinyLayer(nn.Module):
    """Pre-LN transformer layer; attention through F.scaled_dot_product_attention with a [B, 1, 1, T] mask."""

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.attn_norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.attn_out = nn.Linear(d, d)
        self.ffn_norm = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d, d))

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        x = x + F.dropout(self.attn_out(h.transpose(1, 2).reshape(b, t, d)), self.dropout, self.training)
        return x + F.dropout(self.ffn(self.ffn_norm(x)), self.dropout, self.training)


class TinyBody(nn.Module):
    """Conv front end + transformer layers + final LayerNorm (the `encoder` freezing group)."""

    def __init__(self, n_mels: int, d_model: int, n_layers: int, n_heads: int, subsample: int, dropout: float):
        super().__init__()
        self.subsample = subsample
        self.conv_in = nn.Conv1d(n_mels, d_model, kernel_size=3, padding=1)
        self.conv_sub = nn.Conv1d(d_model, d_model, kernel_size=subsample, stride=subsample)
        self.layers = nn.ModuleList(TinyLayer(d_model, n_heads, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.dropout = dropout

    def forward(self, feats: Tensor, feat_lengths: Tensor, lengths: Tensor, keep: set[int]) -> tuple[Tensor, dict]:
        # feats [B, F, M] -> x [B, T, d]; `keep` = hidden-state indices to return
        fmask = length_mask(feat_lengths, feats.shape[1]).unsqueeze(1)       # [B, 1, F]
        x = feats.transpose(1, 2).masked_fill(~fmask, 0.0)                   # [B, M, F]
        x = F.gelu(self.conv_in(x)).masked_fill(~fmask, 0.0)                 # [B, d, F]
        pad = (-x.shape[-1]) % self.subsample
        x = F.gelu(self.conv_sub(F.pad(x, (0, pad)))).transpose(1, 2)        # [B, T, d]
        x = x + sinusoids(x.shape[1], x.shape[2], device=x.device, dtype=x.dtype)
        x = F.dropout(x, self.dropout, self.training)
        mask = length_mask(lengths, x.shape[1])                              # [B, T]
        attn_mask = mask[:, None, None, :]                                   # keys only; padded queries are unused
        hidden = {0: x} if 0 in keep else {}
        for i, layer in enumerate(self.layers, start=1):
            x = layer(x, attn_mask)
            if i in keep and i < len(self.layers):
                hidden[i] = x
        x = self.norm(x)
        if len(self.layers) in keep:
            hidden[len(self.layers)] = x
        return x, hidden


class TinyCTCEncoder(CTCEncoder):
    """Transformer CTC encoder from `EncoderConfig` fields (d_model, n_layers, n_heads, subsample, head)."""

    def __init__(self, vocab_size: int, n_mels: int = 80, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                 subsample: int = 2, head: str = "linear", head_hidden: int = 256, dropout: float = 0.0,
                 feature_rate_hz: float = 100.0):
        super().__init__()
        if subsample < 1:
            raise ValueError(f"model.encoder.subsample must be >= 1, got {subsample}")
        if d_model % n_heads:
            raise ValueError(f"model.encoder.d_model {d_model} must be divisible by n_heads {n_heads}")
        self.vocab_size = vocab_size
        self.hidden_size = d_model
        self.num_layers = n_layers
        self.n_mels = n_mels
        self.subsample = subsample
        self.frame_rate_hz = feature_rate_hz / subsample      # features at 100 Hz (10 ms hop) unless told
        self.encoder = TinyBody(n_mels, d_model, n_layers, n_heads, subsample, dropout)
        self.ctc_head = build_head(head, d_model, vocab_size, head_hidden)

    def output_lengths(self, feat_lengths: Tensor) -> Tensor:
        return (feat_lengths + self.subsample - 1) // self.subsample

    def forward(self, feats: Tensor, feat_lengths: Tensor, hidden_layers: Sequence[int] = ()) -> EncoderOutput:
        self.check_inputs(feats, feat_lengths)
        layers = self.resolve_layers(hidden_layers)
        lengths = self.output_lengths(feat_lengths)
        x, hidden = self.encoder(feats, feat_lengths, lengths, set(layers))
        logits = self.ctc_head(x, lengths)
        return EncoderOutput(logits=logits, lengths=lengths, hidden=[hidden[i] for i in layers])
