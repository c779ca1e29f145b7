"""Freeze policies: trainable parameter groups by name, plus regex lists; logged names and counts."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from torch import nn

from tasu.config.fields import ConfigError

log = logging.getLogger("tasu.model")


def group_of(name: str) -> str:
    """The freeze group of a SpeechLLM parameter name."""
    if "lora_" in name:
        return "lora"
    if name.startswith("llm."):
        return "llm"
    if name.startswith("projector."):
        return "projector"
    if name.startswith("audio_tokens."):
        return "audio_tokens"
    if name.startswith("encoder.ctc_head."):
        return "ctc_head"
    if name.startswith("encoder."):
        return "encoder"
    return "other"


def apply_freeze(model: nn.Module, groups: list[str], trainable_regex: list[str] = (),
                 frozen_regex: list[str] = (), group_fn: Callable[[str], str] = group_of) -> dict:
    """Set requires_grad: groups, then `trainable_regex` (unfreeze), then `frozen_regex` (freeze, wins).
    `group_fn` names a parameter's group (SpeechLLM groups by default; TASTE passes its own).

    Returns {"trainable": {group: n_params}, "frozen": {group: n_params}, "names": [trainable names]}.
    Raises if nothing is trainable (a stage that trains nothing is a config error).
    """
    try:
        t_res = [re.compile(r) for r in trainable_regex]
        f_res = [re.compile(r) for r in frozen_regex]
    except re.error as e:
        raise ConfigError(f"config key 'stages.*.trainable_regex/frozen_regex': bad regex: {e}") from None
    summary: dict = {"trainable": {}, "frozen": {}, "names": []}
    for name, p in model.named_parameters():
        g = group_fn(name)
        on = g in groups or any(r.search(name) for r in t_res)
        if any(r.search(name) for r in f_res):
            on = False
        p.requires_grad_(on)
        bucket = "trainable" if on else "frozen"
        summary[bucket][g] = summary[bucket].get(g, 0) + p.numel()
        if on:
            summary["names"].append(name)
    if not summary["names"]:
        raise ConfigError(f"no trainable parameters for groups {groups} (regexes {list(trainable_regex)})")
    return summary


def log_summary(summary: dict, stage: str) -> None:
    total = sum(summary["trainable"].values())
    log.info("stage %s: %d trainable parameters %s; frozen %s", stage, total, summary["trainable"], summary["frozen"])
    log.debug("trainable parameter names: %s", summary["names"])


def encoder_top_layers_regex(model: nn.Module, k: int) -> list[str]:
    """Parameter-name regexes of the top `k` layers of the encoder body (`model.encoder.encoder.layers`) and of
    the body's own closing LayerNorm (its direct LayerNorm child: `layer_norm` in Whisper, `norm` in tiny), which
    only the top layer feeds. [] for k = 0; a ConfigError names the key when k exceeds the layer count."""
    if k == 0:
        return []
    body = getattr(getattr(model, "encoder", None), "encoder", None)
    layers = getattr(body, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError("config key 'stages.*.encoder_top_layers': the model has no encoder body with `layers`")
    n = len(layers)
    if not 0 < k <= n:
        raise ConfigError(f"config key 'stages.*.encoder_top_layers': {k} layers asked, the encoder has {n}")
    out = [rf"^encoder\.encoder\.layers\.({'|'.join(str(i) for i in range(n - k, n))})\."]
    out += [rf"^encoder\.encoder\.{re.escape(name)}\." for name, m in body.named_children()
            if isinstance(m, nn.LayerNorm)]
    return out
