"""Builders: compose `SpeechLLM(encoder, projector, llm)`, or `CTCModel(encoder)` for ctc stages, from a typed
config."""

from __future__ import annotations

import logging

import torch

from tasu.kernels import configure as configure_kernels
from tasu.model.audio_tokens import AudioTokens, add_audio_tokens
from tasu.model.ctc_model import CTCModel
from tasu.model.encoders.build import build_encoder
from tasu.model.llm import apply_lora, compile_decoder_layers, load_llm
from tasu.model.projectors import build_projector
from tasu.model.speech_llm import SpeechLLM
from tasu.text.ctc_tokenizer import LLM_TOKENIZER_TYPES, CTCTokenizer, HFCTCTokenizer, build_ctc_tokenizer

log = logging.getLogger("tasu.model")


def ctc_to_llm_ids(ctc_tok: CTCTokenizer, llm_tok) -> list[int]:
    """LLM token id for each CTC unit (ids 1..V-1): exact for an LLM-derived CTC vocabulary; otherwise the first
    LLM token of the unit's surface text (used for `init: embedding` and LegoSLM)."""
    if isinstance(ctc_tok, HFCTCTokenizer) and ctc_tok.hf is llm_tok:   # hf / llm / llm-units
        return list(ctc_tok.hf_ids)
    out = []
    for unit in ctc_tok.units:
        ids = llm_tok.encode(unit, add_special_tokens=False) or [llm_tok.unk_token_id or 0]
        out.append(ids[-1] if unit.strip() else ids[0])
    return out


def projector_input_kind(cfg) -> str:
    return "features" if any(s.mode == "features" for s in cfg.stages) else "posteriors"


def build_speech_llm(cfg, seed: int | None = None) -> SpeechLLM:
    """The full model for a tasu `Config` (weights: LLM pretrained/tiny, encoder and projector fresh). Also sets the
    process-wide fused-kernel selection (`kernels.impl`) that the model's forward uses."""
    configure_kernels(cfg.kernels)
    seed = cfg.train.seed if seed is None else seed
    m = cfg.model
    llm, llm_tok = load_llm(m.llm, seed)
    ctc_tok = build_ctc_tokenizer(m.ctc_tokenizer, llm_tokenizer=llm_tok)
    # audio wrapper tokens: added (and the embedding grown) before anything holds the LLM's embedding module
    wrap = [t for t in (cfg.prompts.audio_bos, cfg.prompts.audio_eos) if t]
    audio_tokens = AudioTokens(add_audio_tokens(llm, llm_tok, wrap), llm.config.hidden_size) if wrap else None
    torch.manual_seed(seed)
    encoder = build_encoder(m.encoder, ctc_tok.vocab_size)
    kind = projector_input_kind(cfg)
    if kind == "features":
        if encoder is None:
            raise ValueError("features mode needs an encoder (model.encoder.type is 'none')")
        in_dim = encoder.hidden_size * len(m.encoder.feature_layers)
    else:
        in_dim = ctc_tok.vocab_size
    projector = build_projector(m.projector, in_dim, llm.config.hidden_size, input_kind=kind,
                                llm_embedding=llm.get_input_embeddings(),
                                ctc_to_llm_ids=ctc_to_llm_ids(ctc_tok, llm_tok))
    llm = apply_lora(llm, m.lora)
    if m.llm.compile:
        compile_decoder_layers(llm)          # after LoRA: the adapters are traced into the compiled layers
    return SpeechLLM(encoder, projector, llm, llm_tok, ctc_tok,
                     psd_threshold=cfg.psd.blank_threshold if cfg.psd.enabled else None,
                     feature_layers=tuple(m.encoder.feature_layers), ctc_weight=m.encoder.ctc_weight,
                     audio_tokens=audio_tokens)


def build_ctc_model(cfg, seed: int | None = None) -> CTCModel:
    """Encoder + CTC head over the configured CTC tokenizer, without an LLM (ctc stages). With
    `model.ctc_tokenizer.type: llm` only the LLM's tokenizer is loaded (for an HF LLM) so the vocabulary matches
    the one a later SpeechLLM stage builds. Sets the fused-kernel selection (`kernels.impl`) like build_speech_llm."""
    configure_kernels(cfg.kernels)
    seed = cfg.train.seed if seed is None else seed
    m = cfg.model
    llm_tok = None
    if m.ctc_tokenizer.type in LLM_TOKENIZER_TYPES:
        if m.llm.type == "hf":
            from transformers import AutoTokenizer

            llm_tok = AutoTokenizer.from_pretrained(m.llm.path, gguf_file=m.llm.gguf_file)
        else:
            _, llm_tok = load_llm(m.llm, seed)  # tiny: its tokenizer is trained with it
    ctc_tok = build_ctc_tokenizer(m.ctc_tokenizer, llm_tokenizer=llm_tok)
    torch.manual_seed(seed)
    return CTCModel(build_encoder(m.encoder, ctc_tok.vocab_size), ctc_tok)
