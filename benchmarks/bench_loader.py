"""Benchmark the data loader: `python benchmarks/bench_loader.py` -> benchmarks/results/loader.json.

Corpus: synthetic LibriSpeech-like utterances (16 kHz; durations from a mixture fitted by eye to LibriSpeech
train-clean-100: 72 % N(14.6 s, 1.6 s) clipped to [10, 17.5], 25 % uniform [1.5, 10] s, 3 % uniform [17.5,
24.5] s; mean ~12.6 s), harmonic "voiced" tones with a syllable-rate envelope plus low noise, written as
16-bit FLAC files (as LibriSpeech ships) + a ps-slm manifest (and the same audio as WAV for a second naive
baseline), then sharded with `tasu shard` (FLAC members). Transcripts are lines of tasu/assets/tiny_text.txt.
The files sit in the page cache: the benchmark measures CPU cost, not the storage I/O that shards also save.

Measured (one thread per process, OMP_NUM_THREADS=1):
    samples_per_s / audio_seconds_per_s   TrainStream in `features` mode (FLAC decode + Whisper log-mel on the
                                          true length + bucketing + collate) with `--workers` DataLoader
                                          workers, after a warm-up (worker start, bucket filling)
    single_process_samples_per_s          the same with data.num_workers = 0
    naive_samples_per_s                   a per-sample reader: JSON-lines manifest + soundfile.read of each FLAC
                                          file + the same Whisper log-mel, one sample at a time (no batching)
    naive_wav_samples_per_s               the same reader over WAV copies (no decoding cost)
    padding_ratio_bucketed / _fixed       1 - real / padded frames of the batches `make_batcher` builds for
                                          `--padding-samples` durations drawn from the same distribution:
                                          bucketed = frame budget + geometric buckets (the loader's default
                                          config), fixed = `--fixed-batch` samples in stream order, no buckets
    padding_ratio_loader                  the same ratio measured on the benchmark's own loader batches
    machine_parallel_speedup              throughput of max(2, workers) processes running the feature loop at
                                          once over one process: the most DataLoader workers can gain here
Throughputs are medians over `--rounds` rounds; each round times one `--window`-sample window of every reader
in turn, so drifts of the machine's background load (it is shared) hit all readers alike. The worker loader is
built fresh for each of its windows (warm-up, window, shut-down), so its workers, which run ahead in the
background, never compete with the other readers.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RATE = 16000


def librispeech_like_durations(n: int, rng: np.random.Generator) -> np.ndarray:
    """Seconds per utterance (see the module docstring)."""
    u = rng.random(n)
    main = np.clip(rng.normal(14.6, 1.6, n), 10.0, 17.5)
    short = rng.uniform(1.5, 10.0, n)
    long = rng.uniform(17.5, 24.5, n)
    return np.where(u < 0.72, main, np.where(u < 0.97, short, long))


def synth(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A speech-like signal: harmonics of a wandering f0, a 4 Hz syllable envelope, low noise."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6.28)), 0, None) ** 2
    return (0.08 * x * env + 0.003 * rng.standard_normal(n)).astype(np.float32)


def make_corpus(work: Path, n: int, seed: int) -> tuple[Path, np.ndarray]:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    lines = [x.strip() for x in (ROOT / "tasu/assets/tiny_text.txt").read_text().splitlines() if x.strip()]
    durs = librispeech_like_durations(n, rng)
    with open(work / "train.jsonl", "w") as f, open(work / "train_wav.jsonl", "w") as g:
        for i, d in enumerate(durs):
            x = synth(float(d), rng)
            sf.write(work / f"u{i:05d}.flac", x, RATE, format="FLAC", subtype="PCM_16")  # as LibriSpeech ships
            sf.write(work / f"u{i:05d}.wav", x, RATE, subtype="PCM_16")
            text = lines[i % len(lines)]
            rec = {"key": f"u{i:05d}", "task": "ASR", "target": text, "path": f"u{i:05d}.flac", "GT": text}
            f.write(json.dumps(rec) + "\n")
            g.write(json.dumps(dict(rec, path=f"u{i:05d}.wav")) + "\n")
    return work / "train.jsonl", durs


class StreamWindow:
    """Times windows of a TrainStream; construction runs a warm-up (worker start-up, bucket filling)."""

    def __init__(self, cfg, shards: str, pb, warmup: int):
        from tasu.align.config import SimulationConfig
        from tasu.data.loader import TrainStream
        from tasu.text.ctc_tokenizer import CharCTCTokenizer

        st = TrainStream(cfg, [shards], "features", CharCTCTokenizer(), pb, SimulationConfig(), 0, 1, seed=0)
        self.it = iter(st)
        self.real = self.padded = 0
        done = 0
        while done < warmup:
            done += len(next(self.it))

    def __call__(self, n: int) -> tuple[float, float]:
        """(samples/s, audio seconds/s) over >= n samples."""
        samples, seconds = 0, 0.0
        t0 = time.perf_counter()
        while samples < n:
            b = next(self.it)
            samples += len(b)
            seconds += b.audio_seconds
            self.real += int(b.feat_lengths.sum())
            self.padded += len(b) * int(b.feat_lengths.max())
        dt = time.perf_counter() - t0
        return samples / dt, seconds / dt


class WorkerLoaderWindow:
    """A loader with DataLoader workers, fresh for every window: warmed up, timed, then shut down, so its workers
    (which run ahead in the background) never compete with the readers timed between its windows."""

    def __init__(self, cfg, shards: str, pb, warmup: int):
        self.args = (cfg, shards, pb, warmup)
        self.real = self.padded = 0

    def __call__(self, n: int) -> tuple[float, float]:
        w = StreamWindow(*self.args)
        out = w(n)
        self.real += w.real
        self.padded += w.padded
        del w
        gc.collect()  # ends the DataLoader iterator: its workers exit
        return out

    def padding_ratio(self) -> float:
        return 1 - self.real / self.padded


class NaiveWindow:
    """The per-sample reader: JSON lines + soundfile.read of each file + the same Whisper log-mel."""

    def __init__(self, manifest: Path):
        from tasu.data.features import whisper_log_mel

        self.lines = manifest.read_text().splitlines()
        self.root, self.pos, self.mel = manifest.parent, 0, whisper_log_mel
        self.mel(np.zeros(RATE, np.float32))  # filters

    def __call__(self, n: int) -> tuple[float, float]:
        import soundfile as sf

        seconds = 0.0
        t0 = time.perf_counter()
        for _ in range(n):
            r = json.loads(self.lines[self.pos % len(self.lines)])
            self.pos += 1
            audio, sr = sf.read(self.root / r["path"], dtype="float32")
            assert sr == RATE
            self.mel(audio)
            seconds += len(audio) / sr
        dt = time.perf_counter() - t0
        return n / dt, seconds / dt


def interleaved(readers: dict, rounds: int, window: int) -> dict[str, list[tuple[float, float]]]:
    """Round r times one window of every reader in turn, so slow drifts of the machine's load hit all alike."""
    out: dict[str, list] = {k: [] for k in readers}
    for _ in range(rounds):
        for name, fn in readers.items():
            out[name].append(fn(window))
    return out


def _cpu_work(n: int) -> float:
    import torch

    from tasu.data.features import whisper_log_mel

    torch.set_num_threads(1)
    x = np.random.default_rng(0).standard_normal(RATE * 12).astype(np.float32)
    t0 = time.perf_counter()
    for _ in range(n):
        whisper_log_mel(x)
    return n / (time.perf_counter() - t0)


def parallel_speedup(procs: int, n: int = 60) -> float:
    """Throughput of `procs` processes running the feature loop at once over one process alone: how much the
    machine can gain from DataLoader workers at all."""
    import multiprocessing

    one = _cpu_work(n)
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        many = sum(pool.map(_cpu_work, [n] * procs))
    return many / one


def padding_ratios(cfg, durs: np.ndarray, fixed_batch: int) -> dict:
    from dataclasses import replace

    from tasu.data.batching import make_batcher, padding_ratio

    samples = [{"__input__": "audio", "length": int(d * 100)} for d in durs]

    def ratio(c) -> tuple[float, float]:
        batches = [[s["length"] for s in b] for b in make_batcher(c)(iter(samples))]
        return padding_ratio(batches), float(np.mean([len(b) for b in batches]))

    bucketed, bsz = ratio(cfg)
    fixed, _ = ratio(replace(cfg, max_frames=0, batch_size=fixed_batch, num_buckets=0))
    return {"padding_ratio_bucketed": bucketed, "padding_ratio_fixed": fixed, "mean_bucketed_batch_size": bsz}


def device_name() -> str:
    from tasu.provenance import cpu_name

    return f"cpu: {cpu_name()}, {os.cpu_count()} cores"


def commit() -> tuple[str, bool]:
    """(git rev-parse HEAD or "uncommitted", whether tasu/data or this script differ from it)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "tasu/data", "benchmarks/bench_loader.py"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip(), bool(dirty)
    except (OSError, subprocess.CalledProcessError):
        return "uncommitted", True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--utterances", type=int, default=160)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--max-frames", type=int, default=20000, help="frame budget per batch (200 s of audio)")
    p.add_argument("--fixed-batch", type=int, default=16)
    p.add_argument("--padding-samples", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds; medians are reported")
    p.add_argument("--window", type=int, default=64, help="samples per timed window")
    p.add_argument("--warmup", type=int, default=96, help="samples a loader reads before its timed windows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/loader.json"))
    args = p.parse_args()

    import torch

    torch.set_num_threads(1)
    from tasu.data.config import DataConfig
    from tasu.data.shard import ShardOptions, write_shards
    from tasu.data.shard_index import read_index
    from tasu.model.llm import build_tiny_tokenizer
    from tasu.text.prompts import PromptBuilder, load_prompts

    pb = PromptBuilder(build_tiny_tokenizer(str(ROOT / "tasu/assets/tiny_text.txt"), 160), load_prompts())
    cfg = DataConfig(max_frames=args.max_frames, max_sample_frames=2500, num_workers=args.workers,
                     shuffle_buffer=64, features="whisper_mel")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        manifest, durs = make_corpus(work, args.utterances, args.seed)
        t1 = time.perf_counter()
        summary = write_shards([str(manifest)], str(work / "shards"), ShardOptions(shard_size=32))
        t2 = time.perf_counter()
        shard_bytes = sum(s.bytes for s in read_index(work / "shards/index.json").shards)
        wav_bytes = sum(f.stat().st_size for f in work.glob("*.wav"))
        flac_bytes = sum(f.stat().st_size for f in work.glob("*.flac"))
        from dataclasses import replace

        readers = {"loader": WorkerLoaderWindow(cfg, str(work / "shards"), pb, args.warmup),
                   "single": StreamWindow(replace(cfg, num_workers=0), str(work / "shards"), pb, args.warmup),
                   "naive": NaiveWindow(manifest), "naive_wav": NaiveWindow(work / "train_wav.jsonl")}
        runs = interleaved(readers, args.rounds, args.window)
        loader_pad = readers["loader"].padding_ratio()
    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in runs.items()}
    speedup = parallel_speedup(max(2, args.workers))
    pad_durs = librispeech_like_durations(args.padding_samples, np.random.default_rng(args.seed + 1))
    pads = padding_ratios(cfg, pad_durs, args.fixed_batch)
    sha, dirty = commit()
    result = {
        "samples_per_s": round(med["loader"][0], 2),
        "naive_samples_per_s": round(med["naive"][0], 2),
        "naive_wav_samples_per_s": round(med["naive_wav"][0], 2),
        "audio_seconds_per_s": round(med["loader"][1], 1),
        "single_process_samples_per_s": round(med["single"][0], 2),
        "padding_ratio_bucketed": round(pads["padding_ratio_bucketed"], 4),
        "padding_ratio_fixed": round(pads["padding_ratio_fixed"], 4),
        "padding_ratio_loader": round(loader_pad, 4),
        "mean_bucketed_batch_size": round(pads["mean_bucketed_batch_size"], 2),
        "machine_parallel_speedup": round(speedup, 2),
        "device": device_name(),
        "commit": sha,
        "settings": {
            "corpus": "synthetic LibriSpeech-like: 72% N(14.6s,1.6s) clipped [10,17.5], 25% U[1.5,10], 3% "
                      "U[17.5,24.5]; 16 kHz speech-like tones; FLAC shards of 32 samples",
            "utterances": args.utterances, "rounds": args.rounds, "window_samples": args.window,
            "samples_per_s_per_round": {k: [round(x[0], 1) for x in v] for k, v in runs.items()},
            "corpus_seconds": round(float(durs.sum()), 1),
            "duration_stats_s": {"mean": round(float(durs.mean()), 2), "median": round(float(np.median(durs)), 2),
                                 "min": round(float(durs.min()), 2), "max": round(float(durs.max()), 2)},
            "shard_bytes": shard_bytes, "flac_file_bytes": flac_bytes, "wav_bytes": wav_bytes,
            "shards": len(summary.shards),
            "mode": "features", "features": cfg.features, "n_mels": cfg.n_mels, "num_workers": args.workers,
            "max_frames": cfg.max_frames, "num_buckets": cfg.num_buckets, "shuffle_buffer": cfg.shuffle_buffer,
            "fixed_batch": args.fixed_batch, "padding_samples": args.padding_samples, "threads_per_process": 1,
            "throughput": "medians over rounds; each round times one window of every reader in turn; loaders "
                          "warmed up by `warmup_samples` (worker start-up, bucket filling); the worker loader is "
                          "rebuilt for each window", "warmup_samples": args.warmup,
            "corpus_build_s": round(t1 - t0, 1), "shard_s": round(t2 - t1, 1),
            "naive_reader": "json.loads per line + soundfile.read(file) + whisper_log_mel, one sample at a time, "
                            "one process; naive_samples_per_s reads the FLAC files (LibriSpeech's format), "
                            "naive_wav_samples_per_s the same audio as 16-bit WAV files",
            "python": platform.python_version(), "torch": torch.__version__,
            "load_average_1min_before": round(load_before, 2),
            "data_code_differs_from_commit": dirty,
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
