"""Read one audio object from a Kaldi archive: `file.ark:offset` (offset = byte position just after `key `).

Supported objects at the offset (what Kaldi and kaldiio write for audio):
    RIFF...                 a WAV file (Kaldi's WaveHolder, kaldiio with a (rate, array) tuple)
    fLaC...                 a FLAC file
    AUDIO <len> <bytes>     kaldiio `write_function="soundfile"` (any soundfile format, length-prefixed)
    \\0B FV|DV|FM|DM ...      a binary float/double vector or 1-row / 1-column matrix of samples; no rate is
                            stored, so the caller's default rate applies; Kaldi keeps such audio at int16 scale,
                            so values beyond [-1, 1] are divided by 32768
Compressed matrices (CM, CM2, CM3) hold features, not audio, and are refused with a clear error.
"""

from __future__ import annotations

import io
import os
import re
import struct

import numpy as np

ARK_SPEC = re.compile(r"^(?P<path>.+\.ark):(?P<offset>\d+)$")


class ArkError(ValueError):
    """An ark object that cannot be read as audio; `corrupt` tells a damaged object from a missing file."""

    def __init__(self, message: str, corrupt: bool):
        super().__init__(message)
        self.corrupt = corrupt


def is_ark_spec(path: str) -> bool:
    return ARK_SPEC.match(path) is not None


def _read_exact(f, n: int, spec: str) -> bytes:
    # sizes come from the archive itself: check them against the bytes left before reading, so a corrupt
    # length (up to 2^2040 for an AUDIO object) is a clean error, not a MemoryError / OverflowError
    left = os.fstat(f.fileno()).st_size - f.tell()
    if n > left:
        raise ArkError(f"{spec}: truncated Kaldi object (wanted {n} bytes, {max(left, 0)} left)", corrupt=True)
    data = f.read(n)
    if len(data) != n:
        raise ArkError(f"{spec}: truncated Kaldi object (wanted {n} bytes, got {len(data)})", corrupt=True)
    return data


def _read_int32(f, spec: str) -> int:
    size = _read_exact(f, 1, spec)[0]
    if size != 4:
        raise ArkError(f"{spec}: bad Kaldi int32 size byte {size}", corrupt=True)
    return struct.unpack("<i", _read_exact(f, 4, spec))[0]


def _read_token(f, spec: str) -> str:
    out = b""
    while True:
        c = _read_exact(f, 1, spec)
        if c == b" ":
            return out.decode("ascii", errors="replace")
        out += c
        if len(out) > 8:
            raise ArkError(f"{spec}: unknown Kaldi binary token {out!r}", corrupt=True)


def _binary_samples(f, spec: str) -> np.ndarray:
    token = _read_token(f, spec)
    if token in ("CM", "CM2", "CM3"):
        raise ArkError(f"{spec}: compressed Kaldi matrix ({token}) holds features, not audio", corrupt=True)
    dtypes = {"FV": "<f4", "DV": "<f8", "FM": "<f4", "DM": "<f8"}
    if token not in dtypes:
        raise ArkError(f"{spec}: unsupported Kaldi binary object '{token}' (want FV, DV, FM or DM)", corrupt=True)
    if token.endswith("V"):
        rows, cols = 1, _read_int32(f, spec)
    else:
        rows, cols = _read_int32(f, spec), _read_int32(f, spec)
        if min(rows, cols) != 1:
            raise ArkError(f"{spec}: a {rows}x{cols} matrix is not mono audio (want 1 row or 1 column)", corrupt=True)
    n = rows * cols
    if n < 0:
        raise ArkError(f"{spec}: negative Kaldi dimension", corrupt=True)
    width = np.dtype(dtypes[token]).itemsize
    x = np.frombuffer(_read_exact(f, n * width, spec), dtype=dtypes[token])
    if not np.isfinite(x).all() or (x.size and float(np.abs(x).max()) > 1e30):  # garbage, not int16-scale audio
        raise ArkError(f"{spec}: Kaldi vector holds non-finite or absurdly large samples", corrupt=True)
    x = x.astype(np.float32)
    if x.size and float(np.abs(x).max()) > 1.0:
        x = x / 32768.0  # Kaldi keeps waveforms at int16 scale
    return x


def read_ark_audio(spec: str) -> tuple[np.ndarray, int | None]:
    """(samples [N] or [N, C] float32, sample rate or None when the object stores none)."""
    m = ARK_SPEC.match(spec)
    if m is None:
        raise ArkError(f"{spec}: not a Kaldi 'file.ark:offset' path", corrupt=False)
    path, offset = m.group("path"), int(m.group("offset"))
    try:
        f = open(path, "rb")
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise ArkError(f"{spec!r}: cannot open the archive ({getattr(e, 'strerror', None) or e})",
                       corrupt=False) from None
    with f:
        f.seek(offset)
        head = f.read(5)
        f.seek(offset)
        if head[:4] == b"RIFF":
            size = struct.unpack("<I", _read_exact(f, 8, spec)[4:8])[0] + 8
            f.seek(offset)
            return _soundfile_bytes(_read_exact(f, size, spec), spec)
        if head[:4] == b"fLaC":
            return _soundfile_bytes(f.read(), spec)  # FLAC frames carry no total size: the decoder stops at the end
        if head == b"AUDIO":
            f.read(5)
            nbytes = _read_exact(f, 1, spec)[0]
            length = int.from_bytes(_read_exact(f, nbytes, spec), "little")
            return _soundfile_bytes(_read_exact(f, length, spec), spec)
        if head[:2] == b"\0B":
            f.read(2)
            return _binary_samples(f, spec), None
    raise ArkError(f"{spec}: no audio object at offset {offset} (starts with {head!r}; the offset must point just "
                   "after 'key ')", corrupt=True)


def _soundfile_bytes(data: bytes, spec: str) -> tuple[np.ndarray, int]:
    from tasu.data.audio_io import AudioError, _decode  # lazy: audio_io imports this module

    try:
        return _decode(io.BytesIO(data), len(data), f"{spec}: audio in the archive")
    except AudioError as e:
        raise ArkError(str(e), corrupt=True) from None
