"""Acoustic features on 16 kHz mono audio: Whisper log-mel (true length) and Kaldi fbank; SpecAugment.

Shapes: audio [N] float32 in [-1, 1] -> features [F, M] float32 (F frames of 10 ms, M mel bins).
    whisper_log_mel: F = N // 160           (STFT centred, reflect-padded, last frame dropped, as Whisper)
    kaldi_fbank:     F = 1 + (N - 400) // 160 for N >= 400 else 0   (snip_edges, as Kaldi)
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
_KALDI_PADDED = 512  # Kaldi rounds the 400-sample window up to a power of two
_EPS = float(torch.finfo(torch.float32).eps)


def num_frames(num_samples: int, kind: str) -> int:
    """Feature frames of `num_samples` 16 kHz samples for features `kind` (whisper_mel | fbank)."""
    if kind == "whisper_mel":
        return num_samples // HOP
    if kind == "fbank":
        return 0 if num_samples < N_FFT else 1 + (num_samples - N_FFT) // HOP
    raise ValueError(f"unknown features '{kind}' (whisper_mel | fbank)")


@lru_cache(maxsize=4)
def _whisper_filters(n_mels: int) -> torch.Tensor:
    from transformers.audio_utils import mel_filter_bank

    # [n_fft // 2 + 1, M], Slaney scale and norm: exactly WhisperFeatureExtractor's filters
    fb = mel_filter_bank(num_frequency_bins=1 + N_FFT // 2, num_mel_filters=n_mels, min_frequency=0.0,
                         max_frequency=8000.0, sampling_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney")
    return torch.from_numpy(fb).to(torch.float32)


def whisper_log_mel(audio: np.ndarray | torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """Whisper's log-mel of the clip at its true length (no 30 s padding) -> [N // 160, n_mels].

    Equal to transformers' WhisperFeatureExtractor on the same unpadded audio: hann(400) STFT, hop 160, power,
    Slaney mel, log10(max(x, 1e-10)), floor at (max - 8), then (x + 4) / 4.
    """
    x = torch.as_tensor(audio, dtype=torch.float32)
    if x.ndim != 1 or x.shape[0] <= N_FFT // 2:
        raise ValueError(f"whisper_log_mel needs mono audio longer than {N_FFT // 2} samples, got {tuple(x.shape)}")
    window = torch.hann_window(N_FFT)
    stft = torch.stft(x, N_FFT, HOP, window=window, return_complex=True)  # [201, N // 160 + 1]
    spec = stft[:, :-1]
    power = spec.real.square() + spec.imag.square()  # [201, F]; |z|^2 without complex abs's sqrt (3x faster)
    mel = _whisper_filters(n_mels).T @ power  # [M, F]
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).T.contiguous()  # [F, M]


@lru_cache(maxsize=4)
def _kaldi_mel_banks(n_mels: int, low_freq: float = 20.0, high_freq: float = 8000.0) -> torch.Tensor:
    """Kaldi's triangular mel banks [M, 257] (mel = 1127 ln(1 + f / 700), triangles in the mel domain)."""
    def mel(f):
        return 1127.0 * torch.log(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)

    n_bins = _KALDI_PADDED // 2  # the Nyquist bin gets zero weight (Kaldi's convention)
    bin_width = SAMPLE_RATE / _KALDI_PADDED
    mel_lo, mel_hi = mel(low_freq), mel(high_freq)
    delta = (mel_hi - mel_lo) / (n_mels + 1)
    m = torch.arange(n_mels, dtype=torch.float64).unsqueeze(1)
    left, center, right = mel_lo + m * delta, mel_lo + (m + 1) * delta, mel_lo + (m + 2) * delta
    fft_mel = mel(bin_width * torch.arange(n_bins, dtype=torch.float64)).unsqueeze(0)  # [1, 256]
    up = (fft_mel - left) / (center - left)
    down = (right - fft_mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)  # [M, 256]
    return torch.nn.functional.pad(banks, (0, 1)).to(torch.float32)  # [M, 257]


def kaldi_fbank(audio: np.ndarray | torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """Kaldi `compute-fbank-feats` defaults (dither 0) on 16 kHz audio -> [1 + (N - 400) // 160, n_mels].

    Audio is scaled to int16 range first, as Kaldi reads it. Per frame: remove the DC offset, pre-emphasis 0.97,
    povey window (hann^0.85), zero-pad to 512, power spectrum, mel banks (20 Hz .. 8 kHz), log(max(x, eps)).
    """
    x = torch.as_tensor(audio, dtype=torch.float32) * 32768.0
    if x.ndim != 1 or x.shape[0] < N_FFT:
        raise ValueError(f"kaldi_fbank needs mono audio of at least {N_FFT} samples, got {tuple(x.shape)}")
    frames = x.unfold(0, N_FFT, HOP)  # [F, 400]
    frames = frames - frames.mean(dim=1, keepdim=True)
    prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)  # Kaldi: x[0] - 0.97 x[0] for the first sample
    frames = frames - 0.97 * prev
    window = torch.hann_window(N_FFT, periodic=False, dtype=torch.float64).pow(0.85).to(torch.float32)
    frames = torch.nn.functional.pad(frames * window, (0, _KALDI_PADDED - N_FFT))  # [F, 512]
    power = torch.fft.rfft(frames).abs().pow(2.0)  # [F, 257]
    mel = power @ _kaldi_mel_banks(n_mels).T  # [F, M]
    return torch.clamp(mel, min=_EPS).log()


def compute_features(audio: np.ndarray | torch.Tensor, kind: str, n_mels: int) -> torch.Tensor:
    """Dispatch on `kind`: whisper_mel | fbank -> [F, n_mels]."""
    if kind == "whisper_mel":
        return whisper_log_mel(audio, n_mels)
    if kind == "fbank":
        return kaldi_fbank(audio, n_mels)
    raise ValueError(f"unknown features '{kind}' (whisper_mel | fbank)")


def spec_augment(feats: torch.Tensor, rng: np.random.Generator, freq_masks: int, freq_width: int,
                 time_masks: int, time_width: int, time_ratio: float) -> torch.Tensor:
    """SpecAugment masks on [F, M] features (a copy): `freq_masks` bands of up to `freq_width` bins and
    `time_masks` spans of up to min(time_width, time_ratio * F) frames, filled with the utterance mean
    (for log features a zero fill would be an artificial loud or silent value)."""
    out = feats.clone()
    n_frames, n_bins = out.shape
    fill = float(out.mean()) if out.numel() else 0.0
    for _ in range(freq_masks):
        w = int(rng.integers(0, min(freq_width, n_bins) + 1))
        if w:
            f0 = int(rng.integers(0, n_bins - w + 1))
            out[:, f0:f0 + w] = fill
    t_max = min(time_width, int(math.floor(time_ratio * n_frames)))
    for _ in range(time_masks):
        w = int(rng.integers(0, t_max + 1)) if t_max > 0 else 0
        if w:
            t0 = int(rng.integers(0, n_frames - w + 1))
            out[t0:t0 + w, :] = fill
    return out
