"""Tone speech: a deterministic, learnable stand-in for speech in tests and tiny presets.

Each character of the CTC character inventory is a 60 ms tone burst at its own frequency (space = 40 ms of
near-silence). A tiny CTC encoder learns to read it in a few hundred steps, which makes end-to-end tests of the
audio modes (posterior / lego / features) meaningful without any real speech model. Real speech: see `tasu demo`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tasu.text.ctc_tokenizer import DEFAULT_CHARS

SAMPLE_RATE = 16000


def render(text: str, sample_rate: int = SAMPLE_RATE, char_ms: int = 60, space_ms: int = 40) -> np.ndarray:
    """float32 waveform [N] in [-1, 1] for `text` (lower-cased; characters outside the inventory are skipped)."""
    pieces = []
    rng = np.random.default_rng(len(text))
    for ch in text.lower():
        if ch == " ":
            pieces.append(0.003 * rng.standard_normal(int(sample_rate * space_ms / 1000)))
            continue
        i = DEFAULT_CHARS.find(ch)
        if i < 0:
            continue
        n = int(sample_rate * char_ms / 1000)
        t = np.arange(n) / sample_rate
        env = np.minimum(1.0, np.minimum(np.arange(n), n - np.arange(n)) / (0.005 * sample_rate))
        pieces.append(0.5 * env * np.sin(2 * np.pi * (250.0 + 70.0 * i) * t))
    wav = np.concatenate(pieces) if pieces else np.zeros(sample_rate // 10)
    return wav.astype(np.float32)


def write_corpus(sentences: list[str], out_dir: Path, task: str = "ASR", prefix: str = "tone") -> Path:
    """Write flac files + a ps-slm manifest (key, task, target, path, GT); returns the manifest path."""
    import soundfile as sf

    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.jsonl"
    with manifest.open("w", encoding="utf-8") as f:
        for n, s in enumerate(sentences):
            key = f"{prefix}-{n:05d}"
            sf.write(out_dir / f"{key}.flac", render(s), SAMPLE_RATE, subtype="PCM_16")
            f.write(json.dumps({"key": key, "task": task, "target": s, "path": f"{key}.flac", "GT": s}) + "\n")
    return manifest
