"""The shard index JSON (`index.json` beside the shards) and resolution of a shard source to shard entries.

A shard source is an index.json, a folder holding one, or shard URLs (paths, brace patterns `a-{000..009}.tar`,
globs, `pipe:cmd` URLs; several joined with `::`). Shards missing from any index are scanned once (headers only
for local files) and a warning says so, because the loader needs every shard's sample count to split samples
exactly across ranks and workers.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tasu.data.tar_io import is_local, local_path, scan_shard

log = logging.getLogger("tasu.data")

INDEX_NAME = "index.json"
INDEX_FORMAT = "tasu-webdataset"
INDEX_VERSION = 1


@dataclass
class ShardInfo:
    """One shard: its URL (relative to the index folder when written), sample count, sample byte offsets."""

    url: str
    samples: int
    offsets: list[int] | None = None  # samples + 1 entries: start of each sample, then the end of the last
    audio_seconds: float = 0.0
    text_tokens: int = 0
    bytes: int = 0


@dataclass
class ShardIndex:
    """What `tasu shard` writes (see data_shards/FORMAT.md)."""

    shards: list[ShardInfo]
    kind: str = "audio"  # audio | text | mixed
    sample_rate: int | None = None
    extra: dict = field(default_factory=dict)  # totals, tasks, modalities, bad_records, inputs

    @property
    def total_samples(self) -> int:
        return sum(s.samples for s in self.shards)

    def to_json(self) -> dict:
        d = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "kind": self.kind, "sample_rate": self.sample_rate,
             "total_samples": self.total_samples,
             "total_audio_seconds": round(sum(s.audio_seconds for s in self.shards), 3),
             "total_text_tokens": sum(s.text_tokens for s in self.shards)}
        d.update(self.extra)
        d["shards"] = [asdict(s) for s in self.shards]
        return d


def is_index_file(path: str | Path) -> bool:
    """True for a JSON object with "format": "tasu-webdataset" (cheap: reads the first KB)."""
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(1024)
    except (OSError, UnicodeDecodeError):
        return False
    return head.lstrip().startswith("{") and f'"{INDEX_FORMAT}"' in head


def write_index(index: ShardIndex, path: str | Path) -> None:
    """Atomic write (temp file + rename), so a reader never sees half an index."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(index.to_json(), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _shard_info(s, i: int, path: Path) -> ShardInfo:
    """One `shards` entry, type-checked: a damaged index is a ValueError naming the entry, never a TypeError
    deep in the loader."""
    def bad(what: str) -> ValueError:
        return ValueError(f"{path}: shard entry {i} is malformed ({what})")

    if not isinstance(s, dict):
        raise bad(f"expected an object, got {type(s).__name__}")
    try:
        info = ShardInfo(**s)
    except TypeError as e:
        raise bad(str(e)) from None
    if not isinstance(info.url, str) or not info.url:
        raise bad("'url' must be a non-empty string")
    if not _is_int(info.samples) or info.samples < 0:
        raise bad(f"'samples' must be an integer >= 0, got {info.samples!r}")
    if info.offsets is not None:
        if not isinstance(info.offsets, list) or not all(_is_int(o) and o >= 0 for o in info.offsets):
            raise bad("'offsets' must be a list of byte offsets")
        if len(info.offsets) != info.samples + 1:
            raise ValueError(f"{path}: shard {info.url} has {len(info.offsets)} offsets for {info.samples} samples")
        if any(b <= a for a, b in zip(info.offsets, info.offsets[1:])):
            raise bad("'offsets' must be increasing")
    for name in ("audio_seconds", "text_tokens", "bytes"):
        v = getattr(info, name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0:
            raise bad(f"'{name}' must be a number >= 0, got {v!r}")
    return info


def read_index(path: str | Path) -> ShardIndex:
    """Load an index; relative shard URLs become paths relative to the index's folder."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad UTF-8 / JSON, ints over 4300 digits
        raise ValueError(f"{path}: unreadable shard index ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(d, dict) or d.get("format") != INDEX_FORMAT:
        raise ValueError(f"{path}: not a tasu shard index (no \"format\": \"{INDEX_FORMAT}\")")
    if d.get("version") != INDEX_VERSION:
        raise ValueError(f"{path}: shard index version {d.get('version')} (this tasu reads {INDEX_VERSION})")
    if not isinstance(d.get("shards", []), list):
        raise ValueError(f"{path}: 'shards' must be a list")
    kind, rate = d.get("kind", "audio"), d.get("sample_rate")
    if kind not in ("audio", "text", "mixed"):
        raise ValueError(f"{path}: 'kind' must be audio, text or mixed, got {kind!r}")
    if rate is not None and (not _is_int(rate) or rate <= 0):
        raise ValueError(f"{path}: 'sample_rate' must be a positive integer or null, got {rate!r}")
    shards = []
    for i, s in enumerate(d.get("shards", [])):
        info = _shard_info(s, i, path)
        if is_local(info.url) and not os.path.isabs(local_path(info.url)):
            info.url = str(path.parent / info.url)
        shards.append(info)
    extra = {k: v for k, v in d.items() if k not in ("format", "version", "kind", "sample_rate", "shards",
                                                      "total_samples", "total_audio_seconds", "total_text_tokens")}
    return ShardIndex(shards, kind, rate, extra)


def expand_urls(pattern: str) -> list[str]:
    """`a::b` lists, `{000..009}` braces, `$VAR`s and local globs -> URLs in order."""
    import braceexpand

    urls: list[str] = []
    for part in pattern.split("::"):
        for url in braceexpand.braceexpand(os.path.expandvars(part)):
            if is_local(url) and any(c in url for c in "*?["):
                urls.extend(sorted(glob.glob(local_path(url))))
            else:
                urls.append(url)
    return urls


def _key(url: str) -> str:
    return os.path.abspath(local_path(url)) if is_local(url) else url


def _by_name(url: str, by_name: dict[str, ShardInfo]) -> ShardInfo | None:
    """The index entry whose file name appears in a remote URL (`pipe:curl .../shard-000003.tar`,
    `pipe:aws s3 cp s3://b/shard-000003.tar -`); the longest name wins, so shard-1.tar never matches shard-11.tar."""
    hits = [n for n in by_name if re.search(rf"(?<![\w.-]){re.escape(n)}(?![\w.-])", url)]
    return by_name[max(hits, key=len)] if hits else None


def resolve_shard_source(path: str, index_path: str | None = None) -> ShardIndex:
    """The shard entries of a source path (see the module docstring); raises ValueError naming the path."""
    p = Path(local_path(path)) if is_local(path) else None
    if index_path is None and p is not None and p.is_dir():
        if (p / INDEX_NAME).is_file():
            return read_index(p / INDEX_NAME)
        urls = sorted(str(x) for x in p.glob("*.tar"))
        if not urls:
            raise ValueError(f"{path}: folder has neither {INDEX_NAME} nor *.tar shards")
    elif index_path is None and p is not None and p.suffix == ".json" and p.is_file():
        return read_index(p)
    else:
        urls = expand_urls(path)
    if not urls:
        raise ValueError(f"{path}: matches no shard")
    if index_path is None and is_local(urls[0]) and (Path(local_path(urls[0])).parent / INDEX_NAME).is_file():
        index_path = str(Path(local_path(urls[0])).parent / INDEX_NAME)
    known: dict[str, ShardInfo] = {}
    by_name: dict[str, ShardInfo] = {}
    kind, rate, extra = "audio", None, {}
    if index_path is not None:
        idx = read_index(index_path)
        kind, rate, extra = idx.kind, idx.sample_rate, idx.extra
        for s in idx.shards:
            known[_key(s.url)] = s
            by_name[os.path.basename(s.url)] = s
    shards: list[ShardInfo] = []
    for url in urls:
        info = known.get(_key(url)) or (None if is_local(url) else _by_name(url, by_name))
        if info is not None:
            shards.append(ShardInfo(url, info.samples, info.offsets, info.audio_seconds, info.text_tokens,
                                    info.bytes))
            continue
        log.warning("shard %s is in no index: scanning it to count samples (run `tasu shard` to write one)", url)
        try:
            n, offsets = scan_shard(url)
        except Exception as e:  # any reader failure: name the shard
            raise ValueError(f"{url}: cannot scan shard ({type(e).__name__}: {e})") from None
        shards.append(ShardInfo(url, n, offsets))
    return ShardIndex(shards, kind, rate, extra)
