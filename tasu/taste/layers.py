"""Small building blocks shared by the TASTE modules: fractional sinusoidal positions, masks, pre-LN blocks."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoid(positions: Tensor, dim: int) -> Tensor:
    """[..., dim] sinusoidal encoding of (possibly fractional) positions [...]: sin on the first half, cos on the
    second. Fractional positions let a unit position t be encoded at its aligned text position t * L / T."""
    half = dim // 2
    inv = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device, dtype=torch.float32)
                    / max(half - 1, 1))
    ang = positions.float().unsqueeze(-1) * inv
    pe = torch.cat([ang.sin(), ang.cos()], dim=-1)
    if pe.shape[-1] < dim:  # odd dim
        pe = nn.functional.pad(pe, (0, dim - pe.shape[-1]))
    return pe


def lengths_to_mask(lengths: Tensor, max_len: int, name: str) -> Tensor:
    """[B, max_len] bool, True on valid positions; `name` is used in the error for bad lengths."""
    if lengths.dim() != 1:
        raise ValueError(f"{name} must be [B], got shape {tuple(lengths.shape)}")
    if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > max_len):
        raise ValueError(f"{name} must be in [1, {max_len}], got min {int(lengths.min())} max {int(lengths.max())}")
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.to(torch.long).unsqueeze(1)


class FeedForward(nn.Module):
    """Pre-LN position-wise FFN block with its residual: x + W2 gelu(W1 LN(x))."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.net = nn.Sequential(nn.Linear(dim, mult * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mult * dim, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(self.norm(x))


class AttentionBlock(nn.Module):
    """Pre-LN multi-head attention with its residual: x + MHA(LN(x), keys, values).

    keys / values default to LN(x) (self-attention). `key_padding_mask` [B, S] is True on padding (ignored keys);
    `bias` [B, Lq, S] float is added to the attention logits (e.g. an alignment prior; -inf hides a key).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, keys: Tensor | None = None, values: Tensor | None = None,
                key_padding_mask: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        h = self.norm(x)
        k = h if keys is None else keys
        v = k if values is None else values
        attn_mask = None
        if bias is not None:
            # one float mask carries both the bias and the padding (mixing float and bool masks is deprecated)
            if key_padding_mask is not None:
                bias = bias.masked_fill(key_padding_mask.unsqueeze(1), float("-inf"))
                key_padding_mask = None
            attn_mask = bias.to(h.dtype).repeat_interleave(self.heads, dim=0)   # [B * heads, Lq, S]
        out, _ = self.attn(h, k, v, key_padding_mask=key_padding_mask, attn_mask=attn_mask, need_weights=False)
        return x + self.drop(out)
