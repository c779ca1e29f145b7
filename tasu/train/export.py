"""Export a run to an HF-style folder, and load it back (`SpeechLLM.from_pretrained`).

    OUT_DIR/
        tasu_config.yaml        the run's config, with model.llm pointing at llm/ when the LLM was saved
        llm/                    base LLM weights (safetensors) + tokenizer (save_pretrained)
        lora/                   PEFT adapter (adapter_config.json + adapter_model.safetensors), if LoRA is on
        projector.safetensors   projector state dict
        encoder.safetensors     encoder + CTC head state dict (absent when there is no encoder)
        audio_tokens.safetensors  offsets of the audio wrapper token embeddings (when prompts.audio_bos/eos are set)
        ctc_tokenizer/          the CTC tokenizer's files (sentencepiece model / token list / LLM units), if any

A run whose stages are all `ctc` (a CTCModel, no LLM) exports tasu_config.yaml, encoder.safetensors and
ctc_tokenizer/ only; `load_ctc_model` reads such a folder, or a run dir directly.

Only safetensors and JSON/YAML are read back: nothing goes through pickle.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from tasu.config.loader import dump_yaml, load_config
from tasu.model.ctc_model import ctc_only
from tasu.train import checkpoint as ckpt

log = logging.getLogger("tasu.export")


def _final_carry(run_dir: Path, cfg) -> Path:
    for stage in reversed(cfg.stages):
        p = ckpt.carry_path(run_dir, stage.name)
        if p.is_file():
            if stage is not cfg.stages[-1]:
                log.warning("exporting stage %s: later stages have not finished", stage.name)
            return p
    raise FileNotFoundError(f"{run_dir}: no finished stage (no stages/*/carry.safetensors); train first")


def export_model(model, cfg, out_dir: Path, llm_trained: bool) -> None:
    """Write `model` (a SpeechLLM) as an HF-style folder."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    llm = model.llm
    has_lora = cfg.model.lora.r > 0
    base = llm.get_base_model() if has_lora else llm
    save_llm = llm_trained or cfg.model.llm.type != "hf"
    if save_llm:
        if has_lora:
            # the base weights without adapters: peft keeps them under base_layer
            base_sd = {k.replace(".base_layer", ""): v for k, v in base.state_dict().items() if "lora_" not in k}
            base.save_pretrained(out_dir / "llm", state_dict=base_sd)
        else:
            base.save_pretrained(out_dir / "llm")
        model.llm_tokenizer.save_pretrained(out_dir / "llm")
        cfg.model.llm.type = "hf"
        cfg.model.llm.path = str((out_dir / "llm").resolve())
        cfg.model.llm.gguf_file = None
    if has_lora:
        llm.save_pretrained(out_dir / "lora")
    save_file({k: v.detach().contiguous().cpu() for k, v in model.projector.state_dict().items()},
              str(out_dir / "projector.safetensors"))
    if model.encoder is not None:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.encoder.state_dict().items()},
                  str(out_dir / "encoder.safetensors"))
    if model.audio_tokens is not None:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.audio_tokens.state_dict().items()},
                  str(out_dir / "audio_tokens.safetensors"))
    _copy_ctc_tokenizer(cfg, out_dir)
    dump_yaml(cfg, out_dir / "tasu_config.yaml")


def _copy_ctc_tokenizer(cfg, out_dir: Path) -> None:
    tok_cfg = cfg.model.ctc_tokenizer
    if tok_cfg.path and tok_cfg.type in ("sentencepiece", "list", "llm-units"):
        dst = out_dir / "ctc_tokenizer" / Path(tok_cfg.path).name
        dst.parent.mkdir(exist_ok=True)
        shutil.copy(tok_cfg.path, dst)
        tok_cfg.path = str(dst.resolve())


def export_ctc_model(model, cfg, out_dir: Path) -> None:
    """Write a CTCModel: encoder.safetensors (body + CTC head), ctc_tokenizer/, tasu_config.yaml."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.encoder.state_dict().items()},
              str(out_dir / "encoder.safetensors"))
    _copy_ctc_tokenizer(cfg, out_dir)
    dump_yaml(cfg, out_dir / "tasu_config.yaml")


def load_ctc_model(path: str | Path):
    """(CTCModel in eval mode, its config) from a run dir (config.yaml + the last finished stage's carry file)
    or an export folder (tasu_config.yaml + encoder.safetensors). Weights are loaded strictly."""
    from safetensors.torch import load_file

    from tasu.model.build import build_ctc_model

    path = Path(path)
    if (path / "tasu_config.yaml").is_file():
        cfg = load_config(str(path / "tasu_config.yaml"))
        model = build_ctc_model(cfg)
        model.encoder.load_state_dict(load_file(str(path / "encoder.safetensors")), strict=True)
    elif (path / "config.yaml").is_file():
        cfg = load_config(str(path / "config.yaml"))
        model = build_ctc_model(cfg)
        carried = ckpt.load_carry(_final_carry(path, cfg))
        ckpt.apply_weights(model, {k: v for k, v in carried.items() if k.startswith("encoder.")}, path)
    else:
        raise FileNotFoundError(f"{path}: neither a tasu run dir (config.yaml) nor an export (tasu_config.yaml)")
    return model.eval(), cfg


def load_trained_weights(model, run_dir: Path, cfg) -> dict[str, torch.Tensor]:
    """Copy the run's final trained weights (the last finished stage's carry file) into `model`."""
    path = _final_carry(Path(run_dir), cfg)
    carried = ckpt.load_carry(path)
    ckpt.apply_weights(model, carried, path)
    return carried


def export_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """`tasu export RUN_DIR OUT_DIR`: rebuild the model from the run's config and its final weights, then export."""
    from tasu.model.build import build_speech_llm

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    cfg_file = run_dir / "config.yaml"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{run_dir}: not a tasu run dir (no config.yaml)")
    cfg = load_config(str(cfg_file))
    if ctc_only(cfg):
        model, cfg = load_ctc_model(run_dir)
        export_ctc_model(model, cfg, out_dir)
        log.info("exported CTC model %s -> %s", run_dir, out_dir)
        return out_dir
    model = build_speech_llm(cfg)
    carried = load_trained_weights(model, run_dir, cfg)
    llm_trained = any(n.startswith("llm.") and "lora_" not in n for n in carried)
    export_model(model, cfg, out_dir, llm_trained)
    log.info("exported %s -> %s", run_dir, out_dir)
    return out_dir


def from_pretrained(out_dir: str | Path):
    """Load an exported folder back into a SpeechLLM (eval mode)."""
    from safetensors.torch import load_file

    from tasu.model.build import build_speech_llm

    out_dir = Path(out_dir)
    cfg_file = out_dir / "tasu_config.yaml"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{out_dir}: not a tasu export (no tasu_config.yaml)")
    cfg = load_config(str(cfg_file))
    model = build_speech_llm(cfg)
    model.projector.load_state_dict(load_file(str(out_dir / "projector.safetensors")), strict=True)
    if model.encoder is not None:
        model.encoder.load_state_dict(load_file(str(out_dir / "encoder.safetensors")), strict=True)
    if model.audio_tokens is not None:
        model.audio_tokens.load_state_dict(load_file(str(out_dir / "audio_tokens.safetensors")), strict=True)
    if cfg.model.lora.r > 0:
        from peft.utils import set_peft_model_state_dict

        set_peft_model_state_dict(model.llm, load_file(str(out_dir / "lora" / "adapter_model.safetensors")))
    return model.eval()
