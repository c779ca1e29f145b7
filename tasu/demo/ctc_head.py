"""A CTC head on a frozen encoder, trained on the encoder's cached hidden states.

The encoder is frozen, so its states are computed once per clip (true length, fp16) and the head trains on them:
each epoch then costs only the head. Used by `tasu demo` and benchmarks/whisper_ctc_real.py. The trained head is
an ordinary `model.encoder.ctc_head` (tasu.model.encoders.heads), so the recipe and `tasu ctc eval` use it as is.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from tasu.data.audio_io import read_audio, resample
from tasu.data.features import whisper_log_mel
from tasu.eval.ctc_decode import greedy_decode
from tasu.eval.metrics import cer
from tasu.model.ctc_model import ctc_loss

log = logging.getLogger("tasu.ctc_head")


@dataclass
class HeadTraining:
    """How the head is trained on cached states."""

    epochs: int = 6                 # passes over the training clips
    batch_size: int = 64            # clips per step
    lr: float = 2e-3                # peak AdamW learning rate (warmup, then cosine to 5 %)
    weight_decay: float = 1e-2      # AdamW weight decay
    feat_dropout: float = 0.1       # dropout on the cached states (the frozen encoder's output)
    time_masks: int = 0             # SpecAugment-style: spans of frames zeroed per clip (on the cached states)
    time_mask_width: int = 10       # the longest such span, in encoder frames (20 ms each for Whisper)
    max_minutes: float = 0.0        # stop after the epoch that passes this many minutes (0: off)
    seed: int = 0                   # batch order


@torch.no_grad()
def cache_states(encoder, recs: list[dict], root: Path, cache: Path, progress=None) -> dict:
    """{keys, texts, voices, states: list of [T, D] fp16, seconds} of the clips `recs` (paths relative to `root`),
    computed once and kept in `cache` (reused when it holds the same keys). `progress(n)` is called per clip."""
    if cache.is_file():
        out = torch.load(cache, weights_only=True)
        if out["keys"] == [r["key"] for r in recs]:
            if progress:
                progress(len(recs))
            return out
    out = {"keys": [], "texts": [], "voices": [], "states": []}
    t0 = time.perf_counter()
    for r in recs:
        audio, sr = read_audio(str(root / r["path"]))
        if sr != 16000:
            audio = resample(audio, sr, 16000)
        feats = whisper_log_mel(audio, encoder.n_mels)[: encoder.max_frames]         # [F, M], at most 30 s
        h = encoder(feats[None], torch.tensor([feats.shape[0]]), hidden_layers=[-1]).hidden[0][0]   # [T, D]
        out["keys"].append(r["key"])
        out["texts"].append(r["GT"])
        out["voices"].append(r.get("voice", ""))
        out["states"].append(h.to(torch.float16).contiguous())
        if progress:
            progress(1)
    out["seconds"] = time.perf_counter() - t0
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    torch.save(out, tmp)
    tmp.replace(cache)
    return out


def merge_states(parts: list[dict]) -> dict:
    """Several `cache_states` results as one (clips in order; seconds summed)."""
    out = {k: [x for p in parts for x in p[k]] for k in ("keys", "texts", "voices", "states")}
    out["seconds"] = sum(p.get("seconds", 0.0) for p in parts)
    return out


def batches_by_length(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar lengths (sorted within chunks of 50 batches) to keep padding low."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    chunk = 50 * batch_size
    out = []
    for c in range(0, len(idx), chunk):
        part = sorted(idx[c:c + chunk], key=lambda i: lengths[i])
        out += [part[b:b + batch_size] for b in range(0, len(part), batch_size)]
    rng.shuffle(out)
    return out


def pad(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[T_i, D] fp16 states -> ([B, T_max, D] fp32 zero-padded, lengths [B])."""
    lengths = torch.tensor([s.shape[0] for s in states])
    x = torch.zeros(len(states), int(lengths.max()), states[0].shape[1])
    for i, s in enumerate(states):
        x[i, : s.shape[0]] = s.float()
    return x, lengths


@torch.no_grad()
def decode_states(head, states: list[torch.Tensor], tok, batch_size: int = 32) -> list[str]:
    """Greedy CTC transcripts of cached states."""
    was_training = head.training
    head.eval()
    hyps = []
    for b in range(0, len(states), batch_size):
        x, lengths = pad(states[b:b + batch_size])
        lp = head(x, lengths).log_softmax(-1)
        hyps += [tok.decode(ids) for ids in greedy_decode(lp, lengths)]
    head.train(was_training)
    return hyps


def time_mask(x: torch.Tensor, lengths: torch.Tensor, n: int, width: int, rng: random.Random) -> torch.Tensor:
    """Zero `n` random spans of up to `width` frames in every row of x [B, T, D] (within the row's length)."""
    keep = torch.ones(x.shape[:2], dtype=x.dtype)
    for b, length in enumerate(lengths.tolist()):
        for _ in range(n):
            w = rng.randint(0, min(width, max(length // 10, 1)))
            start = rng.randint(0, max(length - w, 0))
            keep[b, start:start + w] = 0
    return x * keep[..., None]


def train_head(head, tok, train: dict, dev: dict, opts: HeadTraining, on_step=None) -> dict:
    """Train `head` with CTC on `train` states, keep the epoch with the best greedy CER on `dev`.
    Returns {seconds, best_epoch, best_dev_cer, epochs_run, steps, history}; `on_step(step, loss)` per step."""
    targets = [tok.encode(t) for t in train["texts"]]
    empty = [train["keys"][i] for i, t in enumerate(targets) if not t]
    if empty:
        raise ValueError(f"{len(empty)} training clips have an empty CTC target, e.g. {empty[:3]}")
    lengths = [s.shape[0] for s in train["states"]]
    rng = random.Random(opts.seed)
    steps_per_epoch = math.ceil(len(lengths) / opts.batch_size)
    total = steps_per_epoch * opts.epochs
    opt = torch.optim.AdamW(head.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    warmup = max(1, min(200, total // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * (
        0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))))
    best = {"dev_cer": float("inf"), "epoch": 0, "state": None}
    history = []
    t0 = time.perf_counter()
    step = 0
    head.train()
    for epoch in range(1, opts.epochs + 1):
        loss_sum = 0.0
        for batch in batches_by_length(lengths, opts.batch_size, rng):
            x, lens = pad([train["states"][i] for i in batch])
            x = F.dropout(x, opts.feat_dropout, training=True)
            if opts.time_masks:
                x = time_mask(x, lens, opts.time_masks, opts.time_mask_width, rng)
            loss = ctc_loss(head(x, lens), lens, [targets[i] for i in batch])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            opt.step()
            sched.step()
            value = float(loss.detach())
            loss_sum += value
            step += 1
            if on_step:
                on_step(step, value)
        d = cer(dev["texts"], decode_states(head, dev["states"], tok))
        rec = {"epoch": epoch, "loss": loss_sum / steps_per_epoch, "dev_cer": d,
               "minutes": (time.perf_counter() - t0) / 60}
        history.append(rec)
        log.info("epoch %d: loss %.3f, dev CER %.3f (%.1f min)", epoch, rec["loss"], d, rec["minutes"])
        if d < best["dev_cer"]:
            best = {"dev_cer": d, "epoch": epoch, "state": {k: v.clone() for k, v in head.state_dict().items()}}
        if opts.max_minutes and rec["minutes"] > opts.max_minutes:
            log.info("time budget of %.0f min reached", opts.max_minutes)
            break
    head.load_state_dict(best["state"])
    return {"seconds": time.perf_counter() - t0, "best_epoch": best["epoch"], "best_dev_cer": best["dev_cer"],
            "epochs_run": len(history), "steps": step, "history": history}
