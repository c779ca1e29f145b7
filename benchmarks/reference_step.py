"""A faithful reference-style training step (benchmark baseline only; not part of the package).

It does what the reference TASU implementation does per step (NOTES.md §1, "known waste"), on the same model
objects as the tasu side (encoder, projector modules, LLM) and at the same sizes:
- every sample's audio file is decoded (soundfile) and its features computed in Python, one sample at a time,
  even in text-only mode; the features are padded into a batch and the frozen encoder runs on it (no graph);
  the posteriors are its softmax (probabilities only: the reference's PSD and projector read nothing else);
- PSD walks the frames one by one in Python (`tasu.align.psd.psd_reference`): an argmax and a `float()` per
  frame / merged frame, i.e. a host sync each; its output is thrown away in text-only (simulated) mode;
- text-only mode: the transcript is tokenised with the CTC tokenizer and a dense smoothed one-hot [L, V] is built
  per sample in Python ((1 - alpha) * onehot + alpha / V, alpha ~ U(0, 0.1) per sample, each token dropped with
  p = 0.05), the rows are padded into [B, L, V], and the dense projector runs on it:
  LayerNorm(V) -> Linear(V, hidden) -> SiLU -> Linear(hidden, H), the projector's own modules;
- fp32 throughout, no shuffling (file order), the loss read on the host every step (the reference prints it);
- the same frozen LLM, the same torch AdamW implementation on the projector, and the same gradient clipping as
  the tasu side's DeepSpeed config, so the comparison isolates the data path, not the optimizer.
Nothing here is slowed on purpose: each per-sample build is vectorised within the sample, the encoder runs
batched on the true lengths, and PSD computes no log-probabilities (the reference has none to merge).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import soundfile as sf
import torch
import torch.nn.functional as F

from tasu.align.psd import psd_reference
from tasu.config.loader import resolve_path
from tasu.data.features import compute_features
from tasu.model.projectors.mlp import LinearSiLUProjector
from tasu.text.prompts import PromptBuilder
from tasu.types import Posteriors, SpeechBatch


def _records(manifest: str) -> list[dict]:
    path = Path(resolve_path(manifest))
    recs = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    for r in recs:
        r["path"] = str(path.parent / r["path"])
    return recs


def features_batch(records: list[dict], cfg) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Each record's audio decoded and its features computed, one sample at a time; padded [B, F, M], lengths [B]
    and the audio seconds."""
    feats, audio_s = [], 0.0
    for r in records:
        wav, sr = sf.read(r["path"], dtype="float32")
        audio_s += len(wav) / sr
        feats.append(compute_features(wav, cfg.data.features, cfg.data.n_mels))               # [F_i, M]
    lengths = torch.tensor([f.shape[0] for f in feats])
    x = torch.zeros(len(feats), int(lengths.max()), feats[0].shape[1])                       # [B, F, M]
    for i, f in enumerate(feats):
        x[i, : f.shape[0]] = f
    return x, lengths, audio_s


class ReferenceStep:
    """One reference-style step per call of `step(records)`; `batches` yields the records in file order."""

    def __init__(self, speech, cfg, mode: str, device, manifest):
        if not isinstance(speech.projector, LinearSiLUProjector):
            raise ValueError(f"the reference step runs TASU's linear-silu projector, got "
                             f"{type(speech.projector).__name__}")
        if speech.encoder is None:
            raise ValueError("the reference step runs the encoder even in text mode: model.encoder.type is 'none'")
        self.speech, self.mode, self.dev = speech, mode, device
        self.cfg = cfg
        self.records = _records(str(manifest))
        self.batch_size = cfg.data.batch_size
        self.prompts = PromptBuilder.from_config(cfg.prompts, speech.llm_tokenizer)
        from tasu.train.engine import _adamw

        self.params = [p for p in speech.projector.parameters() if p.requires_grad]
        t = cfg.train
        self.opt = _adamw(self.params, lr=t.lr, betas=tuple(t.adam_betas), eps=t.adam_eps,
                          weight_decay=t.weight_decay)
        self.grad_clip = t.grad_clip
        self.rng = random.Random(0)
        self.batches = self._batches()

    def _batches(self):
        i = 0
        while True:  # in file order, no shuffling (as the reference)
            yield [self.records[(i + k) % len(self.records)] for k in range(self.batch_size)]
            i += self.batch_size

    def _one_hot(self, ids: list[int], vocab: int) -> torch.Tensor:
        """Smoothed one-hots of one sample: [L, V] (L = kept tokens), built on the host."""
        alpha = self.rng.uniform(0.0, 0.1)
        kept = [t for t in ids if self.rng.random() >= 0.05] or ids[:1]
        rows = torch.full((len(kept), vocab), alpha / vocab)                    # [L, V]
        rows[torch.arange(len(kept)), torch.tensor(kept)] += 1.0 - alpha
        return rows

    def _encode_audio(self, records: list[dict]) -> tuple[Posteriors, float, torch.Tensor]:
        """Decode + features per sample, the frozen encoder on the padded batch: softmax posteriors [B, T, V], the
        audio seconds and the feature lengths [B]."""
        x, lengths, audio_s = features_batch(records, self.cfg)
        enc = self.speech.encoder
        w = next(enc.parameters())                                                          # bf16 runs
        with torch.no_grad():                                                                # frozen encoder
            post = enc.posteriors(x.to(self.dev, w.dtype), lengths.to(self.dev), log_probs=False)   # [B, T, V]
        return post, audio_s, lengths

    def step(self, records: list[dict]) -> dict:
        """One step; the returned dict holds the sizes and `phases` (seconds per phase, CPU wall clock)."""
        speech, ctc = self.speech, self.speech.ctc_tokenizer
        t = [time.perf_counter()]
        post, audio_s, feat_lengths = self._encode_audio(records)   # audio + encoder even for text
        t.append(time.perf_counter())
        post = psd_reference(post, self.cfg.psd.blank_threshold)   # per-frame loop, host sync per frame
        t.append(time.perf_counter())
        if self.mode == "simulated":                                # the audio branch's result is discarded
            dense = [self._one_hot(ctc.encode(r["GT"]), ctc.vocab_size) for r in records]
            lengths = torch.tensor([d.shape[0] for d in dense])
            probs = torch.zeros(len(dense), int(lengths.max()), ctc.vocab_size)      # [B, L, V]
            for i, d in enumerate(dense):
                probs[i, : d.shape[0]] = d
        else:
            lengths, probs = post.lengths, post.probs                                # [B, T', V]
        # frames for the padding ratio, as the tasu side counts them: CPS frames (text), feature frames (audio)
        counted = lengths if self.mode == "simulated" else feat_lengths
        t.append(time.perf_counter())
        proj = speech.projector
        dense_in = probs.to(self.dev, proj.fc1.weight.dtype)                        # the projector's dtype
        emb = proj.fc2(F.silu(proj.fc1(proj.norm(dense_in))))                       # dense: [B, L, H]
        t.append(time.perf_counter())
        parts = [self.prompts.build("ASR", r["GT"]) for r in records]
        batch = SpeechBatch(keys=[r["key"] for r in records], tasks=["ASR"] * len(records),
                            prompt_prefix=[p.prefix for p in parts], prompt_suffix=[p.suffix for p in parts],
                            answer=[p.answer for p in parts], references=[r["GT"] for r in records])
        x = speech.splice(batch, emb.to(speech.llm_dtype), lengths.to(self.dev))
        out = speech.llm(inputs_embeds=x.embeds, attention_mask=x.attention_mask, labels=x.labels, use_cache=False)
        t.append(time.perf_counter())
        self.opt.zero_grad()
        out.loss.backward()
        t.append(time.perf_counter())
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.opt.step()
        float(out.loss.detach())                                    # the reference prints the loss every step
        t.append(time.perf_counter())
        names = ["audio_features_encoder", "psd", "dense_input", "projector_forward", "llm_forward_splice_loss",
                 "backward", "optimizer_step"]
        n_tok = sum(len(a) for a in batch.answer)
        return {"samples": len(records), "tokens": n_tok, "audio_seconds": audio_s,
                "frames": int(counted.sum()), "padded": int(counted.numel() * counted.max()),
                "llm_positions": int(x.attention_mask.sum()),
                "phases": {k: b - a for k, a, b in zip(names, t, t[1:])}}
