"""CTC heads: encoder hidden states [B, T, D] (+ lengths [B]) -> CTC logits [B, T, V].

linear     Linear(D, V)
mlp        LayerNorm + Linear(D, h) + GELU + Linear(h, V)
bigru      LayerNorm + Linear(D, h) + GELU + 1-layer BiGRU(h), packed by lengths + Linear(2h, V)
           (NOTES.md §5: the head that reached CER 0.20 on a frozen Whisper tiny)
conformer  Linear(D, h) + one conformer block (FFN/2, MHSA, conv module, FFN/2, LayerNorm) + Linear(h, V)

Every head is exact under padding: a row's logits do not depend on other rows of the batch (the BiGRU is packed,
attention masks padded keys, the depthwise conv sees zeros past a row's length).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from tasu.model.encoders.base import length_mask


class LinearHead(nn.Module):
    def __init__(self, in_dim: int, vocab_size: int):
        super().__init__()
        self.out = nn.Linear(in_dim, vocab_size)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.out(x)


class MLPHead(nn.Module):
    def __init__(self, in_dim: int, vocab_size: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.out(F.gelu(self.fc1(self.norm(x))))


class BiGRUHead(nn.Module):
    def __init__(self, in_dim: int, vocab_size: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden)
        self.gru = nn.GRU(hidden, hidden, num_layers=1, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, vocab_size)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        h = F.gelu(self.fc1(self.norm(x)))                                  # [B, T, h]
        # pack so the backward direction starts at each row's own last frame, not at the batch's padding
        packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
        y, _ = self.gru(packed)
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])  # [B, T, 2h], zeros past length
        return self.out(y)


class ConformerBlock(nn.Module):
    """One conformer block (Gulati et al. 2020) at width d. No relative positions: it sits on encoder outputs that
    already carry position information. LayerNorm instead of BatchNorm in the conv module so rows stay independent
    of the batch."""

    def __init__(self, d: int, n_heads: int = 4, kernel_size: int = 15, ffn_mult: int = 4, dropout: float = 0.0):
        super().__init__()
        if d % n_heads:
            raise ValueError(f"conformer width {d} (model.encoder.head_hidden) must be divisible by {n_heads} heads")
        self.ffn1 = self._ffn(d, ffn_mult, dropout)
        self.attn_norm = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, n_heads, dropout=dropout, batch_first=True)
        self.conv_norm = nn.LayerNorm(d)
        self.pointwise1 = nn.Conv1d(d, 2 * d, 1)
        self.depthwise = nn.Conv1d(d, d, kernel_size, padding=kernel_size // 2, groups=d)
        self.depth_norm = nn.LayerNorm(d)
        self.pointwise2 = nn.Conv1d(d, d, 1)
        self.ffn2 = self._ffn(d, ffn_mult, dropout)
        self.final_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def _ffn(d: int, mult: int, dropout: float) -> nn.Sequential:
        return nn.Sequential(nn.LayerNorm(d), nn.Linear(d, mult * d), nn.SiLU(), nn.Dropout(dropout),
                             nn.Linear(mult * d, d), nn.Dropout(dropout))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        # x [B, T, d], mask [B, T] True on valid frames
        x = x + 0.5 * self.ffn1(x)
        h = self.attn_norm(x)
        h, _ = self.attn(h, h, h, key_padding_mask=~mask, need_weights=False)
        x = x + self.dropout(h)
        h = self.conv_norm(x).masked_fill(~mask.unsqueeze(-1), 0.0).transpose(1, 2)   # [B, d, T]
        h = F.glu(self.pointwise1(h), dim=1)
        h = h.masked_fill(~mask.unsqueeze(1), 0.0)          # the depthwise conv must see zeros past the length
        h = self.depthwise(h)
        h = F.silu(self.depth_norm(h.transpose(1, 2))).transpose(1, 2)
        x = x + self.dropout(self.pointwise2(h).transpose(1, 2))
        x = x + 0.5 * self.ffn2(x)
        return self.final_norm(x)


class ConformerHead(nn.Module):
    def __init__(self, in_dim: int, vocab_size: int, hidden: int):
        super().__init__()
        self.inp = nn.Linear(in_dim, hidden)
        self.block = ConformerBlock(hidden)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        mask = length_mask(lengths, x.shape[1])
        return self.out(self.block(self.inp(x), mask))


def build_head(kind: str, in_dim: int, vocab_size: int, hidden: int) -> nn.Module:
    """A CTC head `forward(x [B, T, D], lengths [B]) -> [B, T, V]` of the named kind (model.encoder.head)."""
    if kind == "linear":
        return LinearHead(in_dim, vocab_size)
    if kind == "mlp":
        return MLPHead(in_dim, vocab_size, hidden)
    if kind == "bigru":
        return BiGRUHead(in_dim, vocab_size, hidden)
    if kind == "conformer":
        return ConformerHead(in_dim, vocab_size, hidden)
    raise ValueError(f"unknown CTC head '{kind}' (model.encoder.head: linear | mlp | bigru | conformer)")

