"""Projectors: posteriors [B, T, V] or encoder features [B, T, D] -> LLM input embeddings [B, T', H].

base.py             `Projector` interface, `FrameInput` (dense or sparse frames)
mlp.py              linear-silu (TASU default), linear (frame stacking, SLAM), conv1d
qformer.py          learned queries over the frames (transformers' Blip2QFormerModel)
cross_attention.py  frames attend over the LLM's embedding table
lego.py             LegoSLM: posteriors x LLM embedding matrix
embedding_init.py   init="embedding" for linear-silu
build.py            `build_projector(ProjectorConfig, ...)`
"""

from tasu.model.projectors.base import FrameInput, Projector
from tasu.model.projectors.build import build_projector

__all__ = ["FrameInput", "Projector", "build_projector"]
