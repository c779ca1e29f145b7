"""Training-step throughput: tasu vs a reference-style baseline, measured side by side in one run.

    python benchmarks/bench_step.py --mode simulated|posterior|features [--steps N] [--device cpu]
    -> benchmarks/results/step_<device>_<mode>.json

Model (one model object, used by both sides): CTC vocabulary V = 25055 (SenseVoice's size); a Whisper-tiny-shaped
encoder (random weights, true-length path) with a linear CTC head whose blank bias is shifted so that 74 % of the
frames are blank-dominant and PSD drops them (`--blank-dropped`, as a trained CTC encoder; with random weights PSD
would keep every frame); TASU's linear-silu projector LayerNorm(V) -> Linear(V, 2048) -> SiLU -> Linear(2048, H)
(51.9 M parameters at H = 256, the only trainable part, as in TASU); a small frozen Llama built from a config
(`--llm-hidden` 256, `--llm-layers` 4, intermediate 4H, head dim 64: 4.3 M parameters), the small end of "a few
layers of hidden 256-512"; it is not shrunk further to favour the ratio (its forward/backward is the same work on
both sides, so a bigger LLM lowers the ratio: see README).
Tokenisation (`--units word`, `--llm-vocab 512`): the CTC units are the corpus words (with and without a leading
space) + letters, padded with never-used units to exactly V, so a transcript gives ~1 CPS frame per word, as a 25k
BPE vocabulary does on this common-word text; the tiny LLM tokenizer is a BPE that ends up with 303 tokens, ~1
token per word as a real LLM tokenizer on this text. `--units char --llm-vocab 64` gives the previous
character-level setup (5-6 frames and ~4.6 LLM tokens per word: 4x longer sequences than a real stack sees).
Data: 48 synthetic LibriSpeech-like utterances (5 tiny-text sentences each, ~40 words, ~11 s of tone speech as
FLAC; LibriSpeech-960 averages ~12 s), their transcripts for the text-only step, batch 16, fp32, one thread.

tasu step (`TasuStep`): the step `tasu train` runs (tasu/train/recipe.py) for the first stage on one rank: the
recipe's model build, freeze policy, DeepSpeed engine (ZeRO-0) and `TrainStream`; per step batch.to -> engine
forward -> host read of the loss (finite check) -> engine backward -> engine step (clipping + fused AdamW).
Simulated mode reads the transcript file only (no audio, no encoder) and the projector's first layer runs the
`sim_project` op on the sparse CPS layout (O(L*D), no [B, L, V] anywhere).
Baseline step (reference_step.py): what the reference implementation does for a text-only step: every sample's
audio decoded and its features computed in Python, the encoder run on the batch, PSD by a per-frame loop with a
host sync per frame, dense [B, L, V] smoothed one-hots built per sample in Python, the dense projector, then the
same LLM, the same optimizer and the same clipping (both sides: torch AdamW, so the figure isolates the data path).
Posterior mode: both sides run the encoder and the dense projector on PSD output; they differ in PSD (per-frame
loop vs the `psd_compress` op) and in data loading.

Figures: samples/s, tokens/s (answer tokens), audio-seconds/s, padding ratio, loader stall fraction (time in
next(batch) / step time), peak memory (RSS high-water mark on CPU, reset before each side's timed steps so each
side's peak is its own), MFU, and seconds per phase (`phases_s_median`: tasu from module hooks on extra steps,
the baseline from timestamps in its step).
MFU = FLOPs of one step / step time / peak FLOP/s. FLOPs are counted on a real step with
torch.utils.flop_counter.FlopCounterMode (every matmul / conv / attention executed, forward and backward,
trainable and frozen parts alike). Peak FLOP/s on CPU is measured in the same run: the best of a few
2048x2048 fp32 matmuls with the same thread count (on a GPU: the device's dense bf16 peak, given by --peak-tflops).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tasu.provenance import cpu_name, git_commit, malloc_library  # noqa: E402

V_CTC = 25055


# Dense bf16 tensor-core peaks from the vendors' datasheets (no sparsity), matched on the device name in order.
DATASHEET_BF16_PEAK = [("H100 PCIe", 756e12), ("H100", 989.4e12), ("H200", 989.4e12), ("A100", 312e12)]


def measured_peak_flops(device) -> float:
    """Best FLOP/s of a few square matmuls: 2048^2 fp32 on CPU (same threads), 8192^2 bf16 on an accelerator."""
    import torch

    from tasu import backend

    n, dtype = (2048, torch.float32) if device.type == "cpu" else (8192, torch.bfloat16)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(5 if device.type == "cpu" else 12):
        backend.synchronize()
        t = time.perf_counter()
        a @ b
        backend.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def datasheet_peak(name: str) -> float | None:
    return next((peak for key, peak in DATASHEET_BF16_PEAK if key in name), None)


def make_corpus(out_dir: Path, n: int, sentences_per_utt: int) -> tuple[Path, Path, list[str]]:
    """LibriSpeech-like utterances (several tiny-text sentences joined: ~25-35 words, ~8-12 s of tone speech):
    a transcript file (text-only source) and a ps-slm manifest with the audio (audio source / the baseline)."""
    from tasu.synth import write_corpus

    lines = [ln.strip().lower() for ln in (ROOT / "tasu/assets/tiny_text.txt").read_text().splitlines() if ln]
    utts = [" ".join(lines[(i * sentences_per_utt + k) % len(lines)] for k in range(sentences_per_utt))
            for i in range(n)]
    manifest = write_corpus(utts, out_dir / "audio", prefix="utt")
    text = out_dir / "text.txt"
    text.write_text("\n".join(utts) + "\n")
    return text, manifest, utts


def write_units(path: Path, units: str, utts: list[str]) -> Path:
    """A CTC unit list of exactly V_CTC classes (blank included) for `model.ctc_tokenizer.type=list`.

    units="word": each corpus word as a unit, with and without its leading space (how a 25k-unit BPE such as
    SenseVoice's covers common English words: one unit per word), plus the letters as a fallback, padded with
    never-used units to V_CTC - 1. units="char": the letters only (the list format cannot hold a bare space, so
    spaces are dropped), padded the same way: 5-6 CPS frames per word instead of ~1."""
    letters = list("abcdefghijklmnopqrstuvwxyz'")
    words = sorted({w for u in utts for w in u.split()})
    base = ([f" {w}" for w in words] + words if units == "word" else []) + letters
    base = list(dict.fromkeys(base))
    path.write_text("\n".join(base + [f"<u{i}>" for i in range(V_CTC - 1 - len(base))]) + "\n")
    return path


def llm_folder(out_dir: Path, config_json: Path, vocab: int) -> Path:
    """An HF folder for `model.llm.random_init`: the given config.json (the LLM's shape) beside the tiny BPE
    tokenizer (the benchmark's text needs no more; the model keeps its config's full vocabulary and LM head)."""
    from tasu.model.llm import build_tiny_tokenizer

    folder = out_dir / "llm"
    build_tiny_tokenizer(str(ROOT / "tasu/assets/tiny_text.txt"), vocab).save_pretrained(folder)
    shutil.copyfile(config_json, folder / "config.json")
    return folder


def build_config(mode: str, out_dir: Path, args, text: Path, manifest: Path, utts: list[str]):
    from tasu.config.loader import load_config

    units = write_units(out_dir / "units.txt", args.units, utts)
    source = text if mode == "simulated" else manifest
    h = args.llm_hidden
    if args.llm_config:
        llm = ["model.llm.type=hf", f"model.llm.path={llm_folder(out_dir, Path(args.llm_config), args.llm_vocab)}",
               "model.llm.random_init=true", f"model.llm.dtype={'bfloat16' if args.precision == 'bf16' else 'float32'}"]
    else:
        llm = [f"model.llm.hidden_size={h}", f"model.llm.num_layers={args.llm_layers}",
               f"model.llm.intermediate_size={4 * h}", f"model.llm.num_heads={max(4, h // 64)}",
               f"model.llm.vocab_size={args.llm_vocab}", "model.llm.pretrain_steps=0"]
    o = [f"output_dir={out_dir}/run", "model.ctc_tokenizer.type=list", f"model.ctc_tokenizer.path={units}",
         "model.encoder.type=whisper", "model.encoder.whisper_size=tiny", "model.projector.type=linear-silu",
         "model.projector.hidden=2048", *llm,
         f"data.batch_size={args.batch}", f"data.train=[{{path: '{source}'}}]", f"stages.0.mode={mode}",
         "stages.0.trainable=[projector]", "train.progress_bar=false", "train.tensorboard=false",
         "data.shuffle_buffer=0", f"train.precision={args.precision}", f"train.zero_stage={args.zero_stage}"]
    if mode == "features":
        o.append("model.projector.type=linear")
    return load_config("tiny", o + list(args.override))


def time_steps(step_fn, next_batch, steps: int, warmup: int) -> dict:
    """Run warmup + steps; return per-step wall times and loader times (measured steps only)."""
    from tasu import backend

    walls, waits, stats = [], [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next_batch()
        t1 = time.perf_counter()
        info = step_fn(batch)
        backend.synchronize()                         # accelerators: the step's queued work is part of its time
        t2 = time.perf_counter()
        if i >= warmup:
            walls.append(t2 - t0)
            waits.append(t1 - t0)
            stats.append(info)
    return {"walls": walls, "waits": waits, "stats": stats}


def summarise(run: dict, flops_per_step: float, peak: float) -> dict:
    wall = sum(run["walls"])
    n = sum(s["samples"] for s in run["stats"])
    toks = sum(s["tokens"] for s in run["stats"])
    audio = sum(s["audio_seconds"] for s in run["stats"])
    frames = sum(s["frames"] for s in run["stats"])
    padded = sum(s["padded"] for s in run["stats"])
    step_s = statistics.median(run["walls"])
    positions = [s.get("llm_positions") for s in run["stats"]]
    return {"samples_per_s": n / wall, "tokens_per_s": toks / wall, "audio_seconds_per_s": audio / wall,
            "step_time_s_median": step_s, "speech_frames_per_sample": frames / n,
            "llm_seq_len_mean": sum(positions) / n if None not in positions else None,
            "padding_ratio": 1 - frames / padded if padded else 0.0,
            "loader_stall_fraction": sum(run["waits"]) / wall, "flops_per_step": flops_per_step,
            "mfu": flops_per_step / step_s / peak if peak else None, "steps_timed": len(run["walls"])}


def calibrate_blank(speech, cfg, manifest: Path, dropped: float) -> float:
    """Shift the random CTC head's blank bias so that a fraction `dropped` of the frames of one batch has a blank
    probability >= the PSD threshold (PSD drops them), as a trained CTC encoder's posteriors do; returns the shift.
    With random weights every frame is otherwise kept and the audio modes would project ~10x more frames than a
    real run. Both sides use this encoder."""
    import torch
    from reference_step import _records, features_batch

    from tasu.model.encoders.base import length_mask

    recs = _records(str(manifest))[: cfg.data.batch_size]
    x, lengths, _ = features_batch(recs, cfg)
    enc = speech.encoder
    w = next(enc.parameters())
    with torch.no_grad():
        out = enc(x.to(w.device, w.dtype), lengths.to(w.device))
        logits = out.logits.float()                                                   # [B, T, V]
        margin = logits[..., 0] - torch.logsumexp(logits[..., 1:], dim=-1)            # log(p_blank / (1 - p_blank))
        margin = margin[length_mask(out.lengths, logits.shape[1])]
        thr = cfg.psd.blank_threshold
        shift = math.log(thr / (1 - thr)) - float(torch.quantile(margin, 1.0 - dropped))
        enc.ctc_head.out.bias[0] += shift
    return shift


class TasuStep:
    """tasu's training step as `tasu train` runs it (tasu/train/recipe.py, first stage, one rank): the stage model
    from `build_stage_model`, the stage's freeze policy, the DeepSpeed engine with the recipe's ds config, the
    recipe's `TrainStream` (simulated mode reads the transcripts only: no audio, no encoder), and per step
    batch.to(device) -> engine forward -> the finite-loss check (a host read of the loss) -> engine backward ->
    engine step (gradient clipping + fused AdamW) -> the logged LR and grad norm."""

    def __init__(self, cfg, out: Path):
        from tasu.train.recipe import stage_setup

        self.mode = cfg.stages[0].mode
        self.engine, stream = stage_setup(cfg, 0, out, rank=0, world=1)
        self.speech = self.engine.module
        self.stream = iter(stream)
        self.marks: dict[str, float] | None = None   # phase timestamps, only while `phases` runs

    def next_batch(self):
        return next(self.stream)

    def _mark(self, name: str) -> None:
        if self.marks is not None:
            self.marks[name] = time.perf_counter()

    def step(self, batch) -> dict:
        from tasu.train.recipe import _padded_frames

        engine = self.engine
        batch = batch.to(engine.device)
        mode = "simulated" if batch.is_text_only else self.mode
        loss, ntok = engine.forward(batch, mode)
        if not math.isfinite(float(loss.detach())):
            raise RuntimeError(f"non-finite loss in the benchmark step (keys {batch.keys[:4]})")
        self._mark("fwd_end")
        engine.backward(loss)
        self._mark("bwd_end")
        engine.step()
        self._mark("step_end")
        engine.lr(), engine.grad_norm()                      # what the recipe logs every step
        positions = None                                     # LLM input positions (simulated: known from the batch)
        if batch.posteriors is not None and batch.feat_lengths is None:
            positions = batch.num_frames() + sum(len(p) + len(s) + len(a) for p, s, a in
                                                 zip(batch.prompt_prefix, batch.prompt_suffix, batch.answer))
        return {"samples": len(batch), "tokens": ntok, "audio_seconds": batch.audio_seconds,
                "frames": batch.num_frames(), "padded": _padded_frames(batch), "llm_positions": positions}

    def phases(self, steps: int) -> dict[str, float]:
        """Median seconds per phase over `steps` extra steps (CPU only: no asynchronous work to wait for), timed
        by module hooks on the same engine step: loader; before_projector (batch.to, the engine's forward entry;
        in audio modes also the encoder and PSD); projector forward; LLM forward + splice + loss; LLM backward
        (down to the projector's output); projector backward (+ DeepSpeed's backward epilogue); optimizer step
        (gradient clipping + AdamW + scheduler)."""
        speech, marks = self.speech, {}
        self.marks = marks

        def mark(name):
            return lambda *a: marks.__setitem__(name, time.perf_counter())

        def out_hook(module, args, out):
            marks["proj_out"] = time.perf_counter()
            out[0].register_hook(lambda g: marks.__setitem__("proj_grad", time.perf_counter()))

        hooks = [speech.projector.register_forward_pre_hook(mark("proj_in")),
                 speech.projector.register_forward_hook(out_hook)]
        rows = []
        try:
            for _ in range(steps):
                t0 = time.perf_counter()
                batch = self.next_batch()
                t1 = time.perf_counter()
                self.step(batch)
                rows.append({"loader": t1 - t0, "projector_forward": marks["proj_out"] - marks["proj_in"],
                             "llm_forward_splice_loss": marks["fwd_end"] - marks["proj_out"],
                             "llm_backward": marks["proj_grad"] - marks["fwd_end"],
                             "projector_backward": marks["bwd_end"] - marks["proj_grad"],
                             "optimizer_step": marks["step_end"] - marks["bwd_end"],
                             "before_projector": marks["proj_in"] - t1})
                marks.clear()
        finally:
            self.marks = None
            for h in hooks:
                h.remove()
        return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def profile_steps(tasu: TasuStep, steps: int, device: str, path: Path) -> str:
    """`steps` more tasu steps under torch.profiler; writes the ops' table (by device time on an accelerator, by
    CPU time on the CPU) and the wall time to `path`; returns the file name."""
    from torch.profiler import ProfilerActivity, profile

    from tasu import backend

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    backend.synchronize()
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        for _ in range(steps):
            tasu.step(tasu.next_batch())
        backend.synchronize()
    wall = time.perf_counter() - t0
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=45, max_name_column_width=70)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{steps} steps, {wall:.3f} s wall under the profiler ({wall / steps * 1e3:.1f} ms/step), "
                    f"sorted by {key}\n{table}\n")
    return path.name


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["simulated", "posterior", "features"], default="simulated")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--baseline-steps", type=int, default=None, help="timed baseline steps (default: steps // 2, "
                    "at least 3)")
    ap.add_argument("--phase-steps", type=int, default=4, help="extra tasu steps timed phase by phase (CPU; 0: none)")
    ap.add_argument("--profile-steps", type=int, default=0,
                    help="extra tasu steps under torch.profiler; the top ops go to <out stem>_profile.txt")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--llm-hidden", type=int, default=256)
    ap.add_argument("--llm-layers", type=int, default=4)
    ap.add_argument("--llm-vocab", type=int, default=512,
                    help="BPE vocabulary requested from the tiny LLM tokenizer (512 gives ~1 token per word on "
                         "the tiny text; 64 gives ~4.6, nearly characters)")
    ap.add_argument("--units", choices=["word", "char"], default="word",
                    help="CTC units padded to V = 25055: word (~1 CPS frame per word, as a 25k BPE) or char")
    ap.add_argument("--blank-dropped", type=float, default=0.74,
                    help="fraction of encoder frames made blank-dominant (PSD drops them; 0.74 as in kernels_cpu.json)")
    ap.add_argument("--llm-config", default=None,
                    help="HF config.json of the frozen LLM, built with random weights (e.g. "
                         "benchmarks/configs/qwen2.5-1.5b.json); default: the tiny Llama of --llm-hidden/-layers")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--zero-stage", type=int, choices=[0, 1, 2, 3], default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="extra tasu config override for both sides' model and tasu's loader (repeatable), e.g. "
                         "data.num_workers=4")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="peak for MFU; default: CPU measured, GPU the datasheet's dense bf16 figure for its name")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--utterances", type=int, default=48, help="synthetic LibriSpeech-like utterances")
    ap.add_argument("--sentences-per-utterance", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("DS_ACCELERATOR", args.device)
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tasu import backend
    from tasu.train.engine import init_distributed

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    init_distributed()
    tmp = Path(tempfile.mkdtemp(prefix="bench_step_"))
    text, manifest, utts = make_corpus(tmp, args.utterances, args.sentences_per_utterance)
    cfg = build_config(args.mode, tmp, args, text, manifest, utts)
    tasu = TasuStep(cfg, tmp / "run")
    speech = tasu.speech
    if speech.ctc_tokenizer.vocab_size != V_CTC:
        raise RuntimeError(f"CTC vocabulary is {speech.ctc_tokenizer.vocab_size}, the benchmark fixes V = {V_CTC}")
    blank_shift = calibrate_blank(speech, cfg, manifest, args.blank_dropped)

    with FlopCounterMode(display=False) as fc:
        tasu.step(tasu.next_batch())
    tasu_flops = fc.get_total_flops()
    measured_peak = measured_peak_flops(backend.device())
    device_name = backend.device_name()
    if args.peak_tflops:
        peak, peak_method = args.peak_tflops * 1e12, "given (--peak-tflops)"
    elif args.device != "cpu" and datasheet_peak(device_name):
        peak, peak_method = datasheet_peak(device_name), f"datasheet dense bf16 peak of '{device_name}'"
    else:
        peak, peak_method = measured_peak, "measured 2048^3 fp32 matmul, same threads"
    own_peak = backend.reset_peak_memory()                  # not the calibration's encoder pass
    tasu_run = time_steps(tasu.step, tasu.next_batch, args.steps, args.warmup)
    result = {"mode": args.mode, "tasu": summarise(tasu_run, tasu_flops, peak),
              "tasu_mfu_vs_measured_matmul": tasu_flops / statistics.median(tasu_run["walls"]) / measured_peak,
              "tasu_peak_memory_bytes": backend.peak_memory_bytes(),
              "peak_memory_method": ("process peak (could not be reset)" if not own_peak else
                                     f"{'VmHWM' if args.device == 'cpu' else 'device peak allocation'} reset before "
                                     "each side's timed steps (each side's own peak)")}
    if args.device == "cpu" and args.phase_steps:
        result["tasu"]["phases_s_median"] = tasu.phases(args.phase_steps)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"step_{args.device}_{args.mode}.json"
    if args.profile_steps:
        result["profile_file"] = profile_steps(tasu, args.profile_steps, args.device,
                                               out.with_name(out.stem + "_profile.txt"))

    if not args.no_baseline and args.mode in ("simulated", "posterior"):
        from reference_step import ReferenceStep

        own_peak = backend.reset_peak_memory()
        ref = ReferenceStep(speech, cfg, args.mode, tasu.engine.device, manifest)
        with FlopCounterMode(display=False) as fc:
            ref.step(next(ref.batches))
        n_ref = args.baseline_steps or max(3, args.steps // 2)
        ref_run = time_steps(ref.step, lambda: next(ref.batches), n_ref, 1)
        result["baseline"] = summarise(ref_run, fc.get_total_flops(), peak)
        phases = [st["phases"] for st in ref_run["stats"]]
        result["baseline"]["phases_s_median"] = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
        result["baseline_peak_memory_bytes"] = backend.peak_memory_bytes()
        result["speedup"] = result["tasu"]["samples_per_s"] / result["baseline"]["samples_per_s"]
    llm = speech.llm.config
    result.update({
        "device": device_name if args.device != "cpu" else f"cpu: {cpu_name()}",
        "threads": args.threads, "malloc": malloc_library(), "peak_flops": peak, "peak_flops_method": peak_method,
        "measured_matmul_flops": measured_peak,
        "measured_matmul_method": "best of 2048^3 fp32 (CPU) / 8192^3 bf16 (GPU) matmuls in this run",
        "commit": git_commit(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
        "load_average_1min_at_start": load_start, "load_average_1min_at_end": os.getloadavg()[0],
        "config": {"V_ctc": V_CTC, "ctc_units": args.units, "encoder": "whisper tiny shape (random), linear CTC head",
                   "encoder_frames_dropped_by_psd": args.blank_dropped, "ctc_blank_bias_shift": blank_shift,
                   "projector": "linear-silu: LayerNorm(V) -> Linear(V, 2048) -> SiLU -> Linear(2048, H)",
                   "projector_params": sum(p.numel() for p in speech.projector.parameters()),
                   "llm": {"config": args.llm_config or "tiny Llama", "type": type(speech.llm).__name__,
                           "hidden": llm.hidden_size, "layers": llm.num_hidden_layers,
                           "intermediate": llm.intermediate_size, "heads": llm.num_attention_heads,
                           "kv_heads": getattr(llm, "num_key_value_heads", None), "vocab": llm.vocab_size,
                           "params": sum(p.numel() for p in speech.llm.parameters()), "frozen": True,
                           "attention": getattr(llm, "_attn_implementation", None)},
                   "overrides": list(args.override), "num_workers": cfg.data.num_workers,
                   "batch": args.batch, "precision": args.precision, "zero_stage": args.zero_stage,
                   "steps": args.steps,
                   "warmup": args.warmup, "utterances": args.utterances,
                   "sentences_per_utterance": args.sentences_per_utterance,
                   "optimizer": "torch AdamW (fused where available) on both sides, same gradient clipping"},
    })
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)                  # the synthetic corpus and unit list
    print(json.dumps({k: result[k] for k in ("mode", "speedup") if k in result}), "->", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
