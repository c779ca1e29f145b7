"""SpeechLLM: the module that owns the seam between speech and text.

    speech (features or simulated posteriors) -> [encoder -> PSD] -> projector -> LLM embeddings
    LLM input per sample:  [prompt_prefix] [speech frames] [prompt_suffix] [answer]
    with several speech segments (LLaSO):  [prefix] [speech 0] [middle 0] [speech 1] ... [suffix] [answer]
Prompt ids are embedded by the LLM's table plus, when audio wrapper tokens are configured, their trainable offsets
(`tasu.model.audio_tokens`). A sequence longer than the LLM's max_position_embeddings once the speech is expanded
is an error naming the sample key (the data pipeline skips such samples earlier when it can predict the length).

Modes (chosen per stage by config, not by separate scripts):
    simulated  CPS posteriors from text (sparse layout); no audio is read and no encoder runs
    posterior  real encoder posteriors, PSD-compressed when enabled, projected from the V-dim simplex
    lego       LegoSLM: posteriors x the LLM embedding matrix (the projector is `lego`)
    features   continuous encoder hidden states through the projector (SLAM style)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from tasu.align.psd import psd_compress
from tasu.model.ctc_model import ctc_loss
from tasu.types import Posteriors, SpeechBatch

IGNORE_INDEX = -100


@dataclass
class LLMInputs:
    """Spliced LLM inputs. embeds [B, L, H]; attention_mask [B, L]; labels [B, L] (IGNORE_INDEX off-answer)."""

    embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    speech_frames: torch.Tensor  # [B] projected speech frames per sample


class SpeechLLM(nn.Module):
    """CTC encoder -> projector -> causal LLM (see module docstring)."""

    def __init__(self, encoder, projector, llm, llm_tokenizer, ctc_tokenizer, psd_threshold: float | None = 0.9,
                 feature_layers: tuple[int, ...] = (-1,), ctc_weight: float = 0.0, audio_tokens=None):
        super().__init__()
        self.encoder = encoder            # CTCEncoder | None
        self.projector = projector
        self.llm = llm
        self.audio_tokens = audio_tokens  # AudioTokens | None: offsets of the audio wrapper token embeddings
        self.llm_tokenizer = llm_tokenizer
        self.ctc_tokenizer = ctc_tokenizer
        self.psd_threshold = psd_threshold  # None: PSD off
        self.feature_layers = tuple(feature_layers)
        self.ctc_weight = ctc_weight      # joint CTC loss on the encoder (audio batches with ctc_targets)
        self._ctc_loss: torch.Tensor | None = None   # the last forward's encoder CTC loss (joint CTC), if any
        # the last forward's loss terms when it had more than one (detached): {"llm_loss", "ctc_loss"} or {}
        self.loss_parts: dict[str, torch.Tensor] = {}
        # ZeRO-3 with mixed batch kinds: every rank must run the same graph each step (a rank skipping the encoder
        # on a text batch while a peer runs it on audio would leave all-gathers / reduce-scatters unmatched ->
        # hang or silent corruption). The recipe sets this for ZeRO-3 stages in an audio mode.
        self.uniform_graph = False

    # ---- speech side -------------------------------------------------------------------------------------------
    def encode(self, batch: SpeechBatch, mode: str) -> Posteriors:
        """Posteriors (and features) for the batch, PSD applied for real speech."""
        if mode == "simulated":
            if batch.posteriors is None:
                raise ValueError("simulated mode needs batch.posteriors (CPS output); got a batch without them")
            return batch.posteriors
        if self.encoder is None:
            raise ValueError(f"{mode} mode needs an encoder; model.encoder.type is 'none'")
        if batch.feats is None:
            raise ValueError(f"{mode} mode needs acoustic features; got a text-only batch (keys {batch.keys[:3]})")
        layers = self.feature_layers if mode == "features" else ()
        out = self.encoder(batch.feats, batch.feat_lengths, layers)
        if self.ctc_weight > 0 and self.training and batch.ctc_targets is not None:
            # joint CTC on the raw logits: the op log-softmaxes in fp32 block by block, so no log-prob [B, T, V]
            # tensor exists beside the probabilities
            self._ctc_loss = ctc_loss(out.logits, out.lengths, batch.ctc_targets)
        # probabilities only: PSD and the projectors read nothing else, and a second fp32 [B, T, V] tensor costs
        # ~0.5 s a step at V = 25055 on CPU (benchmarks/README.md)
        post = self.encoder.posteriors_of(out, log_probs=False)
        if self.psd_threshold is not None:
            # projectors read probabilities (and features) only: no merged log-probs, so PSD runs as the
            # `psd_compress` kernel op
            post = psd_compress(post, self.psd_threshold, log_probs=False)
        return post

    def speech_embeddings(self, batch: SpeechBatch, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T', H] projected speech and [B] lengths."""
        if batch.feats is not None and self.encoder is not None:
            batch = replace(batch, feats=batch.feats.to(self._dtype_of(self.encoder)))
        touch = None
        if self.uniform_graph and mode == "simulated" and self.encoder is not None:
            touch = self._encoder_touch(batch.posteriors.lengths.device)   # encoder first, as for audio
        post = self.encode(batch, mode).to(dtype=self._dtype_of(self.projector))
        if touch is not None:
            # Same autograd graph as an audio batch: dense projector input (the exact sparse path reads weights in
            # another order, so ZeRO-3 would bucket gradients differently), with the 0-valued encoder output
            # routed through it so backward visits projector, then encoder, as for audio.
            post = post.to_dense()
            post = replace(post, probs=post.probs + touch.to(post.probs.dtype))
        emb, lengths = self.projector(post)
        return emb.to(self.llm_dtype), lengths

    @staticmethod
    def _dtype_of(module: nn.Module) -> torch.dtype:
        p = next(module.parameters(), None)
        return p.dtype if p is not None else torch.float32

    def _encoder_touch(self, device) -> torch.Tensor:
        """0 x (encoder output) on a minimal dummy input: keeps ZeRO-3 collectives identical across ranks."""
        n_mels = getattr(self.encoder, "n_mels", 80)
        feats = torch.zeros(1, 16, n_mels, device=device, dtype=self._dtype_of(self.encoder))
        out = self.encoder(feats, torch.tensor([16], device=device))
        return out.logits.float().sum() * 0.0

    @property
    def llm_dtype(self) -> torch.dtype:
        # parameters() does not trigger ZeRO-3's gather-on-access (`module.weight` would)
        return self._dtype_of(self.llm)

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.llm.get_input_embeddings()

    # ---- splicing --------------------------------------------------------------------------------------------
    def embed_ids(self, ids: list[int], device) -> torch.Tensor:
        """[L, H] input embeddings of prompt / answer ids (audio wrapper tokens get their trainable offsets)."""
        t = torch.tensor(ids, dtype=torch.long, device=device)
        emb = self.embed_tokens(t)
        return emb if self.audio_tokens is None else self.audio_tokens(t, emb)

    @property
    def max_positions(self) -> int | None:
        """The LLM's max_position_embeddings (None when its config has none)."""
        return getattr(self.llm.config, "max_position_embeddings", None)

    def splice(self, batch: SpeechBatch, speech: torch.Tensor, speech_lengths: torch.Tensor,
               left_pad: bool = False) -> LLMInputs:
        """Concatenate prefix | speech | suffix | answer per sample (speech segments interleaved with the middle
        pieces when a sample has several), pad right (training) or left (generation).

        speech [N, T', H] and speech_lengths [N] hold one row per segment, sample after sample (N = B on the
        single-speech path). Returns speech_frames [B]: projected frames per sample, summed over its segments."""
        dev = speech.device
        counts = batch.segments()
        if sum(counts) != speech.shape[0]:
            raise ValueError(f"splice: {speech.shape[0]} speech rows for {sum(counts)} segments (speech_counts "
                             f"{counts}; keys {batch.keys[:4]})")
        pieces, label_rows, frames = [], [], []
        row = 0
        for i in range(len(batch)):
            middles = batch.middles(i)
            if len(middles) != counts[i] - 1:
                raise ValueError(f"sample {batch.keys[i]!r}: {counts[i]} speech segments need {counts[i] - 1} middle "
                                 f"text pieces, got {len(middles)}")
            parts = [self.embed_ids(batch.prompt_prefix[i], dev)]
            n_speech = 0
            for j in range(counts[i]):
                n = int(speech_lengths[row])
                parts.append(speech[row, :n])
                n_speech += n
                row += 1
                if j < counts[i] - 1:
                    parts.append(self.embed_ids(middles[j], dev))
            parts.append(self.embed_ids(batch.prompt_suffix[i] + batch.answer[i], dev))
            seq = torch.cat(parts, dim=0)                                              # [L_i, H]
            limit = self.max_positions
            if limit is not None and seq.shape[0] > limit:
                raise ValueError(f"sample {batch.keys[i]!r}: the LLM sequence is {seq.shape[0]} positions once the "
                                 f"speech is expanded ({n_speech} speech embeddings), more than the LLM's "
                                 f"max_position_embeddings {limit}: shorten the audio, or lower "
                                 "data.max_sample_tokens so the data pipeline skips such samples")
            lab = torch.full((seq.shape[0],), IGNORE_INDEX, dtype=torch.long, device=dev)
            if batch.answer[i]:
                lab[-len(batch.answer[i]):] = torch.tensor(batch.answer[i], dtype=torch.long, device=dev)
            pieces.append(seq)
            label_rows.append(lab)
            frames.append(n_speech)
        width = max(p.shape[0] for p in pieces)
        hidden = speech.shape[-1]
        embeds = speech.new_zeros(len(pieces), width, hidden)
        mask = torch.zeros(len(pieces), width, dtype=torch.long, device=dev)
        labels = torch.full((len(pieces), width), IGNORE_INDEX, dtype=torch.long, device=dev)
        for i, (seq, lab) in enumerate(zip(pieces, label_rows)):
            sl = slice(width - seq.shape[0], width) if left_pad else slice(0, seq.shape[0])
            embeds[i, sl] = seq
            mask[i, sl] = 1
            labels[i, sl] = lab
        return LLMInputs(embeds, mask, labels, torch.tensor(frames, dtype=torch.long, device=dev))

    def external_parameters(self) -> list[tuple[nn.Module, nn.Parameter]]:
        """(module, parameter) pairs where `module.forward` reads a parameter it does not own: the projector's
        fast paths (exact simulated layer, per-frame maps) read its children's weights directly, and lego /
        cross-attention read the LLM embedding table. ZeRO-3 must gather these when `module` runs."""
        pairs = [(self.projector, p) for p in self.projector.parameters()]
        if getattr(self.projector, "embedding", None) is not None:
            pairs.append((self.projector, self.embed_tokens.weight))
        return pairs

    @classmethod
    def from_pretrained(cls, out_dir) -> SpeechLLM:
        """Load a folder written by `tasu export` (safetensors only)."""
        from tasu.train.export import from_pretrained

        return from_pretrained(out_dir)

    # ---- training / inference --------------------------------------------------------------------------------
    def forward(self, batch: SpeechBatch, mode: str) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy over answer tokens, and the number of answer tokens."""
        self._ctc_loss = None
        speech, lengths = self.speech_embeddings(batch, mode)
        x = self.splice(batch, speech, lengths)
        logits, target = self.answer_logits(x)                  # [N, Vllm] fp32, [N]
        loss = nn.functional.cross_entropy(logits, target)
        self.loss_parts = {}
        if self._ctc_loss is not None:
            # logged apart by the recipe: loss = llm_loss + model.encoder.ctc_weight * ctc_loss
            self.loss_parts = {"llm_loss": loss.detach(), "ctc_loss": self._ctc_loss.detach()}
            loss = loss + self.ctc_weight * self._ctc_loss
        return loss, int(target.numel())

    def answer_logits(self, x: LLMInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 logits [N, Vllm] of the N positions that predict an answer token, and those tokens [N].

        Only these rows go through the LM head: the prompt and speech positions' logits are never read, and at
        Vllm = 151936 the full [B, L, Vllm] fp32 tensor would be the largest activation of the step (2.5 GB at
        B x L = 4096) and its LM-head product ~15 % of a 1.5B LLM's FLOPs. Models whose head does more than a
        Linear (logit soft-capping / scaling), or no split into decoder + head, run the whole LLM instead."""
        target = x.labels[:, 1:]
        keep = target != IGNORE_INDEX                             # [B, L-1]
        decoder, head = self._decoder_and_head()
        if decoder is None:
            out = self.llm(inputs_embeds=x.embeds, attention_mask=x.attention_mask, use_cache=False)
            return out.logits[:, :-1][keep].float(), target[keep]
        hidden = decoder(inputs_embeds=x.embeds, attention_mask=x.attention_mask, use_cache=False).last_hidden_state
        return head(hidden[:, :-1][keep]).float(), target[keep]

    def _decoder_and_head(self) -> tuple[nn.Module | None, nn.Module | None]:
        """(decoder stack, LM head) of an HF causal LM (PEFT-wrapped too), or (None, None) where the logits are
        more than head(hidden)."""
        cfg = getattr(self.llm, "config", None)
        if cfg is None or any(
                getattr(cfg, k, None) for k in ("final_logit_softcapping", "logit_scale", "logits_scaling")):
            return None, None
        try:
            decoder, head = self.llm.get_decoder(), self.llm.get_output_embeddings()
        except (AttributeError, NotImplementedError):
            return None, None
        if decoder is None or decoder is self.llm or not isinstance(head, nn.Linear):
            return None, None
        return decoder, head

    @torch.no_grad()
    def generate(self, batch: SpeechBatch, mode: str, max_new_tokens: int = 64, num_beams: int = 1,
                 repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0) -> list[str]:
        """Batched decoding through the LLM's `generate` with inputs_embeds (left padding). The repetition controls
        (eval.repetition_penalty, eval.no_repeat_ngram_size) are passed only when set."""
        speech, lengths = self.speech_embeddings(batch, mode)
        x = self.splice(batch, speech, lengths, left_pad=True)
        # position ids from the mask so a left-padded row sees the same positions as when decoded alone
        position_ids = (x.attention_mask.cumsum(-1) - 1).clamp(min=0)
        tok = self.llm_tokenizer
        controls = {}
        if repetition_penalty != 1.0:
            controls["repetition_penalty"] = repetition_penalty
        if no_repeat_ngram_size:
            controls["no_repeat_ngram_size"] = no_repeat_ngram_size
        out = self.llm.generate(inputs_embeds=x.embeds, attention_mask=x.attention_mask, position_ids=position_ids,
                                max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **controls)
        return [tok.decode(row, skip_special_tokens=True).strip() for row in out]
