"""Training-step throughput: tasu vs a reference-style baseline, measured side by side in one run.

    python benchmarks/bench_step.py --mode simulated|posterior|features [--steps N] [--device cpu]
    -> benchmarks/results/step_<device>_<mode>.json

Model (same sizes on both sides): CTC vocabulary V = 25055 (as SenseVoice's), Whisper-tiny-shaped encoder
(random weights) with a linear CTC head, linear-silu projector (LayerNorm(V) -> Linear(V, 2048) -> SiLU ->
Linear(2048, H)), a small frozen Llama (`--llm-hidden`, `--llm-layers`) built from a config. Trainable: the
projector (as in TASU). Data: synthetic LibriSpeech-like utterances (5 tiny-text sentences each, ~30 words,
~10 s of tone speech, LibriSpeech-960 averages ~12 s), their transcripts for the text-only step, batch 16.

tasu step: TrainStream batch -> SpeechLLM (sparse exact first layer on simulated posteriors; vectorised PSD on
real posteriors) -> DeepSpeed engine (ZeRO-0, single process) backward / step.
Baseline step (simulated mode; see reference_step.py): what the reference implementation does for a text-only
step — every sample's audio decoded and its fbank computed, the encoder run, PSD by a per-frame loop, dense
[B, L, V] smoothed one-hots built per sample in Python, the dense projector, then the same LLM and optimizer.

Figures: samples/s, tokens/s (answer tokens), audio-seconds/s, padding ratio, loader stall fraction (time in
next(batch) / step time), peak memory (RSS high-water mark on CPU), MFU.
MFU = FLOPs of one step / step time / peak FLOP/s. FLOPs are counted on a real step with
torch.utils.flop_counter.FlopCounterMode (every matmul / conv / attention executed, forward and backward,
trainable and frozen parts alike). Peak FLOP/s on CPU is measured in the same run: the best of a few
2048x2048 fp32 matmuls with the same thread count (on a GPU: the device's dense bf16 peak, given by --peak-tflops).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

V_CTC = 25055


def commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tasu", "benchmarks"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+uncommitted-changes" if dirty else "") if rev else "uncommitted"
    except OSError:
        return "uncommitted"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measured_peak_flops(device) -> float:
    import torch

    a = torch.randn(2048, 2048, device=device)
    b = torch.randn(2048, 2048, device=device)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - t)
    return 2 * 2048**3 / best


def make_corpus(out_dir: Path, n: int, sentences_per_utt: int) -> tuple[Path, Path]:
    """LibriSpeech-like utterances (several tiny-text sentences joined: ~25-35 words, ~8-12 s of tone speech):
    a transcript file (text-only source) and a ps-slm manifest with the audio (audio source / the baseline)."""
    from tasu.synth import write_corpus

    lines = [ln.strip().lower() for ln in (ROOT / "tasu/assets/tiny_text.txt").read_text().splitlines() if ln]
    utts = [" ".join(lines[(i * sentences_per_utt + k) % len(lines)] for k in range(sentences_per_utt))
            for i in range(n)]
    manifest = write_corpus(utts, out_dir / "audio", prefix="utt")
    text = out_dir / "text.txt"
    text.write_text("\n".join(utts) + "\n")
    return text, manifest


def build_config(mode: str, out_dir: Path, llm_hidden: int, llm_layers: int, batch: int, text: Path,
                 manifest: Path):
    from tasu.config.loader import load_config

    units = out_dir / "units.txt"
    chars = list(" abcdefghijklmnopqrstuvwxyz'")
    units.write_text("\n".join(chars + [f"<u{i}>" for i in range(V_CTC - 1 - len(chars))]) + "\n")
    source = text if mode == "simulated" else manifest
    o = [f"output_dir={out_dir}/run", "model.ctc_tokenizer.type=list", f"model.ctc_tokenizer.path={units}",
         "model.encoder.type=whisper", "model.encoder.whisper_size=tiny", "model.projector.type=linear-silu",
         "model.projector.hidden=2048", f"model.llm.hidden_size={llm_hidden}", f"model.llm.num_layers={llm_layers}",
         f"model.llm.intermediate_size={4 * llm_hidden}", "model.llm.num_heads=4", "model.llm.pretrain_steps=0",
         f"data.batch_size={batch}", f"data.train=[{{path: '{source}'}}]", f"stages.0.mode={mode}",
         "stages.0.trainable=[projector]", "train.progress_bar=false", "train.tensorboard=false",
         "data.shuffle_buffer=0"]
    if mode == "features":
        o.append("model.projector.type=linear")
    return load_config("tiny", o)


def time_steps(step_fn, next_batch, steps: int, warmup: int) -> dict:
    """Run warmup + steps; return per-step wall times and loader times (measured steps only)."""
    walls, waits, stats = [], [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next_batch()
        t1 = time.perf_counter()
        info = step_fn(batch)
        t2 = time.perf_counter()
        if i >= warmup:
            walls.append(t2 - t0)
            waits.append(t1 - t0)
            stats.append(info)
    return {"walls": walls, "waits": waits, "stats": stats}


def summarise(run: dict, flops_per_step: float, peak: float) -> dict:
    import statistics

    wall = sum(run["walls"])
    n = sum(s["samples"] for s in run["stats"])
    toks = sum(s["tokens"] for s in run["stats"])
    audio = sum(s["audio_seconds"] for s in run["stats"])
    frames = sum(s["frames"] for s in run["stats"])
    padded = sum(s["padded"] for s in run["stats"])
    step_s = statistics.median(run["walls"])
    return {"samples_per_s": n / wall, "tokens_per_s": toks / wall, "audio_seconds_per_s": audio / wall,
            "step_time_s_median": step_s, "padding_ratio": 1 - frames / padded if padded else 0.0,
            "loader_stall_fraction": sum(run["waits"]) / wall, "flops_per_step": flops_per_step,
            "mfu": flops_per_step / step_s / peak if peak else None, "steps_timed": len(run["walls"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["simulated", "posterior", "features"], default="simulated")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--llm-hidden", type=int, default=256)
    ap.add_argument("--llm-layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak (GPU); CPU peak is measured")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--utterances", type=int, default=48, help="synthetic LibriSpeech-like utterances")
    ap.add_argument("--sentences-per-utterance", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if args.device == "cpu" else args.device)
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tasu import backend
    from tasu.data.loader import TrainStream
    from tasu.model.build import build_speech_llm
    from tasu.model.freeze import apply_freeze
    from tasu.text.prompts import PromptBuilder, load_prompts
    from tasu.train.engine import Engine, build_ds_config, init_distributed

    torch.set_num_threads(args.threads)
    init_distributed()
    tmp = Path(tempfile.mkdtemp(prefix="bench_step_"))
    text, manifest = make_corpus(tmp, args.utterances, args.sentences_per_utterance)
    cfg = build_config(args.mode, tmp, args.llm_hidden, args.llm_layers, args.batch, text, manifest)
    torch.manual_seed(0)
    model = build_speech_llm(cfg)
    apply_freeze(model, ["projector"])
    engine = Engine(model, cfg.train, build_ds_config(cfg.train, args.batch, 1), 1e-4, 0, 10**6)
    speech = engine.module
    pb = PromptBuilder(speech.llm_tokenizer, load_prompts())
    stream = iter(TrainStream(cfg.data, cfg.data.train, args.mode, speech.ctc_tokenizer, pb, cfg.simulation,
                              rank=0, world_size=1, seed=0))
    dev = engine.device

    def batch_stats(batch, ntok):
        from tasu.train.recipe import _padded_frames

        return {"samples": len(batch), "tokens": ntok, "audio_seconds": batch.audio_seconds,
                "frames": batch.num_frames(), "padded": _padded_frames(batch)}

    def tasu_step(batch):
        batch = batch.to(dev)
        loss, ntok = engine.forward(batch, args.mode)
        engine.backward(loss)
        engine.step()
        return batch_stats(batch, ntok)

    with FlopCounterMode(display=False) as fc:
        tasu_step(next(stream))
    tasu_flops = fc.get_total_flops()
    peak = args.peak_tflops * 1e12 if args.peak_tflops else measured_peak_flops(backend.device())
    backend.reset_peak_memory()
    tasu_run = time_steps(tasu_step, lambda: next(stream), args.steps, args.warmup)
    result = {"mode": args.mode, "tasu": summarise(tasu_run, tasu_flops, peak),
              "tasu_peak_memory_bytes": backend.peak_memory_bytes()}

    if not args.no_baseline and args.mode in ("simulated", "posterior"):
        from reference_step import ReferenceStep

        ref = ReferenceStep(speech, cfg, args.mode, dev, manifest)
        with FlopCounterMode(display=False) as fc:
            ref.step(next(ref.batches))
        ref_run = time_steps(ref.step, lambda: next(ref.batches), max(3, args.steps // 2), 1)
        result["baseline"] = summarise(ref_run, fc.get_total_flops(), peak)
        result["baseline_peak_memory_bytes"] = backend.peak_memory_bytes()
        result["speedup"] = result["tasu"]["samples_per_s"] / result["baseline"]["samples_per_s"]
    result.update({
        "device": args.device if args.device != "cpu" else f"cpu: {cpu_name()}",
        "threads": args.threads, "peak_flops": peak,
        "peak_flops_method": "given" if args.peak_tflops else "measured 2048^3 fp32 matmul, same threads",
        "commit": commit(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
        "load_average_1min_at_end": os.getloadavg()[0],
        "config": {"V_ctc": V_CTC, "encoder": "whisper tiny shape (random)", "projector": "linear-silu 2048",
                   "llm_hidden": args.llm_hidden, "llm_layers": args.llm_layers, "batch": args.batch,
                   "precision": "fp32", "zero_stage": 0, "steps": args.steps, "warmup": args.warmup,
                   "utterances": args.utterances, "sentences_per_utterance": args.sentences_per_utterance,
                   "optimizer": "torch AdamW (fused where available) on both sides"},
    })
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"step_{args.device}_{args.mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("mode", "speedup") if k in result}), "->", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
