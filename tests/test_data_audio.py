"""Audio I/O (files, Kaldi ark objects), resampling, Whisper log-mel, Kaldi fbank and SpecAugment."""

from __future__ import annotations

import io
import math
import struct

import numpy as np
import pytest
import soundfile as sf
import torch

from tasu.data.audio_io import AudioError, audio_info, read_audio, resample, resampled_length
from tasu.data.features import kaldi_fbank, num_frames, spec_augment, whisper_log_mel


def noisy_tone(n: int, seed: int = 0, rate: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("n", [201, 1600, 4321, 16000 * 2 + 77])
def test_whisper_log_mel_equals_the_hf_extractor_on_unpadded_audio(n):
    from transformers import WhisperFeatureExtractor

    a = noisy_tone(n, seed=n)
    ref = WhisperFeatureExtractor(feature_size=80)(a, sampling_rate=16000, padding="longest",
                                                   return_tensors="np").input_features[0]  # [80, F]
    mine = whisper_log_mel(a, 80)
    assert mine.shape == (num_frames(n, "whisper_mel"), 80) == (ref.shape[1], 80)
    np.testing.assert_allclose(mine.numpy().T, ref, atol=1e-5)
    assert whisper_log_mel(a, 128).shape == (n // 160, 128)


def _kaldi_fbank_reference(x: np.ndarray, n_mels: int) -> np.ndarray:
    """Kaldi's compute-fbank-feats (dither 0) written out frame by frame from the Kaldi documentation."""
    x = x.astype(np.float64) * 32768.0
    n_frames = 1 + (len(x) - 400) // 160
    win = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 399)) ** 0.85
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    lo, hi = mel(20.0), mel(8000.0)
    centers = [lo + (m + 1) * (hi - lo) / (n_mels + 1) for m in range(n_mels)]
    step = (hi - lo) / (n_mels + 1)
    banks = np.zeros((n_mels, 257))
    for m, c in enumerate(centers):
        for k in range(256):
            f = mel(k * 16000 / 512)
            if c - step < f < c + step:
                banks[m, k] = (f - (c - step)) / step if f <= c else ((c + step) - f) / step
    out = np.zeros((n_frames, n_mels))
    for i in range(n_frames):
        fr = x[i * 160:i * 160 + 400].copy()
        fr -= fr.mean()
        fr = np.concatenate([[fr[0] - 0.97 * fr[0]], fr[1:] - 0.97 * fr[:-1]])
        spec = np.abs(np.fft.rfft(np.concatenate([fr * win, np.zeros(112)]))) ** 2
        out[i] = np.log(np.maximum(banks @ spec, np.finfo(np.float32).eps))
    return out


@pytest.mark.parametrize("n", [400, 1234, 8000])
def test_kaldi_fbank_matches_a_frame_by_frame_reference(n):
    a = noisy_tone(n, seed=n)
    mine = kaldi_fbank(a, 80)
    assert mine.shape == (num_frames(n, "fbank"), 80)
    np.testing.assert_allclose(mine.numpy(), _kaldi_fbank_reference(a, 80), rtol=1e-4, atol=2e-3)
    with pytest.raises(ValueError, match="at least 400"):
        kaldi_fbank(a[:399])


def test_spec_augment_is_seeded_bounded_and_pure():
    feats = torch.randn(200, 80)
    before = feats.clone()
    a = spec_augment(feats, np.random.default_rng(7), 2, 27, 2, 40, 0.2)
    b = spec_augment(feats, np.random.default_rng(7), 2, 27, 2, 40, 0.2)
    c = spec_augment(feats, np.random.default_rng(8), 2, 27, 2, 40, 0.2)
    assert torch.equal(feats, before) and torch.equal(a, b) and not torch.equal(a, c)
    fill = float(feats.mean())
    masked = a == fill
    full_cols = masked.all(dim=0).sum().item()
    full_rows = masked.all(dim=1).sum().item()
    assert 0 < full_cols <= 2 * 27 and full_rows <= 2 * 40
    assert torch.equal(a[~masked], feats[~masked])


def test_resample_length_and_frequency():
    rate_in, n = 8000, 8000
    x = np.sin(2 * np.pi * 1000 * np.arange(n) / rate_in).astype(np.float32)
    y = resample(x, rate_in, 16000)
    assert y.shape == (resampled_length(n, rate_in, 16000),) == (16000,)
    peak_hz = np.argmax(np.abs(np.fft.rfft(y))) * 16000 / len(y)
    assert abs(peak_hz - 1000) < 2
    assert resampled_length(1001, 24000, 16000) == math.ceil(1001 * 2 / 3) == resample(np.zeros(1001), 24000,
                                                                                        16000).shape[0]


def _ark(tmp_path, objects: dict[str, bytes]) -> dict[str, str]:
    buf, specs = io.BytesIO(), {}
    for key, data in objects.items():
        buf.write(key.encode() + b" ")
        specs[key] = f"{tmp_path}/a.ark:{buf.tell()}"
        buf.write(data)
    (tmp_path / "a.ark").write_bytes(buf.getvalue())
    return specs


def test_kaldi_ark_objects(tmp_path):
    x = noisy_tone(800)
    pcm = np.round(x * 32767).astype(np.int16)
    wav = io.BytesIO()
    sf.write(wav, np.stack([pcm, pcm], 1), 8000, format="WAV", subtype="PCM_16")  # stereo -> mono
    f = pcm.astype(np.float32)
    d = pcm.astype(np.float64) / 32768.0  # already in [-1, 1]: kept as is
    specs = _ark(tmp_path, {
        "wav": wav.getvalue(),
        "fv": b"\0BFV \x04" + struct.pack("<i", f.size) + f.tobytes(),
        "dm": b"\0BDM \x04" + struct.pack("<i", d.size) + b"\x04" + struct.pack("<i", 1) + d.tobytes(),
        "cm": b"\0BCM " + b"\0" * 64,
        "short": b"\0BFV \x04" + struct.pack("<i", 1000) + b"\0" * 10,
        "text": b"hello world",
    })
    ref = pcm.astype(np.float32) / 32768.0
    for key, rate in (("wav", 8000), ("fv", 16000), ("dm", 16000)):
        audio, sr = read_audio(specs[key])
        assert sr == rate and audio.shape == (800,)
        np.testing.assert_allclose(audio, ref, atol=1e-6)
    assert read_audio(specs["fv"], default_rate=8000)[1] == 8000
    assert audio_info(specs["wav"]) == (800, 8000)
    for key, msg in (("cm", "compressed"), ("short", "truncated"), ("text", "no audio object")):
        with pytest.raises(AudioError, match=msg) as e:
            read_audio(specs[key])
        assert e.value.reason == "corrupt_audio"
    with pytest.raises(AudioError) as e:
        read_audio(f"{tmp_path}/missing.ark:0")
    assert e.value.reason == "unreadable_audio"


def test_audio_file_errors(tmp_path):
    (tmp_path / "bad.flac").write_bytes(b"fLaC" + b"\x00" * 50)
    with pytest.raises(AudioError) as e:
        read_audio(str(tmp_path / "bad.flac"))
    assert e.value.reason == "corrupt_audio"
    with pytest.raises(AudioError) as e:
        audio_info(str(tmp_path / "none.wav"))
    assert e.value.reason == "unreadable_audio"
