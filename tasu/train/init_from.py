"""`train.init_from`: start the first stage of a run from weights another run trained (LLaSO stage 2 from the
stage-1 projector, as its `--pretrain_audio_aligner`).

The source is a carry file (`RUN/stages/<stage>/carry.safetensors`: full tensors of every parameter that run
trained, by SpeechLLM parameter name) or a run dir, meaning the carry of its last finished stage. The weights
are copied by name into the freshly built model (unknown names are an error) and passed on in this run's carry
files, so an export of this run holds them even when no stage here trains them.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from tasu.config.fields import ConfigError
from tasu.train import checkpoint as ckpt


def init_carry_path(path: str | Path) -> Path:
    """The carry file `path` names: itself, or a run dir's last finished stage's (errors name train.init_from)."""
    p = Path(path)
    if p.is_file():
        return p
    cfg_file = p / "config.yaml"
    if not cfg_file.is_file():
        raise ConfigError(f"config key 'train.init_from': {path} is neither a carry .safetensors file nor a run dir "
                          "(no config.yaml)")
    stages = (yaml.safe_load(cfg_file.read_text(encoding="utf-8")) or {}).get("stages") or []
    for stage in reversed(stages):
        carry = ckpt.carry_path(p, stage["name"])
        if carry.is_file():
            return carry
    raise ConfigError(f"config key 'train.init_from': run dir {path} has no finished stage (no "
                      "stages/<name>/carry.safetensors)")


def load_init_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], Path]:
    """(name -> tensor, the carry file read)."""
    carry = init_carry_path(path)
    return ckpt.load_carry(carry), carry
