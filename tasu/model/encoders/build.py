"""Build the CTC encoder named by `EncoderConfig` (model.encoder)."""

from __future__ import annotations

from tasu.config.fields import ConfigError
from tasu.model.config import EncoderConfig
from tasu.model.encoders.base import CTCEncoder
from tasu.model.encoders.tiny import TinyCTCEncoder
from tasu.model.encoders.whisper import WhisperCTCEncoder, whisper_config


def build_encoder(cfg: EncoderConfig, vocab_size: int) -> CTCEncoder | None:
    """tiny | whisper (random preset, or weights from `cfg.path`) | none -> None (text-only runs)."""
    if vocab_size < 2:
        raise ConfigError(f"config key 'model.ctc_tokenizer': CTC vocabulary needs blank + >= 1 unit, got {vocab_size}")
    if cfg.type == "none":
        return None
    if cfg.type == "tiny":
        return TinyCTCEncoder(vocab_size, n_mels=cfg.n_mels, d_model=cfg.d_model, n_layers=cfg.n_layers,
                              n_heads=cfg.n_heads, subsample=cfg.subsample, head=cfg.head, head_hidden=cfg.head_hidden)
    if cfg.type == "whisper":
        if cfg.path is None:
            wcfg, state = whisper_config(cfg.whisper_size, cfg.n_mels), None
        else:
            # written by another module; imported lazily so random-weight runs do not need it
            from tasu.model.encoders.whisper_weights import load_whisper_encoder_state

            state, wcfg = load_whisper_encoder_state(cfg.path, cfg.weights_format)
            if wcfg.num_mel_bins != cfg.n_mels:
                raise ConfigError(f"config key 'model.encoder.n_mels': is {cfg.n_mels} but the Whisper weights at "
                                  f"{cfg.path} take {wcfg.num_mel_bins} mel bins")
        enc = WhisperCTCEncoder(wcfg, vocab_size, head=cfg.head, head_hidden=cfg.head_hidden,
                                true_length=cfg.true_length)
        if state is not None:
            enc.load_encoder_state(state, strict=True)
        return enc
    raise ConfigError(f"config key 'model.encoder.type': unknown encoder '{cfg.type}'")
