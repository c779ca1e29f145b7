"""Audio reading, FLAC encoding for shards, and resampling.

Audio inside tasu is mono float32 in [-1, 1]: shape [N] (N samples) plus an integer sample rate.
Multi-channel input is averaged to mono. Sources: any file soundfile reads (wav, flac, ogg, ...) and Kaldi
`file.ark:offset` objects (see `kaldi_ark`).
"""

from __future__ import annotations

import io
import math
import os

import numpy as np
import soundfile as sf

from tasu.data.kaldi_ark import ArkError, is_ark_spec, read_ark_audio

_SF_ERRORS = (sf.SoundFileError, RuntimeError, ValueError, EOFError, TypeError)

# soundfile sizes its output array from the header's frame count before decoding a single frame, so a corrupt
# header claiming billions of frames would allocate GiBs (seen by the fuzz suite: a 3 KB FLAC claiming 208 GiB).
# No real encoding packs more samples per byte than FLAC's constant subframes (~22k at block size 65535 with 8
# channels; ~1k at libsndfile's defaults): a header claiming more than this many samples per input byte lies.
MAX_SAMPLES_PER_BYTE = 32768


class AudioError(ValueError):
    """Unusable audio; `reason` is one of unreadable_audio (missing / unopenable), corrupt_audio, empty_audio."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _mono(audio: np.ndarray) -> np.ndarray:
    # [N, C] -> [N]; soundfile returns channels last
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    return np.ascontiguousarray(audio, dtype=np.float32)


def _decode(fobj, nbytes: int, where: str) -> tuple[np.ndarray, int]:
    """soundfile decode of an open binary file of `nbytes` bytes, refusing headers that claim impossible
    lengths; every failure is an AudioError (corrupt_audio)."""
    try:
        with sf.SoundFile(fobj) as f:
            claimed = f.frames * f.channels
            if claimed > MAX_SAMPLES_PER_BYTE * max(nbytes, 1):
                raise AudioError("corrupt_audio", f"{where}: the header claims {f.frames} frames x {f.channels} "
                                                  f"channels from {nbytes} bytes (corrupt header)")
            return f.read(dtype="float32", always_2d=False), int(f.samplerate)
    except MemoryError:
        raise AudioError("corrupt_audio", f"{where}: the header claims a length that does not fit in memory") from None
    except _SF_ERRORS as e:
        if isinstance(e, AudioError):
            raise
        raise AudioError("corrupt_audio", f"{where}: undecodable audio ({e})") from None


def read_audio(path: str, default_rate: int = 16000) -> tuple[np.ndarray, int]:
    """(mono float32 samples [N], sample rate) from a file path or a Kaldi `file.ark:offset`.

    `default_rate` applies to Kaldi vector/matrix objects, which store no rate.
    """
    if is_ark_spec(path):
        try:
            audio, sr = read_ark_audio(path)
        except ArkError as e:
            raise AudioError("corrupt_audio" if e.corrupt else "unreadable_audio", str(e)) from None
        sr = default_rate if sr is None else sr
    else:
        try:
            f = open(path, "rb")
        except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
            why = getattr(e, "strerror", None) or e
            raise AudioError("unreadable_audio", f"{path!r}: cannot open ({why})") from None
        with f:
            audio, sr = _decode(f, os.fstat(f.fileno()).st_size, path)
    audio = _mono(audio)
    if audio.size == 0:
        raise AudioError("empty_audio", f"{path}: audio has no samples")
    if not np.isfinite(audio).all():
        raise AudioError("corrupt_audio", f"{path}: audio has NaN or infinite samples")
    return audio, int(sr)


def audio_info(path: str, default_rate: int = 16000) -> tuple[int, int]:
    """(number of samples, sample rate) without decoding the whole file where the format allows it."""
    if is_ark_spec(path):
        audio, sr = read_audio(path, default_rate)  # ark objects carry no cheap header for every type
        return int(audio.shape[0]), sr
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise AudioError("unreadable_audio", f"{path}: cannot open (no such readable file)")
    try:
        info = sf.info(path)
    except OSError as e:
        raise AudioError("unreadable_audio", f"{path}: cannot open ({e.strerror or e})") from None
    except _SF_ERRORS as e:
        raise AudioError("corrupt_audio", f"{path}: undecodable audio ({e})") from None
    if info.frames <= 0:
        raise AudioError("empty_audio", f"{path}: audio has no samples")
    return int(info.frames), int(info.samplerate)


def encode_flac(audio: np.ndarray, sample_rate: int) -> bytes:
    """Lossless 16-bit FLAC bytes of mono float audio [N] (values are clipped to [-1, 1))."""
    pcm = np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    buf = io.BytesIO()
    sf.write(buf, pcm, int(sample_rate), format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def decode_audio_bytes(data: bytes, where: str = "audio") -> tuple[np.ndarray, int]:
    """(mono float32 samples [N], rate) from encoded bytes (flac, wav, ...)."""
    audio, sr = _decode(io.BytesIO(data), len(data), where)
    audio = _mono(audio)
    if audio.size == 0:
        raise AudioError("empty_audio", f"{where}: audio has no samples")
    if not np.isfinite(audio).all():  # float WAV / FLOAT subtypes can hold them; shards from elsewhere may
        raise AudioError("corrupt_audio", f"{where}: audio has NaN or infinite samples")
    return audio, int(sr)


def resampled_length(n: int, sr_in: int, sr_out: int) -> int:
    """Samples after `resample` (polyphase: ceil(n * up / down) with up/down = sr_out/sr_in reduced)."""
    if sr_in == sr_out:
        return n
    g = math.gcd(sr_in, sr_out)
    up, down = sr_out // g, sr_in // g
    return -(-n * up // down)


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly, Kaiser-windowed FIR) of [N] -> [resampled_length]."""
    if sr_in == sr_out:
        return audio
    from scipy.signal import resample_poly

    g = math.gcd(sr_in, sr_out)
    out = resample_poly(audio.astype(np.float64), sr_out // g, sr_in // g)
    return out.astype(np.float32)
