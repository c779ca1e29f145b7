"""TASTE tokenizer + de-tokenizer as one module: aggregator -> RVQ -> unit decoder, trained by unit reconstruction.

    encoder hidden states (frozen encoder, e.g. Whisper) --pick_key_value--> keys [B, T, D_enc], values [B, T, D_val]
    aggregator(text, keys, values)   -> z [B, L, D]     one vector per text token
    rvq(z)                           -> q [B, L, D], codes [B, L, N]     (the TASTE speech tokens)
    unit_decoder(text, q, speaker)   -> unit logits [B, T_units, U]
    loss = CE(units) + commit + taste.length_loss_weight * length MSE

`mode` picks what the unit decoder receives as speech, TASTE's three tokenizer sub-stages:
    "text"  zeros: a text-only unit decoder (the aggregator and the RVQ are not run)
    "novq"  z itself: continuous speech vectors, no quantisation (no commitment loss)
    "vq"    q: the full tokenizer
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tasu.taste.aggregator import TextAlignedAggregator
from tasu.taste.config import TasteConfig
from tasu.taste.layers import lengths_to_mask
from tasu.taste.rvq import ResidualVQ, RVQOutput
from tasu.taste.taslm import PAD_CODE
from tasu.taste.unit_decoder import UnitDecoder

MODES = ("text", "novq", "vq")


@dataclass
class TasteOutput:
    """loss (what to backpropagate) and its parts, unit logits [B, T, U], and the RVQ output (codes [B, L, N];
    None unless mode is "vq")."""

    loss: Tensor
    unit_loss: Tensor
    commit_loss: Tensor
    length_loss: Tensor
    logits: Tensor
    rvq: RVQOutput | None


class TasteAutoencoder(nn.Module):
    def __init__(self, cfg: TasteConfig, text_vocab: int, encoder_dim: int, value_dim: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.aggregator = TextAlignedAggregator(text_vocab, cfg.dim, encoder_dim, cfg.aggregator_layers, cfg.heads,
                                                cfg.word_pooling, cfg.dropout, value_dim)
        self.rvq = ResidualVQ(cfg.codebooks, cfg.codebook_size, cfg.dim, cfg.decay, cfg.epsilon, cfg.beta,
                              cfg.kmeans_init, cfg.kmeans_iters, cfg.quantizer_dropout, cfg.dead_code_threshold,
                              cfg.seed, kmeans_init_vectors=cfg.kmeans_init_vectors if cfg.kmeans_init else 0)
        self.unit_decoder = UnitDecoder(text_vocab, cfg.dim, cfg.unit_vocab, cfg.decoder_layers, cfg.heads,
                                        cfg.speaker_dim, cfg.align_prior_width, cfg.dropout)

    def forward(self, text_ids: Tensor, text_lengths: Tensor, keys: Tensor, values: Tensor, frame_lengths: Tensor,
                units: Tensor, unit_lengths: Tensor, word_ids: Tensor | None = None,
                speaker: Tensor | None = None, mode: str = "vq") -> TasteOutput:
        """text_ids [B, L], keys/values [B, T, D_enc/D_val], units [B, T_units] long; lengths [B] each;
        mode: text | novq | vq (see the module doc)."""
        if mode not in MODES:
            raise ValueError(f"TasteAutoencoder: unknown mode {mode!r} {MODES}")
        rvq = None
        if mode == "text":
            speech = torch.zeros(*text_ids.shape, self.cfg.dim, device=keys.device, dtype=keys.dtype)   # [B, L, D]
        else:
            speech = self.aggregator(text_ids, text_lengths, keys, values, frame_lengths, word_ids)    # [B, L, D]
            if mode == "vq":
                rvq = self.rvq(speech, lengths_to_mask(text_lengths, text_ids.shape[1], "text_lengths"))
                speech = rvq.quantized
        out = self.unit_decoder(text_ids, text_lengths, speech, unit_lengths, speaker, max_units=units.shape[1])
        unit_loss, length_loss = self.unit_decoder.loss(out, units, unit_lengths, text_lengths)
        commit = rvq.commit_loss if rvq is not None else unit_loss.new_zeros(())
        loss = unit_loss + commit + self.cfg.length_loss_weight * length_loss
        return TasteOutput(loss=loss, unit_loss=unit_loss, commit_loss=commit, length_loss=length_loss,
                           logits=out.logits, rvq=rvq)

    @torch.no_grad()
    def tokenize(self, text_ids: Tensor, text_lengths: Tensor, keys: Tensor, values: Tensor, frame_lengths: Tensor,
                 word_ids: Tensor | None = None, n_quantizers: int | None = None) -> Tensor:
        """TASTE codes [B, L, n] for stage-2 (TASLM) data; padded text positions hold PAD_CODE. Runs in eval mode
        (no dropout) and never updates the codebooks; the module's mode is restored afterwards."""
        was_training = self.training
        self.eval()
        try:
            z = self.aggregator(text_ids, text_lengths, keys, values, frame_lengths, word_ids)
            codes = self.rvq.encode(z, n_quantizers)
        finally:
            self.train(was_training)
        mask = lengths_to_mask(text_lengths, text_ids.shape[1], "text_lengths")
        return codes.masked_fill(~mask.unsqueeze(-1), PAD_CODE)
