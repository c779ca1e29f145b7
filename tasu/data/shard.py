"""`tasu shard MANIFEST... OUT_DIR`: manifests -> WebDataset tar shards + index.json (+ bad_records.jsonl).

Every input record becomes one sample or one reported bad record (file, line, key, reason); the summary counts
both. Audio is stored as 16-bit FLAC with its rate; text-only records store JSON only. See data_shards/FORMAT.md.

Re-running into the same folder replaces the previous shard set: shards are built in a temporary folder, then
the old set (the shards the old index lists, and any `<prefix>-*.tar`) is removed and the new one moved in,
index last. A failed run (`--on-error fail`, or no good record) leaves the folder as it was.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tasu.data.audio_io import AudioError, encode_flac, read_audio, resample
from tasu.data.manifests import BadRecord, Record, read_manifest
from tasu.data.shard_index import INDEX_NAME, ShardIndex, ShardInfo, is_index_file, read_index, write_index
from tasu.data.tar_io import ShardTarWriter, read_range

log = logging.getLogger("tasu.data")

DEFAULT_SHARD_SIZE = 1000


class ShardError(RuntimeError):
    """Sharding stopped (fail mode hit a bad record, or nothing could be written)."""


@dataclass
class ShardOptions:
    shard_size: int | None = None  # samples per shard (default 1000 when num_shards is not set either)
    num_shards: int | None = None  # exact number of shards (samples balanced, sizes differ by <= 1)
    on_error: str = "skip"  # skip | fail
    sample_rate: int = 16000  # required rate of stored audio; 0 keeps every file's own rate
    resample: bool = False  # resample audio at another rate instead of rejecting it
    task: str = "ASR"  # task of records without one (plain text, text JSON lines)
    prefix: str = "shard"

    def __post_init__(self) -> None:
        if self.shard_size is not None and self.num_shards is not None:
            raise ValueError("give --shard-size or --num-shards, not both")
        if self.shard_size is not None and self.shard_size < 1:
            raise ValueError(f"--shard-size must be >= 1, got {self.shard_size}")
        if self.num_shards is not None and self.num_shards < 1:
            raise ValueError(f"--num-shards must be >= 1, got {self.num_shards}")
        if self.on_error not in ("skip", "fail"):
            raise ValueError(f"--on-error must be skip or fail, got {self.on_error}")
        if self.sample_rate < 0:
            raise ValueError("--sample-rate must be >= 0")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.prefix):
            raise ValueError(f"--prefix must be a plain file-name part, got {self.prefix!r}")


@dataclass
class ShardSummary:
    out_dir: str
    samples: int = 0
    shards: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0
    text_tokens: int = 0
    bad: dict[str, int] = field(default_factory=dict)
    bad_records: list[BadRecord] = field(default_factory=list)

    @property
    def num_bad(self) -> int:
        return sum(self.bad.values())

    def text(self) -> str:
        bad = ", ".join(f"{r}: {n}" for r, n in sorted(self.bad.items())) or "none"
        return (f"wrote {self.samples} samples in {len(self.shards)} shard(s) to {self.out_dir} "
                f"({self.audio_seconds / 3600:.3f} h audio, {self.text_tokens} text tokens); "
                f"bad records: {self.num_bad} ({bad})")


def _member_base(key: str, used: set[str]) -> str:
    """A tar-safe, unique sample base name (the real key lives in the JSON)."""
    base = re.sub(r"[^A-Za-z0-9_-]", "_", key)[:80] or "sample"
    out, n = base, 1
    while out in used:
        out, n = f"{base}_{n}", n + 1
    used.add(out)
    return out


class _Builder:
    """Validates records one by one and appends good samples to a spool tar."""

    def __init__(self, opts: ShardOptions, spool: str, report: Callable[[BadRecord], None]):
        self.opts = opts
        self.report = report
        self.writer = ShardTarWriter(spool)
        self.seen: dict[str, str] = {}  # key -> where first seen
        self.used: set[str] = set()
        self.stats: list[tuple[float, int]] = []  # per sample (audio seconds, text tokens)
        self.kinds: Counter = Counter()
        self.tasks: Counter = Counter()
        self.modalities: Counter = Counter()
        self.rates: Counter = Counter()
        self.bad: list[BadRecord] = []

    def reject(self, bad: BadRecord) -> None:
        self.bad.append(bad)
        self.report(bad)
        if self.opts.on_error == "fail":
            raise ShardError(bad.message())

    def add(self, rec: Record) -> None:
        if rec.key in self.seen:
            self.reject(BadRecord(rec.file, rec.line, rec.key, "duplicate_key", f"first seen at {self.seen[rec.key]}"))
            return
        meta = rec.meta()
        meta["source"] = {"file": rec.file, "line": rec.line}
        members: dict[str, bytes] = {}
        seconds = 0.0
        voices = []  # per voice {sample_rate, num_samples}: sizes every voice of a multi-voice sample undecoded
        for i, path in enumerate(rec.audio):
            try:
                audio, sr = read_audio(path, self.opts.sample_rate or 16000)
            except AudioError as e:
                self.reject(BadRecord(rec.file, rec.line, rec.key, e.reason, str(e)))
                return
            target = self.opts.sample_rate
            if target and sr != target:
                if not self.opts.resample:
                    self.reject(BadRecord(rec.file, rec.line, rec.key, "wrong_sample_rate",
                                          f"{path}: {sr} Hz, want {target} Hz (add --resample, or --sample-rate 0 "
                                          "to keep native rates)"))
                    return
                audio, sr = resample(audio, sr, target), target
            members["flac" if i == 0 else f"{i}.flac"] = encode_flac(audio, sr)
            voices.append({"sample_rate": sr, "num_samples": int(audio.shape[0])})
            if i == 0:
                meta.update(sample_rate=sr, num_samples=int(audio.shape[0]), duration=round(audio.shape[0] / sr, 4))
                seconds = audio.shape[0] / sr
                self.rates[sr] += 1
        if rec.audio:
            meta["num_voices"] = len(rec.audio)
        if len(voices) > 1:
            meta["voices"] = voices
        members["json"] = json.dumps(meta, ensure_ascii=False).encode("utf-8")
        self.seen[rec.key] = rec.where
        self.writer.write(_member_base(rec.key, self.used), members)
        self.stats.append((seconds, len(rec.target.split())))
        self.kinds[rec.kind] += 1
        self.tasks[rec.task] += 1
        if rec.modality:
            self.modalities[rec.modality] += 1


def _shard_sizes(n: int, opts: ShardOptions) -> list[int]:
    if opts.num_shards is not None:
        k = min(opts.num_shards, n)
        return [n // k + (1 if i < n % k else 0) for i in range(k)]
    size = opts.shard_size or DEFAULT_SHARD_SIZE
    return [min(size, n - i) for i in range(0, n, size)]


def _old_shards(out: Path, prefix: str) -> list[Path]:
    """Shards of a previous run in `out`: those its index lists plus any `<prefix>-NNNNNN.tar`."""
    old = set(out.glob(f"{prefix}-[0-9]*.tar"))
    idx = out / INDEX_NAME
    if idx.is_file() and is_index_file(idx):
        try:
            for s in read_index(idx).shards:
                p = Path(s.url)
                if p.parent.resolve() == out.resolve():
                    old.add(p)
        except ValueError:
            pass
    return sorted(old)


def _default_report(bad: BadRecord) -> None:
    log.warning("bad record %s", bad.message())


def _split_spool(spool: str, offsets: list[int], tmp: Path, b: _Builder, opts: ShardOptions) -> list[ShardInfo]:
    """Re-read the spool once, writing the final shards into `tmp`."""
    n = len(b.stats)
    shards: list[ShardInfo] = []
    pos = 0
    samples = read_range(spool, offsets, 0, n)
    for si, size in enumerate(_shard_sizes(n, opts)):
        name = f"{opts.prefix}-{si:06d}.tar"
        w = ShardTarWriter(str(tmp / name))
        for _ in range(size):
            s = next(samples)
            if not isinstance(s, dict):  # our own spool: a fault means the disk failed under us
                raise ShardError(f"re-reading the spool failed: {s.detail} at {s.where}")
            w.write(s["__key__"], {k: v for k, v in s.items() if not k.startswith("__")})
        shard_offsets = w.close()
        secs = sum(x[0] for x in b.stats[pos:pos + size])
        toks = sum(x[1] for x in b.stats[pos:pos + size])
        shards.append(ShardInfo(name, size, shard_offsets, round(secs, 3), toks, os.path.getsize(tmp / name)))
        pos += size
    samples.close()
    return shards


def _commit(out: Path, tmp: Path, index: ShardIndex, bad: list[BadRecord], prefix: str) -> None:
    """Old set out, new set in, report, index last (atomic rename)."""
    for p in _old_shards(out, prefix):
        p.unlink(missing_ok=True)
    for s in index.shards:
        os.replace(tmp / s.url, out / s.url)
    with open(tmp / "bad_records.jsonl", "w", encoding="utf-8") as f:
        for x in bad:
            f.write(json.dumps(asdict(x), ensure_ascii=False) + "\n")
    os.replace(tmp / "bad_records.jsonl", out / "bad_records.jsonl")
    write_index(index, out / INDEX_NAME)


def write_shards(inputs: list[str], out_dir: str, opts: ShardOptions | None = None,
                 report: Callable[[BadRecord], None] = _default_report) -> ShardSummary:
    """Shard `inputs` into `out_dir` (see the module docstring). Raises ShardError in fail mode / when empty."""
    opts = opts or ShardOptions()
    out = Path(out_dir)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # e.g. OUT_DIR names an existing file
        raise ShardError(f"cannot create the output folder {out}: {e.strerror or e}") from None
    tmp = out / f".tasu-shard-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    b = _Builder(opts, str(tmp / "spool.tar"), report)
    ok = False
    try:
        for path in inputs:
            for item in read_manifest(path, opts.task):
                if isinstance(item, BadRecord):
                    b.reject(item)
                else:
                    b.add(item)
        spool_offsets = b.writer.close()
        summary = ShardSummary(str(out), bad=dict(Counter(x.reason for x in b.bad)), bad_records=b.bad)
        if not b.stats:
            raise ShardError(f"no good record in {', '.join(inputs)}; nothing written ({summary.text()})")
        shards = _split_spool(str(tmp / "spool.tar"), spool_offsets, tmp, b, opts)
        extra = {"tasks": dict(b.tasks), "modalities": dict(b.modalities), "sample_rates": dict(b.rates),
                 "bad_records": summary.bad, "inputs": [str(p) for p in inputs], "audio_encoding": "flac PCM_16"}
        kind = "mixed" if len(b.kinds) > 1 else next(iter(b.kinds))
        rate = next(iter(b.rates)) if len(b.rates) == 1 else None
        _commit(out, tmp, ShardIndex(shards, kind, rate, extra), b.bad, opts.prefix)
        summary.samples = len(b.stats)
        summary.shards = [s.url for s in shards]
        summary.audio_seconds = sum(s.audio_seconds for s in shards)
        summary.text_tokens = sum(s.text_tokens for s in shards)
        ok = True
        return summary
    finally:
        b.writer.discard()
        shutil.rmtree(tmp, ignore_errors=True)
        if not ok and created:
            shutil.rmtree(out, ignore_errors=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tasu shard", description=(
        "Write WebDataset tar shards + index.json from ps-slm JSON lines, LLaSO JSON/JSONL, plain text or text "
        "JSON lines. Bad records are reported (file:line key reason) and counted; see data_shards/FORMAT.md."))
    p.add_argument("inputs", nargs="+", metavar="MANIFEST", help="input files (.jsonl, .json, .txt)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (re-running replaces its shard set)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--shard-size", type=int, default=None, help=f"samples per shard (default {DEFAULT_SHARD_SIZE})")
    size.add_argument("--num-shards", type=int, default=None, help="exact number of shards")
    p.add_argument("--on-error", choices=("skip", "fail"), default="skip",
                   help="skip: report bad records and go on; fail: stop at the first one, writing nothing")
    p.add_argument("--sample-rate", type=int, default=16000, help="required audio rate (0: keep native rates)")
    p.add_argument("--resample", action="store_true", help="resample audio at another rate instead of rejecting it")
    p.add_argument("--task", default="ASR", help="task of records that carry none (text inputs)")
    p.add_argument("--prefix", default="shard", help="shard file name prefix")
    return p


def shard_main(argv: list[str]) -> int:
    """Entry point of `tasu shard`; returns the process exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code or 0)
    try:
        opts = ShardOptions(args.shard_size, args.num_shards, args.on_error, args.sample_rate, args.resample,
                            args.task, args.prefix)
    except ValueError as e:
        print(f"tasu shard: error: {e}", file=sys.stderr)
        return 2

    def report(bad: BadRecord) -> None:
        print(f"bad record {bad.message()}", file=sys.stderr)

    try:
        summary = write_shards(args.inputs, args.out_dir, opts, report)
    except ShardError as e:
        print(f"tasu shard: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the output side failed (disk full, permissions): the folder is left as it was
        print(f"tasu shard: error: {e}", file=sys.stderr)
        return 1
    print(summary.text())
    return 0
