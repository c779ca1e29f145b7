"""Typed config of the data pipeline (the `data:` section of a tasu YAML config)."""

from __future__ import annotations

from dataclasses import dataclass

from tasu.config.fields import check, doc_field

SOURCE_KINDS = ("auto", "text", "audio")
FEATURE_KINDS = ("whisper_mel", "fbank")
ON_ERROR = ("skip", "fail")
WORKER_START = ("fork", "spawn", "forkserver")


@dataclass
class SourceConfig:
    """One data source: shards (index / folder / glob / brace / pipe: URL) or a plain .txt / .jsonl / .json file."""

    path: str = doc_field("", "shard index.json, shard folder, shard glob/brace pattern, pipe: URL, or a "
                              ".txt (one sentence per line) / .jsonl / .json manifest read in memory")
    weight: float = doc_field(1.0, "mixing weight among the sources of one stream (normalised to sum 1)")
    kind: str = doc_field("auto", "text (transcripts only, simulated) | audio | auto (from the index / records)")
    task: str = doc_field("ASR", "task of records that carry none (plain text, text JSON lines)")
    index: str | None = doc_field(None, "index.json of the shards when it is not next to them (e.g. pipe: URLs)")
    name: str | None = doc_field(None, "name used in logs and stats (default: the path's file name)")

    def __post_init__(self) -> None:
        check(isinstance(self.path, str) and self.path.strip() != "", "data.source.path", "must be a non-empty path")
        check(self.weight > 0.0, "data.source.weight", f"must be > 0, got {self.weight}")
        check(self.kind in SOURCE_KINDS, "data.source.kind", f"unknown kind '{self.kind}' {SOURCE_KINDS}")
        check(bool(self.task), "data.source.task", "must be a non-empty task name")

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        stem = self.path.rstrip("/").rsplit("/", 1)[-1]
        return stem or self.path


@dataclass
class DataConfig:
    """Sources, per-sample stages and batching of training and evaluation data."""

    train: list[SourceConfig] = doc_field(None, "training sources (mixed by weight)", factory=list)
    eval: list[SourceConfig] = doc_field(None, "evaluation sources (read in order, each sample once)", factory=list)
    batch_size: int = doc_field(8, "fixed micro-batch size (samples), used when the relevant budget is 0")
    max_tokens: int = doc_field(0, "token budget per text batch: batch size x longest LLM sequence (0 = off)")
    max_frames: int = doc_field(0, "feature-frame budget per audio batch: batch size x longest input (0 = off)")
    num_buckets: int = doc_field(30, "length buckets, geometric up to the max sample length (0/1 = no bucketing)")
    bucket_boundaries: list[int] | None = doc_field(None, "explicit bucket upper bounds (frames / tokens); "
                                                          "overrides num_buckets")
    max_sample_frames: int = doc_field(3000, "audio samples with more feature frames are skipped (100 frames = 1 s)")
    min_sample_frames: int = doc_field(10, "audio samples with fewer feature frames are skipped")
    max_sample_tokens: int = doc_field(1024, "samples with a longer LLM sequence are skipped (text: filtered; audio "
                                             "without PSD: checked once the speech is expanded, a counted fault)")
    shuffle_buffer: int = doc_field(1000, "sample shuffle buffer per worker and source (0/1 = no sample shuffle)")
    shuffle_shards: bool = doc_field(True, "epoch-seeded shard (or line) order")
    num_workers: int = doc_field(0, "DataLoader worker processes per rank (0 = in the training process)")
    prefetch_factor: int = doc_field(2, "batches prefetched per worker")
    worker_start: str = doc_field("fork", "how DataLoader workers start: fork (fast; the default on Linux) | spawn | "
                                          "forkserver (when forking the training process is unsafe)")
    features: str = doc_field("whisper_mel", "whisper_mel (Whisper log-mel, true length) | fbank (Kaldi)")
    n_mels: int = doc_field(80, "mel bins (80; 128 for Whisper large-v3)")
    spec_augment: bool = doc_field(False, "SpecAugment on training features (seeded per sample key and epoch)")
    spec_freq_masks: int = doc_field(2, "SpecAugment: frequency masks per sample")
    spec_freq_width: int = doc_field(27, "SpecAugment: maximum width of a frequency mask (bins)")
    spec_time_masks: int = doc_field(2, "SpecAugment: time masks per sample")
    spec_time_width: int = doc_field(40, "SpecAugment: maximum width of a time mask (frames)")
    spec_time_ratio: float = doc_field(0.2, "SpecAugment: a time mask covers at most this fraction of the frames")
    sample_rate: int = doc_field(16000, "audio is resampled to this rate before features")
    max_skip_ratio: float = doc_field(0.01, "fail when skipped (bad) samples exceed this fraction of samples read")
    skip_check_after: int = doc_field(100, "the skip ratio is enforced once this many samples were read")
    on_error: str = doc_field("skip", "skip (count, log, go on) | fail (stop at the first bad sample)")

    def __post_init__(self) -> None:
        for section in ("train", "eval"):
            sources = getattr(self, section)
            for i, src in enumerate(sources):
                check(isinstance(src, SourceConfig), f"data.{section}.{i}",
                      f"must be a source mapping {{path, weight, kind, task}}, got {type(src).__name__}")
        check(self.batch_size >= 1, "data.batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.max_tokens >= 0, "data.max_tokens", "must be >= 0 (0 = off)")
        check(self.max_frames >= 0, "data.max_frames", "must be >= 0 (0 = off)")
        check(self.num_buckets >= 0, "data.num_buckets", "must be >= 0")
        if self.bucket_boundaries is not None:
            b = self.bucket_boundaries
            check(len(b) > 0 and all(x > 0 for x in b) and list(b) == sorted(set(b)), "data.bucket_boundaries",
                  f"must be a non-empty strictly increasing list of positive lengths, got {b}")
        check(0 < self.min_sample_frames <= self.max_sample_frames, "data.min_sample_frames",
              "must be > 0 and <= data.max_sample_frames")
        check(self.max_sample_tokens > 0, "data.max_sample_tokens", "must be > 0")
        check(self.max_frames == 0 or self.max_frames >= self.max_sample_frames, "data.max_frames",
              f"must be 0 or >= data.max_sample_frames ({self.max_sample_frames}) so every sample fits a batch")
        check(self.max_tokens == 0 or self.max_tokens >= self.max_sample_tokens, "data.max_tokens",
              f"must be 0 or >= data.max_sample_tokens ({self.max_sample_tokens}) so every sample fits a batch")
        check(self.shuffle_buffer >= 0, "data.shuffle_buffer", "must be >= 0")
        check(self.num_workers >= 0, "data.num_workers", "must be >= 0")
        check(self.prefetch_factor >= 1, "data.prefetch_factor", "must be >= 1")
        check(self.worker_start in WORKER_START, "data.worker_start", f"must be one of {WORKER_START}")
        check(self.features in FEATURE_KINDS, "data.features", f"unknown features '{self.features}' {FEATURE_KINDS}")
        check(self.n_mels in (80, 128), "data.n_mels", f"must be 80 or 128, got {self.n_mels}")
        check(self.sample_rate == 16000, "data.sample_rate",
              f"features are defined at 16 kHz (hop 160 = 10 ms); got {self.sample_rate}")
        for name in ("spec_freq_masks", "spec_freq_width", "spec_time_masks", "spec_time_width"):
            check(getattr(self, name) >= 0, f"data.{name}", "must be >= 0")
        check(0.0 <= self.spec_time_ratio <= 1.0, "data.spec_time_ratio", "must be in [0, 1]")
        check(0.0 <= self.max_skip_ratio <= 1.0, "data.max_skip_ratio", f"must be in [0, 1], got {self.max_skip_ratio}")
        check(self.skip_check_after >= 1, "data.skip_check_after", "must be >= 1")
        check(self.on_error in ON_ERROR, "data.on_error", f"must be skip or fail, got '{self.on_error}'")
