"""Per-sample stages: pure functions sample -> sample (a new dict; the input is never modified).

A sample is a dict. Keys set by the readers (`sources.py`):
    __key__     str     the record key (unique within a source)
    __source__  int     index of the source in the stream
    __epoch__   int     epoch of this pass over the source
    __where__   str     `shard.tar#i` or `file.jsonl:line` (for logs)
    __input__   str     "text" (simulated posteriors) or "audio" (features); decides the stage pipeline
    meta        dict    the record (data_shards/FORMAT.md): key, task, target, GT, kind, sample_rate, num_samples...
    audio_bytes bytes   encoded audio from a shard (audio input only)
    audio_ref   list    [url, start, end] of a shard sample whose audio was not read yet (resume skip-ahead)
    audio_path  str     audio file / `file.ark:offset` of an in-memory manifest (audio input only)
Each stage lists the keys it `reads` and `writes`; a stage raises `SampleError` (reason, detail) for a sample
it cannot process, and the pipeline counts and logs it. `SampleFiltered` is a policy filter (length limits),
counted apart from faults.

Pipelines (`build_stages`), split at batching: `pre` stages are cheap and decide the sample's length (they run
before bucketing and are re-run when a resumed stream skips ahead); `post` stages decode audio and compute
features, only for samples in batches actually produced.
    text  (simulated; audio is never read):  pre = tokenize_ctc, simulate, prompt, length, length_filter
    audio (posterior / lego / features):     pre = audio_length, ctc_targets, prompt, length, length_filter
                                             post = decode_audio, resample, features, [spec_augment]
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tasu.align.config import SimulationConfig
from tasu.config.fields import ConfigError
from tasu.data.audio_io import AudioError, audio_info, decode_audio_bytes, read_audio, resample, resampled_length
from tasu.data.config import DataConfig
from tasu.data.features import compute_features, num_frames, spec_augment
from tasu.data.tar_io import read_member

MODES = ("simulated", "posterior", "lego", "features")
AUDIO_MODES = ("posterior", "lego", "features")


class SampleError(ValueError):
    """A sample a stage cannot process; `reason` is a short counter name."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SampleFiltered(SampleError):
    """A sample removed by a policy filter (not a fault: does not count toward data.max_skip_ratio)."""


def key_seed(*parts) -> int:
    """A stable 64-bit seed from ints / strings (never Python's salted hash())."""
    h = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


class Stage:
    """Base: `reads` / `writes` name the sample keys; `__call__` returns a new sample dict."""

    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()

    def __call__(self, s: dict) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reads={self.reads}, writes={self.writes})"


class TokenizeCTC(Stage):
    """CTC-tokenizer ids of the transcript meta['GT'] (the text simulated into posteriors)."""

    reads = ("meta",)
    writes = ("ctc_ids",)

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, s: dict) -> dict:
        gt = s["meta"].get("GT") or ""
        if not gt.strip():
            raise SampleError("no_transcript", "no GT transcript to simulate (text-only use needs one)")
        ids = self.tokenizer.encode(gt)
        if not ids:
            raise SampleError("empty_ctc", f"no CTC unit in the transcript {gt[:60]!r}")
        return {**s, "ctc_ids": list(ids)}


class CTCTargets(Stage):
    """CTC unit ids of meta['GT'] for a joint CTC loss on audio ([] when the record has no transcript)."""

    reads = ("meta",)
    writes = ("ctc_targets",)

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, s: dict) -> dict:
        gt = s["meta"].get("GT") or ""
        return {**s, "ctc_targets": list(self.tokenizer.encode(gt)) if gt.strip() else []}


class Simulate(Stage):
    """CPS: simulated CTC frames of ctc_ids; noise is a function of (simulation.seed, epoch, key)."""

    reads = ("ctc_ids", "__key__", "__epoch__")
    writes = ("sim", "num_sim_frames")

    def __init__(self, sim_cfg: SimulationConfig, vocab_size: int, blank_id: int = 0, fixed_epoch: int | None = None):
        self.cfg, self.vocab_size, self.blank_id, self.fixed_epoch = sim_cfg, vocab_size, blank_id, fixed_epoch

    def __call__(self, s: dict) -> dict:
        from tasu.align.cps import simulate

        epoch = s["__epoch__"] if self.fixed_epoch is None else self.fixed_epoch
        try:
            sim = simulate(s["ctc_ids"], self.cfg, self.vocab_size, s["__key__"], epoch, self.blank_id)
        except ValueError as e:
            raise SampleError("bad_ctc_ids", str(e)) from None
        return {**s, "sim": sim, "num_sim_frames": len(sim.ids)}


class Prompt(Stage):
    """LLM ids around the speech and of the answer: PromptBuilder.build(task, target) (answer=None to generate)."""

    reads = ("meta",)
    writes = ("task", "prompt_prefix", "prompt_suffix", "answer", "reference")

    def __init__(self, builder, with_answer: bool = True):
        self.builder, self.with_answer = builder, with_answer

    def __call__(self, s: dict) -> dict:
        meta = s["meta"]
        task, target = meta.get("task"), meta.get("target") or ""
        if not target.strip():
            raise SampleError("empty_text", "empty target")
        try:
            parts = self.builder.build(task, target if self.with_answer else None)
        except ConfigError as e:
            raise SampleError("unknown_task", str(e)) from None
        return {**s, "task": task, "prompt_prefix": parts.prefix, "prompt_suffix": parts.suffix,
                "answer": parts.answer, "reference": target}


class AudioLength(Stage):
    """Expected feature frames of the audio from metadata (no decoding): rate and samples after resampling."""

    reads = ("meta", "audio_path")
    writes = ("num_frames", "audio_seconds")

    def __init__(self, features: str, sample_rate: int):
        self.features, self.sample_rate = features, sample_rate

    def __call__(self, s: dict) -> dict:
        meta = s["meta"]
        n, sr = meta.get("num_samples"), meta.get("sample_rate")
        if not (isinstance(n, int) and isinstance(sr, int) and n > 0 and sr > 0):
            if "audio_path" not in s:
                raise SampleError("corrupt_member", "metadata lacks num_samples / sample_rate")
            try:
                n, sr = audio_info(s["audio_path"], self.sample_rate)
            except AudioError as e:
                raise SampleError(e.reason, str(e)) from None
        frames = num_frames(resampled_length(n, sr, self.sample_rate), self.features)
        return {**s, "num_frames": frames, "audio_seconds": n / sr}


class Length(Stage):
    """`length` used for bucketing and budgets: feature frames (audio) or the LLM sequence length (text:
    prefix + simulated frames + suffix + answer)."""

    reads = ("__input__", "num_frames", "num_sim_frames", "prompt_prefix", "prompt_suffix", "answer")
    writes = ("length",)

    def __call__(self, s: dict) -> dict:
        if s["__input__"] == "audio":
            return {**s, "length": int(s["num_frames"])}
        n = len(s["prompt_prefix"]) + s["num_sim_frames"] + len(s["prompt_suffix"]) + len(s["answer"])
        return {**s, "length": n}


class LengthFilter(Stage):
    """Drops samples outside [lo, hi] (SampleFiltered too_short / too_long)."""

    reads = ("length",)
    writes = ()

    def __init__(self, lo: int, hi: int, unit: str):
        self.lo, self.hi, self.unit = lo, hi, unit

    def __call__(self, s: dict) -> dict:
        n = s["length"]
        if n > self.hi:
            raise SampleFiltered("too_long", f"{n} {self.unit} > {self.hi}")
        if n < self.lo:
            raise SampleFiltered("too_short", f"{n} {self.unit} < {self.lo}")
        return s


class DecodeAudio(Stage):
    """Audio samples [N] float32 mono and their rate, from shard bytes or an in-memory manifest's path."""

    reads = ("audio_bytes", "audio_ref", "audio_path")
    writes = ("audio", "sample_rate")

    def __init__(self, default_rate: int = 16000):
        self.default_rate = default_rate

    def __call__(self, s: dict) -> dict:
        where = s.get("__where__", "audio")
        try:
            if "audio_bytes" in s:
                audio, sr = decode_audio_bytes(s["audio_bytes"], where)
            elif "audio_ref" in s:
                try:
                    data = read_member(s["audio_ref"], "flac")
                except (tarfile.TarError, OSError) as e:
                    raise SampleError("corrupt_tar", f"re-reading the audio member failed: {e}") from None
                audio, sr = decode_audio_bytes(data, where)
            else:
                audio, sr = read_audio(s["audio_path"], self.default_rate)
        except AudioError as e:
            raise SampleError(e.reason, str(e)) from None
        out = {k: v for k, v in s.items() if k not in ("audio_bytes", "audio_ref")}
        out.update(audio=audio, sample_rate=sr)
        return out


class Resample(Stage):
    """Audio at `target` Hz (polyphase)."""

    reads = ("audio", "sample_rate")
    writes = ("audio", "sample_rate")

    def __init__(self, target: int):
        self.target = target

    def __call__(self, s: dict) -> dict:
        if s["sample_rate"] == self.target:
            return s
        return {**s, "audio": resample(s["audio"], s["sample_rate"], self.target), "sample_rate": self.target}


class Features(Stage):
    """`feats` [F, M] float32: whisper_mel (true length) or Kaldi fbank; the waveform is dropped."""

    reads = ("audio",)
    writes = ("feats",)

    def __init__(self, kind: str, n_mels: int):
        self.kind, self.n_mels = kind, n_mels

    def __call__(self, s: dict) -> dict:
        try:
            feats = compute_features(s["audio"], self.kind, self.n_mels)
        except ValueError as e:
            raise SampleError("too_short", str(e)) from None
        out = {k: v for k, v in s.items() if k != "audio"}
        out["feats"] = feats
        return out


class SpecAugment(Stage):
    """SpecAugment masks; the random draws are a function of (seed, epoch, key), so reruns match."""

    reads = ("feats", "__key__", "__epoch__")
    writes = ("feats",)

    def __init__(self, cfg: DataConfig, seed: int):
        self.cfg, self.seed = cfg, seed

    def __call__(self, s: dict) -> dict:
        c = self.cfg
        rng = np.random.default_rng(key_seed("specaug", self.seed, s["__epoch__"], s["__key__"]))
        feats = spec_augment(s["feats"], rng, c.spec_freq_masks, c.spec_freq_width, c.spec_time_masks,
                             c.spec_time_width, c.spec_time_ratio)
        return {**s, "feats": feats}


@dataclass
class StagePlan:
    """Stage lists per input kind ("text", "audio"), split at batching into `pre` and `post`."""

    pre: dict[str, list[Stage]] = field(default_factory=dict)
    post: dict[str, list[Stage]] = field(default_factory=dict)


def run_stages(stages: Sequence[Stage], s: dict) -> dict:
    for stage in stages:
        s = stage(s)
    return s


def build_stages(mode: str, cfg: DataConfig, ctc_tokenizer, prompt_builder, sim_cfg: SimulationConfig,
                 train: bool = True, seed: int = 0) -> StagePlan:
    """The stage lists of a stream in `mode`. `train=False` (evaluation): prompts without answers, simulation
    at epoch 0, no SpecAugment. Text samples (every sample in simulated mode) never read audio."""
    if mode not in MODES:
        raise ConfigError(f"unknown data mode '{mode}' {MODES}")
    plan = StagePlan()
    vocab, blank = ctc_tokenizer.vocab_size, getattr(ctc_tokenizer, "blank_id", 0)
    prompt = Prompt(prompt_builder, with_answer=train)
    plan.pre["text"] = [TokenizeCTC(ctc_tokenizer), Simulate(sim_cfg, vocab, blank, None if train else 0), prompt,
                        Length(), LengthFilter(1, cfg.max_sample_tokens, "tokens")]
    plan.post["text"] = []
    if mode in AUDIO_MODES:
        plan.pre["audio"] = [AudioLength(cfg.features, cfg.sample_rate), CTCTargets(ctc_tokenizer), prompt, Length(),
                             LengthFilter(cfg.min_sample_frames, cfg.max_sample_frames, "frames")]
        post: list[Stage] = [DecodeAudio(cfg.sample_rate), Resample(cfg.sample_rate),
                             Features(cfg.features, cfg.n_mels)]
        if train and cfg.spec_augment:
            post.append(SpecAugment(cfg, seed))
        plan.post["audio"] = post
    return plan
