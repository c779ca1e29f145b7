"""Build the projector named by `ProjectorConfig` (model.projector)."""

from __future__ import annotations

from torch import nn

from tasu.config.fields import ConfigError
from tasu.model.config import ProjectorConfig
from tasu.model.projectors.base import INPUT_KINDS, Projector
from tasu.model.projectors.cross_attention import CrossAttentionProjector
from tasu.model.projectors.embedding_init import init_linear_silu_to_embeddings
from tasu.model.projectors.lego import LegoProjector
from tasu.model.projectors.mlp import Conv1dProjector, LinearSiLUProjector, StackLinearProjector
from tasu.model.projectors.qformer import QFormerProjector


def build_projector(cfg: ProjectorConfig, in_dim: int, llm_hidden: int, input_kind: str = "posteriors",
                    llm_embedding: nn.Embedding | None = None,
                    ctc_to_llm_ids: list[int] | None = None) -> Projector:
    """in_dim: CTC vocabulary size V (posteriors) or feature size D (features); llm_hidden: H.
    llm_embedding / ctc_to_llm_ids: needed by `lego`, `cross-attention` (embedding only) and init=embedding."""
    if input_kind not in INPUT_KINDS:
        raise ConfigError(f"config key 'model.projector': input kind must be one of {INPUT_KINDS}, got '{input_kind}'")
    if cfg.init == "embedding" and (cfg.type != "linear-silu" or input_kind != "posteriors"):
        raise ConfigError("config key 'model.projector.init': 'embedding' is defined for type=linear-silu over "
                          f"posteriors only (got type={cfg.type}, input {input_kind})")
    if cfg.type in ("lego", "cross-attention") or cfg.init == "embedding":
        if llm_embedding is None:
            raise ConfigError(f"config key 'model.projector.type': {cfg.type} (init={cfg.init}) needs the LLM's "
                              "input embedding")
        if llm_embedding.weight.shape[1] != llm_hidden:
            raise ConfigError(f"config key 'model.projector': LLM embedding width {llm_embedding.weight.shape[1]} "
                              f"!= LLM hidden {llm_hidden}")
    try:
        if cfg.type == "linear-silu":
            proj = LinearSiLUProjector(in_dim, cfg.hidden, llm_hidden, input_kind)
            if cfg.init == "embedding":
                init_linear_silu_to_embeddings(proj, llm_embedding.weight.detach(), ctc_to_llm_ids)
            return proj
        if cfg.type == "linear":
            return StackLinearProjector(in_dim, cfg.hidden, llm_hidden, cfg.stack, input_kind,
                                        cfg.activation or "relu")
        if cfg.type == "conv1d":
            return Conv1dProjector(in_dim, cfg.hidden, llm_hidden, cfg.stack, input_kind, cfg.activation or "gelu")
        if cfg.type == "qformer":
            return QFormerProjector(in_dim, cfg.hidden, llm_hidden, cfg.num_queries, cfg.num_layers, cfg.num_heads,
                                    input_kind)
        if cfg.type == "cross-attention":
            return CrossAttentionProjector(in_dim, llm_hidden, llm_embedding, cfg.num_heads, input_kind)
        if cfg.type == "lego":
            if input_kind != "posteriors":
                raise ValueError("lego reads posteriors, not encoder features")
            return LegoProjector(in_dim, llm_embedding, ctc_to_llm_ids, cfg.lego_top1)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"config key 'model.projector' (type={cfg.type}): {e}") from e
    raise ConfigError(f"config key 'model.projector.type': unknown projector '{cfg.type}'")
