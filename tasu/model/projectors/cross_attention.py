"""Cross-attention onto the LLM's vocabulary: every frame becomes a query over the frozen embedding table.

q = Linear(in, H)(frame)                                   [B, T, H], split into heads of H / n_heads
a = softmax(q_h . E_h / sqrt(d)) @ E_h per head            keys = values = the LLM input embeddings E [V_llm, H]
out = q + Linear(H, H)(a)                                  residual + output projection
E is used as is (no key/value projections): the attention output stays in the span of the LLM's own token
embeddings, and projecting a 150k x H table every step would cost V_llm * H^2 flops. All B*T queries share one
key set, so they are folded into a single attention call (no [B, V_llm, H] copy of the table).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from tasu.model.projectors.base import FrozenRef, Projector
from tasu.types import Posteriors


class CrossAttentionProjector(Projector):
    def __init__(self, in_dim: int, out_dim: int, llm_embedding: nn.Embedding, num_heads: int = 4,
                 input_kind: str = "posteriors"):
        super().__init__(in_dim, out_dim, input_kind)
        if llm_embedding is None:
            raise ValueError("cross-attention projector needs the LLM's input embedding (llm_embedding)")
        if llm_embedding.weight.shape[1] != out_dim:
            raise ValueError(f"cross-attention: LLM embedding width {llm_embedding.weight.shape[1]} != LLM hidden "
                             f"{out_dim}")
        if out_dim % num_heads:
            raise ValueError(f"cross-attention: LLM hidden {out_dim} must be divisible by "
                             f"model.projector.num_heads {num_heads}")
        self.num_heads = num_heads
        self.query = nn.Linear(in_dim, out_dim)
        self.out = nn.Linear(out_dim, out_dim)
        self.embedding = FrozenRef(llm_embedding)

    def forward(self, post: Posteriors) -> tuple[Tensor, Tensor]:
        x = self.frames(post)
        q = x.linear(self.query.weight, self.query.bias)                      # [B, T, H]
        b, t, h = q.shape
        d = h // self.num_heads
        e = self.embedding.weight.to(q.dtype)                                 # [V_llm, H], frozen
        kv = e.view(1, -1, self.num_heads, d).transpose(1, 2)                 # [1, heads, V_llm, d]
        qh = q.reshape(1, b * t, self.num_heads, d).transpose(1, 2)           # [1, heads, B*T, d]
        a = F.scaled_dot_product_attention(qh, kv, kv)                        # [1, heads, B*T, d]
        a = a.transpose(1, 2).reshape(b, t, h)
        out = q + self.out(a)
        return out.masked_fill(~x.mask.unsqueeze(-1), 0.0), post.lengths
