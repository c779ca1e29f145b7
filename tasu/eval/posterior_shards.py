"""CTC posteriors of a trained encoder, saved to tar shards so later stages and benchmarks reuse them without
running the encoder again (`tasu ctc export-posteriors`; the layout is in data_shards/FORMAT.md).

    OUT_DIR/posteriors-000000.tar ...   per sample: <n>.json, <n>.logp.npy [, <n>.ids.npy]
    OUT_DIR/index.json                  layout, vocabulary, shards (samples + byte offsets), totals

Layouts (T frames, V classes, blank id 0):
    dense  logp.npy  float16 [T, V]  log-probabilities
    topk   ids.npy   int32   [T, K]  the K most likely classes of each frame, most likely first
           logp.npy  float16 [T, K]  their log-probabilities
Reading a top-k sample back spreads each frame's remaining mass 1 - sum(top-k) evenly over the other V - K
classes (`read_posteriors`), so rows are again distributions over V.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tasu.data.tar_io import ShardTarWriter, TarFault, read_range
from tasu.types import Posteriors, SpeechBatch

FORMAT = "tasu-posteriors"
VERSION = 1


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _load_npy(raw: bytes) -> np.ndarray:
    return np.load(io.BytesIO(raw), allow_pickle=False)


def export_posteriors(model, batches: Iterable[SpeechBatch], out_dir: str | Path, top_k: int | None = None,
                      shard_size: int = 1000, meta: dict | None = None) -> Path:
    """Run `model` (a CTCModel) on every batch and write its posteriors; returns the index.json path.

    top_k None: dense fp16 log-probs; else the `top_k` best classes per frame (1 <= top_k < V)."""
    tok = model.ctc_tokenizer
    vocab = tok.vocab_size
    if top_k is not None and not 1 <= top_k < vocab:
        raise ValueError(f"--top-k must lie in [1, {vocab - 1}] (the vocabulary has {vocab} classes), got {top_k}")
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[dict] = []
    writer: ShardTarWriter | None = None
    n = frames = 0
    audio_s = 0.0

    def close() -> None:
        offsets = writer.close()
        shards.append({"url": Path(writer.path).name, "samples": len(offsets) - 1, "offsets": offsets})

    model.eval()
    with torch.no_grad():
        for batch in batches:
            post = model.posteriors(batch)
            lp = post.log_probs.float().cpu()                               # [B, T, V]
            lengths = post.lengths.cpu().tolist()
            for i, key in enumerate(batch.keys):
                if writer is None or len(writer.offsets) >= shard_size:
                    if writer is not None:
                        close()
                    writer = ShardTarWriter(str(out / f"posteriors-{len(shards):06d}.tar"))
                row = lp[i, : lengths[i]]                                    # [T_i, V]
                rec = {"key": key, "task": batch.tasks[i], "reference": batch.references[i],
                       "num_frames": lengths[i]}
                members = {"json": json.dumps(rec).encode("utf-8")}
                if top_k is None:
                    members["logp.npy"] = _npy(row.numpy().astype(np.float16))
                else:
                    vals, ids = row.topk(top_k, dim=-1)                      # [T_i, K] each, best first
                    members["ids.npy"] = _npy(ids.numpy().astype(np.int32))
                    members["logp.npy"] = _npy(vals.numpy().astype(np.float16))
                writer.write(f"{n:09d}", members)
                n += 1
                frames += lengths[i]
            audio_s += batch.audio_seconds
    if writer is not None:
        close()
    index = {"format": FORMAT, "version": VERSION, "layout": "dense" if top_k is None else "topk", "top_k": top_k,
             "dtype": "float16", "vocab_size": vocab, "blank_id": tok.blank_id,
             "frame_rate_hz": float(model.encoder.frame_rate_hz), "units": list(tok.units),
             "total_samples": n, "total_frames": frames, "total_audio_seconds": audio_s, "shards": shards,
             "meta": meta or {}}
    path = out / "index.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(index) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


@dataclass
class PosteriorSample:
    """One exported sample: `log_probs` [T, V] float32 (top-k expanded to V), its JSON record in `meta`."""

    key: str
    meta: dict
    log_probs: torch.Tensor


def read_index(path: str | Path) -> tuple[dict, Path]:
    """(index, folder) of a posterior shard set given its folder or index.json."""
    p = Path(path)
    if p.is_dir():
        p = p / "index.json"
    if not p.is_file():
        raise FileNotFoundError(f"{path}: no posterior index.json (write one with `tasu ctc export-posteriors`)")
    index = json.loads(p.read_text(encoding="utf-8"))
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise ValueError(f"{p}: not a {FORMAT} v{VERSION} index (format {index.get('format')!r}, "
                         f"version {index.get('version')!r})")
    return index, p.parent


def expand_topk(ids: torch.Tensor, logp: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[T, K] ids + log-probs -> [T, V] log-probs; the mass outside the top k, 1 - sum(top-k), is spread evenly
    over the other V - K classes (clamped at 1e-12 so log stays finite)."""
    t, k = ids.shape
    p_top = logp.float().exp()                                               # [T, K]
    rest = (1.0 - p_top.sum(-1, keepdim=True)).clamp(min=1e-12) / max(vocab_size - k, 1)   # [T, 1]
    out = rest.log().expand(t, vocab_size).clone()
    out.scatter_(1, ids.long(), logp.float())
    return out


def read_posteriors(path: str | Path) -> Iterator[PosteriorSample]:
    """Every sample of a posterior shard set, in order."""
    index, root = read_index(path)
    vocab = int(index["vocab_size"])
    for shard in index["shards"]:
        for s in read_range(str(root / shard["url"]), shard["offsets"], 0, shard["samples"]):
            if isinstance(s, TarFault):
                raise ValueError(f"{s.where}: {s.detail}")
            meta = json.loads(s["json"].decode("utf-8"))
            logp = torch.from_numpy(_load_npy(s["logp.npy"]).astype(np.float32))
            if index["layout"] == "topk":
                logp = expand_topk(torch.from_numpy(_load_npy(s["ids.npy"])), logp, vocab)
            if tuple(logp.shape) != (meta["num_frames"], vocab):
                raise ValueError(f"{root / shard['url']}: sample {meta['key']} has posteriors of shape "
                                 f"{tuple(logp.shape)}, expected ({meta['num_frames']}, {vocab})")
            yield PosteriorSample(meta["key"], meta, logp)


def collate_posteriors(samples: list[PosteriorSample], blank_id: int = 0) -> Posteriors:
    """Dense, zero-padded `Posteriors` [B, T_max, V] of read samples (the contract projectors consume)."""
    if not samples:
        raise ValueError("collate_posteriors: no samples")
    vocab = samples[0].log_probs.shape[1]
    t_max = max(s.log_probs.shape[0] for s in samples)
    lp = torch.full((len(samples), t_max, vocab), -math.inf)
    lp[:, :, blank_id] = 0.0                           # padding frames: certain blank (never read past lengths)
    for i, s in enumerate(samples):
        lp[i, : s.log_probs.shape[0]] = s.log_probs
    lengths = torch.tensor([s.log_probs.shape[0] for s in samples], dtype=torch.long)
    return Posteriors(lengths=lengths, vocab_size=vocab, probs=lp.exp(), log_probs=lp, blank_id=blank_id)
