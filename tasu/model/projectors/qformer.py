"""Q-Former projector (BLIP-2 / SALMONN style): a fixed number of learned queries read the frames.

frames [B, T, in] -> Linear(in, hidden) -> keys/values of transformers' `Blip2QFormerModel` (every layer
cross-attends, masked by lengths) whose queries are `num_queries` learned vectors -> Linear(hidden, H).
Output: [B, num_queries, H]; every row has num_queries frames.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import Blip2QFormerConfig
from transformers.models.blip_2.modeling_blip_2 import Blip2QFormerModel

from tasu.model.projectors.base import Projector
from tasu.types import Posteriors


class QFormerProjector(Projector):
    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_queries: int = 32, num_layers: int = 2,
                 num_heads: int = 4, input_kind: str = "posteriors"):
        super().__init__(in_dim, out_dim, input_kind)
        if hidden % num_heads:
            raise ValueError(f"qformer: model.projector.hidden {hidden} must be divisible by num_heads {num_heads}")
        if num_queries < 1 or num_layers < 1:
            raise ValueError(f"qformer: num_queries ({num_queries}) and num_layers ({num_layers}) must be >= 1")
        self.num_queries = num_queries
        self.inp = nn.Linear(in_dim, hidden)
        self.query = nn.Parameter(torch.randn(1, num_queries, hidden) * 0.02)       # [1, Q, hidden]
        cfg = Blip2QFormerConfig(hidden_size=hidden, num_hidden_layers=num_layers, num_attention_heads=num_heads,
                                 intermediate_size=4 * hidden, encoder_hidden_size=hidden,
                                 cross_attention_frequency=1, pad_token_id=None)
        self.qformer = Blip2QFormerModel(cfg)
        self.out = nn.Linear(hidden, out_dim)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return torch.full_like(lengths, self.num_queries)

    def forward(self, post: Posteriors) -> tuple[Tensor, Tensor]:
        x = self.frames(post)
        keys = x.linear(self.inp.weight, self.inp.bias)                     # [B, T, hidden], zero on padding
        mask = x.mask.clone()
        # a row with no frame (everything dropped upstream) attends to one zero frame instead of nothing (NaN)
        mask[:, 0] |= ~mask.any(dim=1)
        queries = self.query.expand(keys.shape[0], -1, -1)
        h = self.qformer(query_embeds=queries, encoder_hidden_states=keys,
                         encoder_attention_mask=mask.long()).last_hidden_state   # [B, Q, hidden]
        return self.out(h), self.output_lengths(post.lengths)
