"""LegoSLM projector: CTC posteriors x the LLM's input embedding matrix (no trainable parameters).

For a frame with posteriors p over the CTC vocabulary (blank id 0):
    q(v) = p(v) / sum_{u >= 1} p(u)      for v >= 1   (the blank's mass is removed, the rest renormalised)
    emb  = sum_{v >= 1} q(v) * E[llm_id(v)]           llm_id(v) = ctc_to_llm_ids[v - 1]
`top1=True` uses only E[llm_id(argmax_{v >= 1} p(v))].

Blank-dominated frames are NOT zeroed: like every frame they get the (renormalised) non-blank mixture, or with
top1 their best non-blank unit. Drop them upstream if they are unwanted (PSD removes frames with blank
probability >= its threshold). A frame with no non-blank mass at all (p(0) == 1) gets a zero vector (soft) or
the first unit (top1: every non-blank unit ties).

Dense soft frames run through the `posterior_embed` kernel op (exact mode) on log p (see `_soft`).
Sparse CPS frames p = (1 - s) * onehot(i) + s / V are handled in closed form:
    emb = ((1 - s) [i != 0] E'[i] + (s / V) sum_v E'[v]) / (1 - (1 - s) [i == 0] - s / V)
Output dtype = the embedding's dtype (so it splices straight into the LLM's input).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tasu.kernels import get_op
from tasu.model.projectors.base import FrozenRef, Projector, check_llm_ids
from tasu.types import Posteriors

_TINY = 1e-12


class LegoProjector(Projector):
    def __init__(self, vocab_size: int, llm_embedding: nn.Embedding, ctc_to_llm_ids: list[int], top1: bool = False):
        if llm_embedding is None:
            raise ValueError("lego projector needs the LLM's input embedding (llm_embedding)")
        super().__init__(vocab_size, int(llm_embedding.weight.shape[1]), "posteriors")
        self.top1 = top1
        self.embedding = FrozenRef(llm_embedding)
        ids = check_llm_ids(ctc_to_llm_ids, vocab_size, int(llm_embedding.weight.shape[0]), "lego projector")
        self.register_buffer("llm_ids", ids, persistent=False)             # [V - 1]

    def forward(self, post: Posteriors) -> tuple[Tensor, Tensor]:
        x = self.frames(post)
        table = self.embedding.weight.index_select(0, self.llm_ids)         # [V - 1, H] = E'
        if x.is_sparse:
            out = self._sparse(x.ids, x.smooth, x.vocab_size, table)
        else:
            if self.top1:
                out = table[x.dense[..., 1:].to(table.dtype).argmax(dim=-1)]
            else:
                out = self._soft(x.dense[..., 1:], table)
        return out.masked_fill(~x.mask.unsqueeze(-1), 0.0), post.lengths

    @staticmethod
    def _soft(p: Tensor, table: Tensor) -> Tensor:
        """sum_v p_v E'[v] / max(sum_v p_v, tiny) for p [B, T, V - 1] (blank dropped), through the exact
        `posterior_embed` kernel op: softmax(log p) = p / sum p, so the op's output times mass / max(mass, tiny)
        is that value. Probabilities below the smallest normal float are clamped before the log (zero gradient
        there; a row with no mass becomes uniform and is then scaled by 0)."""
        mass = p.sum(dim=-1, keepdim=True)                                   # [B, T, 1] non-blank mass
        logits = p.clamp_min(torch.finfo(p.dtype).tiny).log()                # [B, T, V - 1]
        out = get_op("posterior_embed")(logits, table, None)                 # [B, T, H] in table's dtype
        return out * (mass / mass.clamp_min(_TINY)).to(out.dtype)

    def _sparse(self, ids: Tensor, smooth: Tensor, vocab_size: int, table: Tensor) -> Tensor:
        nonblank = ids != 0
        if self.top1:
            # argmax over v >= 1 of p: unit i when i is non-blank and s < 1, else all tie -> the first unit
            best = torch.where(nonblank & (smooth < 1.0), ids, torch.ones_like(ids))
            return table[best - 1]
        s = smooth.to(table.dtype)
        peak = torch.where(nonblank, 1.0 - s, torch.zeros_like(s))                  # [B, T] weight of E'[i]
        rows = table[(ids - 1).clamp_min(0)]                                         # [B, T, H]
        mass = 1.0 - (1.0 - s) * (~nonblank).to(s.dtype) - s / vocab_size            # non-blank mass
        num = peak.unsqueeze(-1) * rows + (s / vocab_size).unsqueeze(-1) * table.sum(dim=0)
        return num / mass.clamp_min(_TINY).unsqueeze(-1)
