"""TASTE aggregator: the transcript's tokens query the encoder frames, giving one speech vector per text token.

    queries  = Embedding(text_ids) + sinusoid(position)                     [B, L, D]
    keys     = Linear(LN(hidden[key_layer]))    (last encoder layer: content, finds where each token is spoken)
    values   = Linear(LN(hidden[value_layer]))  (a shallow layer: keeps paralinguistics the top layers discard)
    num_layers - 1 context layers: h += SelfAttn(LN h) over tokens; h += CrossAttn(LN h, keys, values); h += FFN(LN h)
    out = LN(CrossAttn(LN h, keys, values))                                 [B, L, D], aligned 1:1 with text tokens

The output is the last cross-attention alone, without the residual stream: an attention-weighted average of the
(projected) shallow-layer frames, the speech that realises each token. Keeping the query's own text embedding out of
it matters: the transcript is given to the unit decoder and to the LM anyway, and a vector dominated by text identity
would spend the RVQ's few codes (k-means / EMA follow the largest variance) on re-encoding the text.

Key padding masks come from text_lengths and frame_lengths, so padded frames / tokens never change valid outputs.
Word pooling (optional): tokens sharing a word id are averaged and the mean is broadcast back to each of them, so
every token of a word carries the same speech vector; tokens with word id < 0 (specials, padding) are left alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tasu.taste.layers import AttentionBlock, FeedForward, lengths_to_mask, sinusoid


def pick_key_value(hidden_states: Sequence[Tensor], key_layer: int, value_layer: int) -> tuple[Tensor, Tensor]:
    """(keys, values), each [B, T, D_enc], from an encoder's hidden-state tuple (HF order: 0 = embeddings,
    -1 = last layer). Errors name `taste.key_layer` / `taste.value_layer`."""
    n = len(hidden_states)
    for name, idx in (("taste.key_layer", key_layer), ("taste.value_layer", value_layer)):
        if not -n <= idx < n:
            raise IndexError(f"{name} = {idx} is out of range for an encoder with {n} hidden states")
    return hidden_states[key_layer], hidden_states[value_layer]


def word_pool(x: Tensor, word_ids: Tensor) -> Tensor:
    """[B, L, D]: each token replaced by the mean over the tokens of its word (same b, same word id >= 0).

    word_ids [B, L] long; ids need not be contiguous or sorted, only equal within a word; < 0 = not pooled."""
    if word_ids.shape != x.shape[:2]:
        raise ValueError(f"word_ids {tuple(word_ids.shape)} must match the token grid {tuple(x.shape[:2])}")
    b, _, d = x.shape
    pooled = word_ids >= 0
    if not bool(pooled.any()):
        return x
    # one group id per (row, word): row * (max_id + 1) + word_id, compacted by unique
    key = torch.arange(b, device=x.device).unsqueeze(1) * (int(word_ids.max()) + 1) + word_ids.clamp_min(0)
    _, group = torch.unique(key[pooled], return_inverse=True)                 # [M]
    g = int(group.max()) + 1
    sums = x.new_zeros(g, d).index_add(0, group, x[pooled])
    counts = torch.bincount(group, minlength=g).to(x.dtype).unsqueeze(1)
    out = x.clone()
    out[pooled] = (sums / counts)[group]
    return out


class AggregatorLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.self_attn = AttentionBlock(dim, heads, dropout)
        self.cross_attn = AttentionBlock(dim, heads, dropout)
        self.ffn = FeedForward(dim, dropout=dropout)

    def forward(self, h: Tensor, text_pad: Tensor, keys: Tensor, values: Tensor, frame_pad: Tensor) -> Tensor:
        h = self.self_attn(h, key_padding_mask=text_pad)
        h = self.cross_attn(h, keys, values, key_padding_mask=frame_pad)
        return self.ffn(h)


class TextAlignedAggregator(nn.Module):
    def __init__(self, text_vocab: int, dim: int, encoder_dim: int, num_layers: int = 2, heads: int = 4,
                 word_pooling: bool = True, dropout: float = 0.0, value_dim: int | None = None):
        """value_dim: width of the value layer's states when it differs from encoder_dim (default: the same)."""
        super().__init__()
        if dim % heads:
            raise ValueError(f"aggregator: taste.dim {dim} must be divisible by taste.heads {heads}")
        self.dim, self.encoder_dim, self.word_pooling = dim, encoder_dim, word_pooling
        self.value_dim = value_dim or encoder_dim
        self.embed = nn.Embedding(text_vocab, dim)
        self.key_proj = nn.Sequential(nn.LayerNorm(encoder_dim), nn.Linear(encoder_dim, dim))
        self.value_proj = nn.Sequential(nn.LayerNorm(self.value_dim), nn.Linear(self.value_dim, dim))
        if num_layers < 1:
            raise ValueError(f"aggregator: taste.aggregator_layers must be >= 1, got {num_layers}")
        self.layers = nn.ModuleList([AggregatorLayer(dim, heads, dropout) for _ in range(num_layers - 1)])
        self.pool_norm = nn.LayerNorm(dim)
        self.pool = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, text_ids: Tensor, text_lengths: Tensor, keys: Tensor, values: Tensor, frame_lengths: Tensor,
                word_ids: Tensor | None = None) -> Tensor:
        """text_ids [B, L] long, text_lengths [B]; keys [B, T, D_enc] (last layer), values [B, T, D_val] (shallow
        layer), frame_lengths [B]; word_ids [B, L] (needed when word pooling is on). -> [B, L, D]."""
        b, seq = text_ids.shape
        if keys.dim() != 3 or keys.shape[0] != b or keys.shape[-1] != self.encoder_dim:
            raise ValueError(f"aggregator: keys must be [B={b}, T, {self.encoder_dim}], got {tuple(keys.shape)}")
        if values.shape[:2] != keys.shape[:2] or values.shape[-1] != self.value_dim:
            raise ValueError(f"aggregator: values must be [{b}, {keys.shape[1]}, {self.value_dim}] like the keys, "
                             f"got {tuple(values.shape)}")
        text_pad = ~lengths_to_mask(text_lengths, seq, "aggregator: text_lengths")            # [B, L] True = pad
        frame_pad = ~lengths_to_mask(frame_lengths, keys.shape[1], "aggregator: frame_lengths")   # [B, T]
        pos = sinusoid(torch.arange(seq, device=text_ids.device), self.dim)
        h = self.embed(text_ids) + pos.to(self.embed.weight.dtype)                          # [B, L, D]
        k = self.key_proj(keys)                                                              # [B, T, D]
        v = self.value_proj(values)                                                          # [B, T, D]
        for layer in self.layers:
            h = layer(h, text_pad, k, v, frame_pad)
        pooled, _ = self.pool(self.pool_norm(h), k, v, key_padding_mask=frame_pad, need_weights=False)
        h = self.norm(pooled)
        if self.word_pooling:
            if word_ids is None:
                raise ValueError("aggregator: word pooling (taste.word_pooling) needs word_ids [B, L]")
            h = word_pool(h, word_ids.masked_fill(text_pad, -1))
        return h
