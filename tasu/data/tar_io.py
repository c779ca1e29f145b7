"""WebDataset tar members: writing shards with per-sample byte offsets, and reading sample ranges back.

A sample is the run of consecutive members sharing a base name (`<base>.json`, `<base>.flac`, ...; the
extension is everything after the first dot, as WebDataset defines it). The writer records the byte offset
of each sample's first header, so a reader of a local shard can seek straight to sample i and never touch the
bytes of members it does not want (simulated mode reads `json` only). Without offsets (pipe: / http URLs, or
shards written elsewhere) the shard is streamed and leading samples are skipped by reading through them.

Faults are yielded, not raised: a damaged sample costs that sample when offsets allow re-seeking to the next
one, otherwise the rest of the range.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, ValueError, UnicodeDecodeError)


@dataclass
class TarFault:
    """`count` samples of a shard could not be read."""

    reason: str  # corrupt_tar | corrupt_member | missing_samples | unreadable_shard
    detail: str
    where: str
    count: int


def split_name(name: str) -> tuple[str, str] | None:
    """`dir/base.ext.more` -> (`dir/base`, `ext.more`); None when there is no extension."""
    m = re.match(r"^((?:.*/|)[^./]+)[.]([^/]*)$", name)
    return (m.group(1), m.group(2).lower()) if m else None


def is_local(url: str) -> bool:
    """A plain path or file: URL (seekable), as opposed to pipe: / http: / ... streams."""
    scheme = urlparse(url).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def seekable(url: str) -> bool:
    """Local and uncompressed: samples can be reached by byte offset."""
    return is_local(url) and not url.endswith((".gz", ".tgz", ".bz2", ".xz", ".zst"))


def local_path(url: str) -> str:
    return re.sub(r"^file://?", "/", url) if url.startswith("file:") else url


class ShardTarWriter:
    """Writes samples (dict ext -> bytes) to one tar and records each sample's start offset.

    Members are written in a fixed order (json first) with fixed mtime/owner, so equal input gives equal bytes.
    """

    def __init__(self, path: str):
        self.path = path
        self._f = open(path, "wb")
        self._tar = tarfile.open(fileobj=self._f, mode="w", format=tarfile.USTAR_FORMAT)
        self.offsets: list[int] = []

    def write(self, base: str, members: dict[str, bytes]) -> None:
        self.offsets.append(self._tar.offset)
        for ext in sorted(members, key=lambda e: (e != "json", e)):
            info = tarfile.TarInfo(f"{base}.{ext}")
            info.size = len(members[ext])
            info.mtime = 0
            info.mode = 0o444
            info.uname = info.gname = "tasu"
            self._tar.addfile(info, io.BytesIO(members[ext]))

    def close(self) -> list[int]:
        """Finish the archive; returns the sample offsets plus the end of the last sample."""
        self.offsets.append(self._tar.offset)
        # end-of-archive: two zero blocks, without tarfile's padding of the file to 10 KiB records
        self._f.write(b"\0" * (2 * tarfile.BLOCKSIZE))
        self._tar.closed = True
        self._f.close()
        return self.offsets

    def discard(self) -> None:
        """Close the file without finishing the archive (error paths); a no-op after `close`."""
        if not self._f.closed:
            self._f.close()


def _read_members(tar: tarfile.TarFile, end: int | None,
                  want: set[str] | None) -> Iterator[tuple[str, str, bytes | None]]:
    """(base, ext, data) of regular members until byte offset `end` (None: to the archive's end); data is None
    for members outside `want`."""
    while True:
        info = tar.next()
        if info is None or (end is not None and info.offset >= end):
            return
        if not info.isreg():
            continue
        parts = split_name(info.name)
        if parts is None:
            continue
        base, ext = parts
        data = None  # not wanted: never read (seeked over, or read through by a stream)
        if want is None or ext in want:
            fobj = tar.extractfile(info)
            data = fobj.read() if fobj is not None else b""
            if len(data) != info.size:
                raise tarfile.ReadError(f"member {info.name} truncated ({len(data)} of {info.size} bytes)")
        yield base, ext, data


def _sample(base: str, members: dict[str, bytes | None], where: str) -> dict:
    s = {"__key__": base, "__where__": where}
    s.update((k, v) for k, v in members.items() if v is not None)
    return s


def _read_seek(path: str, offsets: list[int], start: int, stop: int, want: Callable[[], set[str] | None],
               url: str) -> Iterator[dict | TarFault]:
    try:
        f = open(path, "rb")
    except OSError as e:
        yield TarFault("unreadable_shard", f"cannot open ({e.strerror or e})", url, stop - start)
        return
    with f:
        for i in range(start, stop):
            where = f"{url}#{i}"
            try:
                f.seek(offsets[i])
                tar = tarfile.open(fileobj=f, mode="r:")
                members: dict[str, bytes | None] = {}
                base = None
                for b, ext, data in _read_members(tar, offsets[i + 1], want()):
                    if base is None:
                        base = b
                    elif b != base:
                        raise tarfile.ReadError(f"member {b}.{ext} inside sample {base} (offsets do not match)")
                    if ext in members:
                        raise tarfile.ReadError(f"duplicate member {b}.{ext}")
                    members[ext] = data
            except _TAR_ERRORS as e:
                yield TarFault("corrupt_tar", f"{type(e).__name__}: {e}", where, 1)
                continue
            if base is None:
                yield TarFault("corrupt_tar", "no member at the indexed offset", where, 1)
                continue
            s = _sample(base, members, where)
            s["__ref__"] = [url, offsets[i], offsets[i + 1]]
            yield s


def _read_stream(url: str, start: int, stop: int, want: set[str] | None) -> Iterator[dict | TarFault]:
    from webdataset.gopen import gopen

    i = 0  # index of the sample being assembled
    try:
        stream = gopen(local_path(url) if is_local(url) else url, "rb")
    except Exception as e:  # gopen raises whatever the scheme handler raises
        yield TarFault("unreadable_shard", f"cannot open ({e})", url, stop - start)
        return
    base, members = None, {}
    try:
        tar = tarfile.open(fileobj=stream, mode="r|*")
        for b, ext, data in _read_members(tar, None, want):
            if b != base:
                if base is not None:
                    if i >= start:
                        yield _sample(base, members, f"{url}#{i}")
                    i += 1
                    if i >= stop:
                        return
                base, members = b, {}
            if ext in members:
                raise tarfile.ReadError(f"duplicate member {b}.{ext}")
            members[ext] = data
        if base is not None:
            if i >= start:
                yield _sample(base, members, f"{url}#{i}")
            i += 1
    except _TAR_ERRORS as e:
        lost = stop - max(i, start)
        yield TarFault("corrupt_tar", f"{type(e).__name__}: {e}; {lost} sample(s) of the range lost", f"{url}#{i}",
                       lost)
        return
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # a pipe: command exiting non-zero after we stopped reading early
                pass
    if i < stop:
        yield TarFault("missing_samples", f"shard ended after {i} samples, the index promised {stop}",
                       f"{url}#{i}", stop - max(i, start))


def read_range(url: str, offsets: list[int] | None, start: int, stop: int,
               want: set[str] | None | Callable[[], set[str] | None] = None) -> Iterator[dict | TarFault]:
    """Samples start..stop-1 of one shard as dicts {`__key__`, `__where__`, ext: bytes}, or TarFaults.

    `want` limits which members are read (None: all); with offsets on a local file the others are seeked over,
    `want` may then be a callable asked before each sample, and each sample carries `__ref__` = [url, start
    byte, end byte] so that a member left out can be fetched later with `read_member`. Streams read `want`
    once (their bytes go by anyway).
    """
    if stop <= start:
        return
    want_fn = want if callable(want) else (lambda: want)
    if offsets is not None and seekable(url):
        yield from _read_seek(local_path(url), offsets, start, stop, want_fn, url)
    else:
        yield from _read_stream(url, start, stop, want_fn())


def read_member(ref: list, ext: str) -> bytes:
    """Member `ext` of the sample at `ref` = [url, start byte, end byte] (from `read_range`)."""
    url, start, end = ref
    for s in _read_seek(local_path(url), [start, end], 0, 1, lambda: {ext}, url):
        if isinstance(s, TarFault):
            raise tarfile.ReadError(f"{s.where}: {s.detail}")
        if ext not in s:
            raise tarfile.ReadError(f"{url}@{start}: sample {s['__key__']} has no .{ext} member")
        return s[ext]
    raise tarfile.ReadError(f"{url}@{start}: no sample")


def scan_shard(url: str) -> tuple[int, list[int] | None]:
    """(samples, offsets or None) of a shard without an index entry: reads headers only when local."""
    if seekable(url):
        offsets: list[int] = []
        with open(local_path(url), "rb") as f:
            tar = tarfile.open(fileobj=f, mode="r:")
            base = None
            while True:
                info = tar.next()
                if info is None:
                    break
                parts = split_name(info.name) if info.isreg() else None
                if parts is None:
                    continue
                if parts[0] != base:
                    offsets.append(info.offset)
                    base = parts[0]
            offsets.append(tar.offset)
        return len(offsets) - 1, offsets
    n = sum(1 for s in _read_stream(url, 0, 1 << 62, {"json"}) if isinstance(s, dict))
    return n, None
