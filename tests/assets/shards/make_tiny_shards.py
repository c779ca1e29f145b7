"""Regenerate the tiny committed shard sets used by the tests (run from the repository root):

    python tests/assets/shards/make_tiny_shards.py

audio/: 6 ps-slm samples, 8 kHz (so the loader's resampling is exercised), 0.15-0.4 s low-level tones whose
        transcripts are lines 1-6 of tasu/assets/tiny_text.txt; 2 shards.
text/:  12 text-only samples (lines 7-18 of the same file); 3 shards.
Everything is deterministic (fixed waveforms, relative input paths, tar mtimes 0), so a rerun rewrites the
same bytes with the same libsndfile.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from tasu.data.shard import ShardOptions, write_shards  # noqa: E402

RATE = 8000


def tone(i: int) -> np.ndarray:
    """A decaying two-partial tone: 0.15 s + 0.05 s per index, peak ~0.05."""
    n = int(RATE * (0.15 + 0.05 * i))
    t = np.arange(n) / RATE
    f = 180.0 + 40.0 * i
    x = 0.04 * np.sin(2 * np.pi * f * t) + 0.01 * np.sin(2 * np.pi * 2.5 * f * t)
    return (x * np.exp(-2.0 * t)).astype(np.float32)


def build(out_root: Path) -> None:
    """Write audio/ and text/ shard sets under `out_root`."""
    lines = [x.strip() for x in (ROOT / "tasu/assets/tiny_text.txt").read_text(encoding="utf-8").splitlines()]
    lines = [x for x in lines if x]
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            recs = []
            for i in range(6):
                sf.write(f"tone{i}.wav", tone(i), RATE, subtype="PCM_16")
                recs.append({"key": f"tiny-audio-{i}", "task": "ASR", "target": lines[i], "path": f"tone{i}.wav",
                             "GT": lines[i]})
            Path("tiny_audio.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
            Path("tiny_text.txt").write_text("".join(x + "\n" for x in lines[6:18]), encoding="utf-8")
            for name, inputs, opts in (("audio", ["tiny_audio.jsonl"], ShardOptions(num_shards=2, sample_rate=0)),
                                       ("text", ["tiny_text.txt"], ShardOptions(num_shards=3))):
                summary = write_shards(inputs, str(out_root / name), opts)
                print(summary.text())
        finally:
            os.chdir(cwd)


if __name__ == "__main__":
    build(HERE)
