"""How many LLM positions a speech segment takes once expanded, predicted from its feature frames before decoding.

A speech segment of F feature frames becomes T = encoder.output_lengths(F) encoder frames, then
T' = projector.output_lengths(T) LLM input positions (frame stacking divides by k, a Q-Former gives a constant).
Without PSD this is a function of F alone, so the data pipeline can check a sample's full LLM length
    prompt pieces + sum over its voices of T'(F_v) + answer
against the limit (the smaller of `data.max_sample_tokens` and the LLM's max_position_embeddings) and skip or fail
on it with the key (`stages.ExpandedLength`) before any audio is decoded. With PSD the count depends on the
posteriors; then only the model's own check after expansion applies (`SpeechLLM.splice`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

EXPANDING_MODES = ("posterior", "lego", "features")


@dataclass
class SpeechExpansion:
    """table[f] = LLM positions of one segment of f feature frames (f < len(table)); `limit` = the longest LLM
    sequence allowed and `limit_source` what sets it (for messages). Picklable (plain lists) for DataLoader workers."""

    table: list[int]
    limit: int
    limit_source: str

    def positions(self, frames: int) -> int:
        if not 0 <= frames < len(self.table):
            # past the table: beyond data.max_sample_frames, which the length filter removed before this runs
            raise ValueError(f"{frames} feature frames outside the expansion table (0..{len(self.table) - 1})")
        return self.table[frames]


def speech_expansion(model, mode: str, data_cfg) -> SpeechExpansion | None:
    """The expansion of a SpeechLLM in `mode`, or None when it is not a function of the feature length (simulated
    input, no encoder, PSD on)."""
    if mode not in EXPANDING_MODES or model.encoder is None or model.psd_threshold is not None:
        return None
    frames = torch.arange(data_cfg.max_sample_frames + 1)
    with torch.no_grad():
        enc = model.encoder.output_lengths(frames.clamp(min=1))          # [F_max + 1]
        table = model.projector.output_lengths(enc)
    table = torch.where(frames > 0, table, torch.zeros_like(table))
    limits = [(data_cfg.max_sample_tokens, f"data.max_sample_tokens={data_cfg.max_sample_tokens}")]
    if model.max_positions is not None:
        limits.append((int(model.max_positions), f"the LLM's max_position_embeddings={model.max_positions}"))
    limit, source = min(limits)
    return SpeechExpansion([int(x) for x in table], int(limit), source)
