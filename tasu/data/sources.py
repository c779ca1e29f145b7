"""Sources (shards or in-memory files) and the sample-exact split of each epoch across ranks and workers.

Split policy (the "equal steps" policy of tasu's loader). For a source of N samples, epoch e:
    1. order: the shards (in-memory: the records) permuted by a generator seeded with (seed, source, epoch),
       the same on every rank and worker;
    2. the concatenated sample sequence of that order is cut into P = world_size x workers contiguous parts of
       floor/ceil(N / P) samples (sizes differ by at most one), part p = rank x workers + worker: split by node,
       then by worker, at sample granularity, so every sample is read exactly once per epoch whatever the shard
       count (a shard may be shared by two parts; each reads only its range, seeking by the indexed offsets);
    3. a worker shuffles its part through a buffer seeded by (seed, source, epoch, rank, worker).
Sources with fewer samples than parts (N < P) give part p the sample p mod N, so no worker starves; only
then is a sample read more than once per epoch. Every rank's stream is infinite (epochs follow each other),
so all ranks can always take the same number of steps; per epoch their sample counts differ by at most one
per worker.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tasu.config.fields import ConfigError
from tasu.data.config import SourceConfig
from tasu.data.faults import DataError
from tasu.data.manifests import BadRecord, Record, read_manifest
from tasu.data.shard_index import ShardInfo, is_index_file, resolve_shard_source
from tasu.data.stages import key_seed
from tasu.data.tar_io import TarFault, is_local, local_path, read_range

log = logging.getLogger("tasu.data")

MEMORY_SUFFIXES = (".txt", ".jsonl")
MAX_VOICES = 1024  # a JSON member claiming more voices is corrupt (it would size a list of member names)


@dataclass
class ResolvedSource:
    """A source ready to read: shard entries or parsed records, and what it holds."""

    cfg: SourceConfig
    index: int
    name: str
    kind: str  # text | audio | mixed (content of the source)
    shards: list[ShardInfo] | None = None
    records: list[Record] | None = None
    bad: Counter = field(default_factory=Counter)  # bad records met while parsing an in-memory manifest

    @property
    def num_samples(self) -> int:
        return len(self.records) if self.records is not None else sum(s.samples for s in self.shards)

    def signature(self) -> list:
        return [self.name, self.cfg.path, self.num_samples]


def _resolve_path(path: str) -> str:
    from tasu.config.loader import resolve_path

    return resolve_path(path)


def _is_memory_source(path: str) -> bool:
    if not is_local(path) or any(c in path for c in "{*?["):
        return False
    p = Path(local_path(path))
    if p.suffix in MEMORY_SUFFIXES:
        return True
    return p.suffix == ".json" and p.is_file() and not is_index_file(p)


def _load_records(cfg: SourceConfig, path: str, key: str, on_error: str) -> tuple[list[Record], Counter]:
    records, bad, seen = [], Counter(), {}
    for item in read_manifest(path, cfg.task):
        if isinstance(item, Record) and item.key in seen:
            item = BadRecord(item.file, item.line, item.key, "duplicate_key", f"first seen at {seen[item.key]}")
        if isinstance(item, BadRecord):
            bad[item.reason] += 1
            log.warning("tasu.data: %s: bad record %s", key, item.message())
            if on_error == "fail":
                raise DataError(f"{key}: bad record {item.message()} (data.on_error=fail)")
            continue
        seen[item.key] = item.where
        records.append(item)
    return records, bad


def resolve_source(cfg: SourceConfig, index: int, key: str, on_error: str = "skip") -> ResolvedSource:
    """Resolve one configured source; `key` (e.g. `data.train.0`) names it in errors."""
    path = _resolve_path(cfg.path)
    if _is_memory_source(path):
        if not Path(path).is_file():
            raise ConfigError(f"config key '{key}.path': file not found: {cfg.path}")
        records, bad = _load_records(cfg, path, key, on_error)
        kinds = {r.kind for r in records}
        kind = "mixed" if len(kinds) > 1 else (kinds.pop() if kinds else "text")
        src = ResolvedSource(cfg, index, cfg.display_name, kind, records=records, bad=bad)
    else:
        try:
            idx = resolve_shard_source(path, _resolve_path(cfg.index) if cfg.index else None)
        except ValueError as e:
            raise ConfigError(f"config key '{key}.path': {e}") from None
        src = ResolvedSource(cfg, index, cfg.display_name, idx.kind, shards=idx.shards)
    if src.num_samples == 0:
        raise ConfigError(f"config key '{key}.path': source {cfg.path} holds no usable sample")
    if cfg.kind == "audio" and src.kind == "text":
        raise ConfigError(f"config key '{key}.kind': 'audio', but {cfg.path} holds text only")
    return src


def part_range(n: int, num_parts: int, part: int) -> tuple[int, int]:
    """[a, b) of part `part` in a sequence of n (sizes floor/ceil(n / num_parts)); n < num_parts -> [p mod n]."""
    if n < num_parts:
        a = part % n
        return a, a + 1
    return part * n // num_parts, (part + 1) * n // num_parts


def _rng(*parts) -> np.random.Generator:
    return np.random.default_rng(key_seed(*parts))


def _record_sample(rec: Record, src: ResolvedSource, epoch: int, as_text: bool) -> dict:
    s = {"__key__": rec.key, "__source__": src.index, "__epoch__": epoch, "__where__": rec.where,
         "__input__": "text" if as_text or not rec.audio else "audio", "meta": rec.meta()}
    if s["__input__"] == "audio":
        s["audio_path"] = rec.audio[0]
        if len(rec.audio) > 1:  # further voices (LLaSO: one speech segment each, in order)
            s["extra_audio_paths"] = list(rec.audio[1:])
    return s


class ReadMode:
    """Shared by a worker and its readers. While `skip_audio` is set (a resumed worker re-deriving batches it
    already produced), seekable shards are read without their audio members; such samples carry `audio_ref`
    and `DecodeAudio` fetches the bytes if the sample ends up in a produced batch."""

    def __init__(self, skip_audio: bool = False):
        self.skip_audio = skip_audio


def _tar_sample(raw: dict, src: ResolvedSource, epoch: int, as_text: bool) -> dict | TarFault:
    where = raw["__where__"]
    try:
        meta = json.loads(raw["json"])
        if not isinstance(meta, dict) or not all(isinstance(meta.get(f), str) for f in ("key", "task", "target")):
            raise ValueError("the JSON member is not an object with string 'key', 'task' and 'target'")
        if not isinstance(meta.get("GT", ""), str):
            raise ValueError("'GT' is not a string")
        voices = meta.get("num_voices")
        if voices is not None and (type(voices) is not int or not 1 <= voices <= MAX_VOICES):
            raise ValueError(f"'num_voices' must be an integer in 1..{MAX_VOICES}, got {voices!r}")
    except KeyError:
        return TarFault("corrupt_member", f"sample {raw['__key__']!r} has no .json member", where, 1)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: deeply nested JSON
        return TarFault("corrupt_member", f"sample {raw['__key__']!r}: bad JSON member ({e})", where, 1)
    is_audio = meta.get("kind") == "audio" and not as_text
    s = {"__key__": meta["key"], "__source__": src.index, "__epoch__": epoch, "__where__": where,
         "__input__": "audio" if is_audio else "text", "meta": meta}
    if is_audio:
        extra = [f"{i}.flac" for i in range(1, int(meta.get("num_voices") or 1))]  # further voices' members
        if "flac" in raw:
            missing = [m for m in extra if m not in raw]
            if missing:
                return TarFault("corrupt_member", f"audio sample {meta['key']!r} lacks voice member(s) {missing}",
                                where, 1)
            s["audio_bytes"] = raw["flac"]
            if extra:
                s["extra_audio_bytes"] = [raw[m] for m in extra]
        elif raw.get("__skipped_audio__"):
            s["audio_ref"] = raw["__ref__"]
        else:
            return TarFault("corrupt_member", f"audio sample {meta['key']!r} has no .flac member", where, 1)
    return s


def read_part(src: ResolvedSource, epoch: int, part: int, num_parts: int, seed: int, shuffle: bool,
              as_text: bool, mode: ReadMode | None = None) -> Iterator[dict | TarFault]:
    """Samples of one epoch part (before the shuffle buffer). `as_text`: never read audio (text pipeline)."""
    n = src.num_samples
    a, b = part_range(n, num_parts, part)
    if src.records is not None:
        order = _rng("order", seed, src.index, epoch).permutation(n) if shuffle else np.arange(n)
        for j in order[a:b]:
            yield _record_sample(src.records[int(j)], src, epoch, as_text or src.cfg.kind == "text")
        return
    as_text = as_text or src.cfg.kind == "text"

    def want() -> set[str] | None:
        return {"json"} if as_text or (mode is not None and mode.skip_audio) else None

    shards = src.shards
    order = _rng("order", seed, src.index, epoch).permutation(len(shards)) if shuffle else np.arange(len(shards))
    pos = 0  # start of the current shard in the concatenated sequence
    for si in order:
        sh = shards[int(si)]
        lo, hi = max(a, pos), min(b, pos + sh.samples)
        if lo < hi:
            for raw in read_range(sh.url, sh.offsets, lo - pos, hi - pos, want):
                if isinstance(raw, TarFault):
                    yield raw
                    continue
                if "__ref__" in raw and mode is not None and mode.skip_audio:
                    raw["__skipped_audio__"] = True
                yield _tar_sample(raw, src, epoch, as_text)
        pos += sh.samples
        if pos >= b:
            return


def shuffled(items: Iterator, size: int, rng: np.random.Generator) -> Iterator:
    """Buffer shuffle: fill `size` items, then emit a random one per new item; drain shuffled at the end."""
    if size <= 1:
        yield from items
        return
    buf: list = []
    for x in items:
        if len(buf) < size:
            buf.append(x)
            continue
        j = int(rng.integers(size))
        buf[j], x = x, buf[j]
        yield x
    order = rng.permutation(len(buf))
    for j in order:
        yield buf[int(j)]


def source_stream(src: ResolvedSource, part: int, num_parts: int, seed: int, shuffle_shards: bool,
                  buffer: int, rank: int, worker: int, as_text: bool, start_epoch: int = 0,
                  on_epoch_end=None, mode: ReadMode | None = None) -> Iterator[dict | TarFault]:
    """Infinite: epoch parts one after another, each through its own seeded shuffle buffer."""
    epoch = start_epoch
    while True:
        items = read_part(src, epoch, part, num_parts, seed, shuffle_shards, as_text, mode)
        if src.shards is not None:  # in-memory records are already fully permuted
            items = shuffled(items, buffer, _rng("buffer", seed, src.index, epoch, rank, worker))
        yield from items
        epoch += 1
        if on_epoch_end is not None:
            on_epoch_end(src.index, epoch)
