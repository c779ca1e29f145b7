"""Fuzzing the audio decoder: garbage and mutated WAV / FLAC / Ogg bytes, files and Kaldi ark objects decode to
finite mono float32 with a positive rate, or raise AudioError with a known reason; nothing else escapes."""

from __future__ import annotations

import io
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import strategies as st

from tasu.data.audio_io import AudioError, decode_audio_bytes, read_audio

from .fuzz_strategies import mutated
from .fuzz_utils import fuzz_tests, tally, write_tally

REASONS = {"corrupt_audio", "empty_audio", "unreadable_audio"}


@pytest.fixture(scope="module", autouse=True)
def _tally():
    yield
    write_tally(__name__)


def _encoded(fmt: str, subtype: str, channels: int = 1, rate: int = 16000, n: int = 800) -> bytes:
    t = np.arange(n) / rate
    x = np.stack([0.3 * np.sin(2 * np.pi * (200 + 100 * c) * t) for c in range(channels)], axis=1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


SEEDS = [_encoded("WAV", "PCM_16"), _encoded("FLAC", "PCM_16"), _encoded("WAV", "FLOAT", 2),
         _encoded("OGG", "VORBIS"), _encoded("FLAC", "PCM_24", 3, 8000), _encoded("WAV", "PCM_U8", 1, 22050)]


def _ark_objects() -> list[bytes]:
    """Objects as they sit after `key ` in an ark: WAV, FLAC, kaldiio AUDIO, float vector, 1-row matrix, CM."""
    pcm = (np.arange(64, dtype=np.float32) - 32) * 100
    flac = _encoded("FLAC", "PCM_16")
    return [_encoded("WAV", "PCM_16"), flac, b"AUDIO" + bytes([2]) + len(flac).to_bytes(2, "little") + flac,
            b"\0BFV " + b"\x04" + struct.pack("<i", pcm.size) + pcm.tobytes(),
            b"\0BFM " + b"\x04" + struct.pack("<i", 1) + b"\x04" + struct.pack("<i", pcm.size) + pcm.tobytes(),
            b"\0BDV " + b"\x04" + struct.pack("<i", 4) + np.ones(4).tobytes(), b"\0BCM " + b"\x00" * 20]


ARK_SEEDS = _ark_objects()
_audio_bytes = st.one_of(mutated(SEEDS), st.binary(max_size=200), st.sampled_from(SEEDS))


def _check(decode, where: str, target: str) -> None:
    try:
        audio, sr = decode()
    except AudioError as e:
        assert e.reason in REASONS, e.reason
        assert str(e), "an AudioError must say what is wrong"
        tally(target, inputs=1, refused=1)
        return
    assert isinstance(audio, np.ndarray) and audio.dtype == np.float32 and audio.ndim == 1 and audio.size > 0
    assert np.isfinite(audio).all() and isinstance(sr, int) and sr > 0, (where, sr)
    tally(target, inputs=1, decoded=1)


def _bytes_body(data: bytes) -> None:
    _check(lambda: decode_audio_bytes(data, "fuzz"), "bytes", "audio.bytes")


def _file_body(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"a{suffix}"
        path.write_bytes(data)
        _check(lambda: read_audio(str(path)), str(path), "audio.file")


def _ark_body(prefix: bytes, obj: bytes, offset_delta: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.ark"
        path.write_bytes(prefix + b"utt1 " + obj)
        offset = max(0, len(prefix) + 5 + offset_delta)
        _check(lambda: read_audio(f"{path}:{offset}"), str(path), "audio.ark")


test_decode_bytes, test_decode_bytes_slow = fuzz_tests(150, 4000, data=_audio_bytes)(_bytes_body)
test_read_file, test_read_file_slow = fuzz_tests(
    40, 1000, data=_audio_bytes, suffix=st.sampled_from([".wav", ".flac", ".ogg", ".bin"]))(_file_body)
test_read_ark, test_read_ark_slow = fuzz_tests(
    60, 2000, prefix=st.binary(max_size=8), obj=st.one_of(mutated(ARK_SEEDS, header=24), st.binary(max_size=60)),
    offset_delta=st.sampled_from([0, 0, 0, -1, 1, 3, 10**6]))(_ark_body)


def test_regression_flac_header_claiming_huge_length_is_refused_without_allocating():
    """A FLAC STREAMINFO claiming 5.6e10 frames made soundfile allocate 208 GiB (MemoryError escaped)."""
    data = bytearray(_encoded("FLAC", "PCM_16"))
    # STREAMINFO starts at byte 8; total samples = low 36 bits of bytes 21..25 (after rate/channels/bps)
    data[21] = (data[21] & 0xF0) | 0x0F
    data[22:26] = b"\xff\xff\xff\xff"
    with pytest.raises(AudioError, match="claims") as e:
        decode_audio_bytes(bytes(data))
    assert e.value.reason == "corrupt_audio"


def test_regression_ark_lengths_beyond_the_file_are_clean_errors(tmp_path):
    """An AUDIO object with a 255-byte length field, or a vector of 2^31-1 doubles, used to raise OverflowError /
    MemoryError from f.read."""
    (tmp_path / "a.ark").write_bytes(b"k AUDIO" + bytes([255]) + b"\xff" * 255 + b"tail")
    (tmp_path / "b.ark").write_bytes(b"k \0BDV \x04" + struct.pack("<i", 2**31 - 1) + b"\0" * 16)
    for spec in (f"{tmp_path}/a.ark:2", f"{tmp_path}/b.ark:2"):
        with pytest.raises(AudioError, match="truncated") as e:
            read_audio(spec)
        assert e.value.reason == "corrupt_audio"


def test_regression_float_wav_bytes_with_nan_are_refused():
    buf = io.BytesIO()
    sf.write(buf, np.array([0.1, np.nan, 0.2], np.float32), 16000, format="WAV", subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN") as e:
        decode_audio_bytes(buf.getvalue())
    assert e.value.reason == "corrupt_audio"


@pytest.mark.parametrize("path", ["a\x00.wav", "x\x00.ark:5", "a" * 5000 + ".wav"], ids=["nul", "nul-ark", "long"])
def test_regression_unopenable_paths_are_audio_errors(path):
    """A NUL byte in a manifest's path made open() raise ValueError (found through `tasu shard`)."""
    with pytest.raises(AudioError) as e:
        read_audio(path)
    assert e.value.reason == "unreadable_audio"
