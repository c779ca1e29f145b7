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
    extra_audio_bytes / extra_audio_paths   list   further voices of a multi-voice (LLaSO) sample, in order; they
                        travel with the first one through every audio stage (`extra_audio`, then `extra_feats`)
Each stage lists the keys it `reads` and `writes`; a stage raises `SampleError` (reason, detail) for a sample
it cannot process, and the pipeline counts and logs it. `SampleFiltered` is a policy filter (length limits),
counted apart from faults.

Pipelines (`build_stages`), split at batching: `pre` stages are cheap and decide the sample's length (they run
before bucketing and are re-run when a resumed stream skips ahead); `post` stages decode audio and compute
features, only for samples in batches actually produced.
    text  (simulated; audio is never read):  pre = tokenize_ctc, simulate, prompt, length, length_filter
    audio (posterior / lego / features):     pre = audio_length, ctc_targets, prompt, length, length_filter
                                             post = decode_audio, resample, features, [spec_augment]
                                             (+ expanded_length after length_filter when the LLM length of the
                                             expanded speech is predictable: see `tasu.data.expansion`)
LLaSO records (meta format "llaso") are prompted with their own human turn (`PromptBuilder.build_turn`), one speech
segment per `<audio>` tag / voice. Every prompted sample carries `prompt_middle` (the text pieces between its
voices: [] for one voice), every audio sample `voice_frames` (feature frames per voice) and, after decoding,
`extra_audio` / `extra_feats` for its voices after the first ([] for one voice).
    audio (ctc: no LLM, no prompt):          pre = audio_length, ctc_labels, length, length_filter
                                             post = as above; text records are faults (needs_audio)
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
from tasu.data.manifests import AUDIO_TAG
from tasu.data.tar_io import read_member

MODES = ("simulated", "posterior", "lego", "features", "ctc")
AUDIO_MODES = ("posterior", "lego", "features", "ctc")


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


def required_ctc_ids(tokenizer, s: dict, why: str) -> tuple[str, list[int]]:
    """(meta['GT'], its CTC unit ids); a missing transcript or one with no CTC unit is a SampleError."""
    gt = s["meta"].get("GT") or ""
    if not gt.strip():
        raise SampleError("no_transcript", why)
    ids = list(tokenizer.encode(gt))
    if not ids:
        raise SampleError("empty_ctc", f"no CTC unit in the transcript {gt[:60]!r}")
    return gt, ids


class TokenizeCTC(Stage):
    """CTC-tokenizer ids of the transcript meta['GT'] (the text simulated into posteriors)."""

    reads = ("meta",)
    writes = ("ctc_ids",)

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, s: dict) -> dict:
        _, ids = required_ctc_ids(self.tokenizer, s, "no GT transcript to simulate (text-only use needs one)")
        return {**s, "ctc_ids": ids}


class CTCTargets(Stage):
    """CTC unit ids of meta['GT'] for a joint CTC loss on audio ([] when the record has no transcript)."""

    reads = ("meta",)
    writes = ("ctc_targets",)

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, s: dict) -> dict:
        gt = s["meta"].get("GT") or ""
        return {**s, "ctc_targets": list(self.tokenizer.encode(gt)) if gt.strip() else []}


class CTCLabels(Stage):
    """ctc mode: CTC unit ids of meta['GT'] (the training target: required) and the LLM fields of a batch left
    empty (no prompt, no answer); `reference` = the transcript (scored by CER / WER)."""

    reads = ("meta",)
    writes = ("ctc_targets", "task", "prompt_prefix", "prompt_suffix", "answer", "reference")

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, s: dict) -> dict:
        gt, ids = required_ctc_ids(self.tokenizer, s, "ctc mode needs the record's GT transcript")
        return {**s, "ctc_targets": ids, "task": s["meta"].get("task") or "ASR", "prompt_prefix": [],
                "prompt_suffix": [], "answer": [], "reference": gt}


class NeedsAudio(Stage):
    """ctc mode: a text-only record cannot train a CTC encoder (counted as a fault, reason needs_audio)."""

    reads = ("__key__",)
    writes = ()

    def __call__(self, s: dict) -> dict:
        raise SampleError("needs_audio", "ctc mode trains on audio; this record is text only")


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


def num_voices(s: dict) -> int:
    """Voices (speech segments) of an audio sample: the shard's count, or 1 + the manifest's further paths."""
    return int(s["meta"].get("num_voices") or 1 + len(s.get("extra_audio_paths", ())))


class Prompt(Stage):
    """LLM ids around the speech and of the answer: PromptBuilder.build(task, target), or for a LLaSO record
    build_turn(meta['human'], target) with one speech segment per `<audio>` (answer=None to generate)."""

    reads = ("meta", "__input__")
    writes = ("task", "prompt_prefix", "prompt_suffix", "answer", "reference", "prompt_middle")

    def __init__(self, builder, with_answer: bool = True):
        self.builder, self.with_answer = builder, with_answer

    def __call__(self, s: dict) -> dict:
        meta = s["meta"]
        task, target = meta.get("task"), meta.get("target") or ""
        if not target.strip():
            raise SampleError("empty_text", "empty target")
        answer = target if self.with_answer else None
        if meta.get("format") == "llaso":
            parts = self._turn(s, answer)
        else:
            try:
                parts = self.builder.build(task, answer)
            except ConfigError as e:
                raise SampleError("unknown_task", str(e)) from None
        return {**s, "task": task, "prompt_prefix": parts.prefix, "prompt_suffix": parts.suffix,
                "answer": parts.answer, "reference": target, "prompt_middle": parts.middle}

    def _turn(self, s: dict, answer: str | None):
        human = s["meta"].get("human")
        if not isinstance(human, str):
            raise SampleError("no_human_turn", "LLaSO record without its 'human' turn (sharded by an older tasu: "
                                               "re-run `tasu shard`)")
        tags = human.count(AUDIO_TAG)
        if s["__input__"] == "text" and tags != 1:
            raise SampleError("multi_audio_text", f"{tags} {AUDIO_TAG} in the turn, but simulated (text) input is "
                                                  "one transcript: one speech segment")
        if s["__input__"] == "audio" and tags != num_voices(s):
            raise SampleError("audio_count_mismatch", f"{tags} {AUDIO_TAG} in the human turn, {num_voices(s)} voices")
        try:
            return self.builder.build_turn(human, answer)
        except ValueError as e:  # ConfigError included: a chat template that cannot place the speech
            raise SampleError("bad_turn", str(e)) from None


class AudioLength(Stage):
    """Expected feature frames of the audio from metadata (no decoding): rate and samples after resampling.
    `voice_frames` lists each voice's frames; `num_frames` / `audio_seconds` are totals over the voices."""

    reads = ("meta", "audio_path", "extra_audio_paths")
    writes = ("num_frames", "audio_seconds", "voice_frames")

    def __init__(self, features: str, sample_rate: int):
        self.features, self.sample_rate = features, sample_rate

    def _info(self, n, sr, path: str | None) -> tuple[int, int]:
        if isinstance(n, int) and isinstance(sr, int) and n > 0 and sr > 0:
            return n, sr
        if path is None:
            raise SampleError("corrupt_member", "metadata lacks num_samples / sample_rate")
        try:
            return audio_info(path, self.sample_rate)
        except AudioError as e:
            raise SampleError(e.reason, str(e)) from None

    def __call__(self, s: dict) -> dict:
        meta = s["meta"]
        sizes = [self._info(meta.get("num_samples"), meta.get("sample_rate"), s.get("audio_path"))]
        if num_voices(s) > 1:
            voices, paths = meta.get("voices") or [], s.get("extra_audio_paths") or []
            for i in range(1, num_voices(s)):
                v = voices[i] if i < len(voices) and isinstance(voices[i], dict) else {}
                sizes.append(self._info(v.get("num_samples"), v.get("sample_rate"),
                                        paths[i - 1] if i - 1 < len(paths) else None))
        frames = [num_frames(resampled_length(n, sr, self.sample_rate), self.features) for n, sr in sizes]
        return {**s, "num_frames": sum(frames), "audio_seconds": sum(n / sr for n, sr in sizes), "voice_frames": frames}


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


class ExpandedLength(Stage):
    """The LLM sequence length once the speech is expanded (prompt pieces + projected frames of every voice +
    answer), predicted from the feature frames; longer than the limit -> SampleError too_long_for_llm (a fault:
    data.on_error=fail stops with the key and the length, skip counts it)."""

    reads = ("num_frames", "voice_frames", "prompt_prefix", "prompt_middle", "prompt_suffix", "answer")
    writes = ("llm_length",)

    def __init__(self, expansion):
        self.expansion = expansion   # tasu.data.expansion.SpeechExpansion

    def __call__(self, s: dict) -> dict:
        frames = s["voice_frames"]
        speech = sum(self.expansion.positions(f) for f in frames)
        text = (len(s["prompt_prefix"]) + sum(len(m) for m in s.get("prompt_middle", ())) + len(s["prompt_suffix"])
                + len(s["answer"]))
        n = text + speech
        if n > self.expansion.limit:
            raise SampleError("too_long_for_llm", f"LLM sequence of {n} positions once the speech is expanded "
                                                  f"({sum(frames)} feature frames -> {speech} speech positions, "
                                                  f"{text} text tokens) > {self.expansion.limit} "
                                                  f"({self.expansion.limit_source})")
        return {**s, "llm_length": n}


class DecodeAudio(Stage):
    """Audio samples [N] float32 mono and their rate, from shard bytes or an in-memory manifest's path; further
    voices into `extra_audio` [(samples, rate), ...]."""

    reads = ("audio_bytes", "audio_ref", "audio_path", "extra_audio_bytes", "extra_audio_paths")
    writes = ("audio", "sample_rate", "extra_audio")

    def __init__(self, default_rate: int = 16000):
        self.default_rate = default_rate

    def _member(self, ref: list, name: str) -> bytes:
        try:
            return read_member(ref, name)
        except (tarfile.TarError, OSError) as e:
            raise SampleError("corrupt_tar", f"re-reading the audio member {name} failed: {e}") from None

    def __call__(self, s: dict) -> dict:
        where = s.get("__where__", "audio")
        n_extra = num_voices(s) - 1
        try:
            if "audio_bytes" in s:
                audio, sr = decode_audio_bytes(s["audio_bytes"], where)
                extra = [decode_audio_bytes(b, f"{where} voice {i}") for i, b in
                         enumerate(s.get("extra_audio_bytes", ()), 1)]
            elif "audio_ref" in s:
                audio, sr = decode_audio_bytes(self._member(s["audio_ref"], "flac"), where)
                extra = [decode_audio_bytes(self._member(s["audio_ref"], f"{i}.flac"), f"{where} voice {i}")
                         for i in range(1, n_extra + 1)]
            else:
                audio, sr = read_audio(s["audio_path"], self.default_rate)
                extra = [read_audio(p, self.default_rate) for p in s.get("extra_audio_paths", ())]
        except AudioError as e:
            raise SampleError(e.reason, str(e)) from None
        if len(extra) != n_extra:
            raise SampleError("corrupt_member", f"{n_extra + 1} voices expected, {len(extra) + 1} found")
        out = {k: v for k, v in s.items() if k not in ("audio_bytes", "audio_ref", "extra_audio_bytes")}
        out.update(audio=audio, sample_rate=sr, extra_audio=extra)
        return out


class Resample(Stage):
    """Audio at `target` Hz (polyphase), every voice."""

    reads = ("audio", "sample_rate", "extra_audio")
    writes = ("audio", "sample_rate", "extra_audio")

    def __init__(self, target: int):
        self.target = target

    def __call__(self, s: dict) -> dict:
        out = {**s, "extra_audio": [(a if r == self.target else resample(a, r, self.target), self.target)
                                    for a, r in s.get("extra_audio", ())]}
        if s["sample_rate"] != self.target:
            out.update(audio=resample(s["audio"], s["sample_rate"], self.target), sample_rate=self.target)
        return out


class Features(Stage):
    """`feats` [F, M] float32: whisper_mel (true length) or Kaldi fbank; the waveform is dropped. Further voices:
    `extra_feats` [[F_i, M], ...]."""

    reads = ("audio", "extra_audio")
    writes = ("feats", "extra_feats")

    def __init__(self, kind: str, n_mels: int):
        self.kind, self.n_mels = kind, n_mels

    def __call__(self, s: dict) -> dict:
        try:
            feats = compute_features(s["audio"], self.kind, self.n_mels)
            extra = [compute_features(a, self.kind, self.n_mels) for a, _ in s.get("extra_audio", ())]
        except ValueError as e:
            raise SampleError("too_short", str(e)) from None
        out = {k: v for k, v in s.items() if k not in ("audio", "extra_audio")}
        out.update(feats=feats, extra_feats=extra)
        return out


class SpecAugment(Stage):
    """SpecAugment masks; the random draws are a function of (seed, epoch, key[, voice]), so reruns match."""

    reads = ("feats", "extra_feats", "__key__", "__epoch__")
    writes = ("feats", "extra_feats")

    def __init__(self, cfg: DataConfig, seed: int):
        self.cfg, self.seed = cfg, seed

    def _mask(self, feats, *key):
        c = self.cfg
        rng = np.random.default_rng(key_seed("specaug", self.seed, *key))
        return spec_augment(feats, rng, c.spec_freq_masks, c.spec_freq_width, c.spec_time_masks, c.spec_time_width,
                            c.spec_time_ratio)

    def __call__(self, s: dict) -> dict:
        extra = [self._mask(f, s["__epoch__"], s["__key__"], i) for i, f in enumerate(s.get("extra_feats", ()), 1)]
        return {**s, "feats": self._mask(s["feats"], s["__epoch__"], s["__key__"]), "extra_feats": extra}


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
                 train: bool = True, seed: int = 0, expansion=None) -> StagePlan:
    """The stage lists of a stream in `mode`. `train=False` (evaluation): prompts without answers, simulation
    at epoch 0, no SpecAugment. Text samples (every sample in simulated mode) never read audio. `expansion`
    (a `tasu.data.expansion.SpeechExpansion`): guard the LLM length of audio samples once the speech is expanded."""
    if mode not in MODES:
        raise ConfigError(f"unknown data mode '{mode}' {MODES}")
    plan = StagePlan()
    vocab, blank = ctc_tokenizer.vocab_size, getattr(ctc_tokenizer, "blank_id", 0)
    audio_post: list[Stage] = [DecodeAudio(cfg.sample_rate), Resample(cfg.sample_rate),
                               Features(cfg.features, cfg.n_mels)]
    if train and cfg.spec_augment:
        audio_post.append(SpecAugment(cfg, seed))
    audio_filter = LengthFilter(cfg.min_sample_frames, cfg.max_sample_frames, "frames")
    if mode == "ctc":
        plan.pre["text"], plan.post["text"] = [NeedsAudio()], []
        plan.pre["audio"] = [AudioLength(cfg.features, cfg.sample_rate), CTCLabels(ctc_tokenizer), Length(),
                             audio_filter]
        plan.post["audio"] = audio_post
        return plan
    prompt = Prompt(prompt_builder, with_answer=train)
    plan.pre["text"] = [TokenizeCTC(ctc_tokenizer), Simulate(sim_cfg, vocab, blank, None if train else 0), prompt,
                        Length(), LengthFilter(1, cfg.max_sample_tokens, "tokens")]
    plan.post["text"] = []
    if mode in AUDIO_MODES:
        plan.pre["audio"] = [AudioLength(cfg.features, cfg.sample_rate), CTCTargets(ctc_tokenizer), prompt, Length(),
                             audio_filter]
        if expansion is not None:
            plan.pre["audio"].append(ExpandedLength(expansion))
        plan.post["audio"] = audio_post
    return plan
