"""A faithful reference-style training step (benchmark baseline only; not part of the package).

It does what the reference TASU implementation does per step (NOTES.md §1, "known waste"):
- every sample's audio is read and its features computed, and the encoder runs, even in text-only mode;
- PSD walks the frames one by one in Python;
- the text branch builds dense smoothed one-hots [L, V] per sample in a Python loop (alpha ~ U(0, 0.1),
  token drop 0.05), stacks them into [B, L, V], and runs the dense projector (LayerNorm(V) -> Linear ...);
- fp32, no shuffling; the same frozen LLM and a torch AdamW on the projector.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import soundfile as sf
import torch

from tasu.align.psd import psd_reference
from tasu.config.loader import resolve_path
from tasu.data.features import compute_features
from tasu.text.prompts import PromptBuilder, load_prompts
from tasu.types import Posteriors, SpeechBatch


def _records(manifest: str) -> list[dict]:
    path = Path(resolve_path(manifest))
    recs = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    for r in recs:
        r["path"] = str(path.parent / r["path"])
    return recs


class ReferenceStep:
    def __init__(self, speech, cfg, mode: str, device, manifest):
        self.speech, self.mode, self.dev = speech, mode, device
        self.cfg = cfg
        self.records = _records(str(manifest))
        self.batch_size = cfg.data.batch_size
        self.prompts = PromptBuilder(speech.llm_tokenizer, load_prompts())
        # the same optimizer implementation as the tasu side, so the comparison isolates the step's data path
        from tasu.train.engine import _adamw

        self.opt = _adamw([p for p in speech.projector.parameters() if p.requires_grad], lr=1e-4, eps=1e-6)
        self.rng = random.Random(0)
        self.batches = self._batches()

    def _batches(self):
        i = 0
        while True:  # in file order, no shuffling (as the reference)
            yield [self.records[(i + k) % len(self.records)] for k in range(self.batch_size)]
            i += self.batch_size

    def _one_hot(self, ids: list[int], vocab: int) -> torch.Tensor:
        alpha = self.rng.uniform(0.0, 0.1)
        kept = [t for t in ids if self.rng.random() >= 0.05] or ids[:1]
        rows = []
        for t in kept:  # per token, per sample, on the host
            row = torch.full((vocab,), alpha / vocab)
            row[t] += 1.0 - alpha
            rows.append(row)
        return torch.stack(rows)                                    # [L, V]

    def step(self, records: list[dict]) -> dict:
        speech, ctc = self.speech, self.speech.ctc_tokenizer
        posts, audio_s = [], 0.0
        for r in records:
            wav, sr = sf.read(r["path"], dtype="float32")
            audio_s += len(wav) / sr
            feats = compute_features(wav, self.cfg.data.features, self.cfg.data.n_mels).unsqueeze(0).to(self.dev)
            with torch.no_grad():                                   # the encoder runs even for text
                post = speech.encoder.posteriors(feats, torch.tensor([feats.shape[1]], device=self.dev))
            posts.append(psd_reference(post, self.cfg.psd.blank_threshold))   # per-frame loop
        if self.mode == "simulated":
            dense = [self._one_hot(ctc.encode(r["GT"]), ctc.vocab_size) for r in records]
        else:
            dense = [p.probs[0, : int(p.lengths[0])] for p in posts]
        lengths = torch.tensor([d.shape[0] for d in dense])
        probs = torch.zeros(len(dense), int(lengths.max()), ctc.vocab_size)          # [B, L, V]
        for i, d in enumerate(dense):
            probs[i, : d.shape[0]] = d
        post = Posteriors(lengths=lengths.to(self.dev), vocab_size=ctc.vocab_size, probs=probs.to(self.dev))
        parts = [self.prompts.build("ASR", r["GT"]) for r in records]
        batch = SpeechBatch(keys=[r["key"] for r in records], tasks=["ASR"] * len(records),
                            prompt_prefix=[p.prefix for p in parts], prompt_suffix=[p.suffix for p in parts],
                            answer=[p.answer for p in parts], references=[r["GT"] for r in records])
        emb, emb_len = speech.projector(post)                       # dense LayerNorm(V) + Linear(V, D) path
        x = speech.splice(batch, emb.to(speech.llm_dtype), emb_len)
        out = speech.llm(inputs_embeds=x.embeds, attention_mask=x.attention_mask, labels=x.labels, use_cache=False)
        self.opt.zero_grad()
        out.loss.backward()
        self.opt.step()
        n_tok = sum(len(a) for a in batch.answer)
        return {"samples": len(records), "tokens": n_tok, "audio_seconds": audio_s,
                "frames": int(lengths.sum()), "padded": int(lengths.numel() * lengths.max())}
