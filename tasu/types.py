"""The one posterior contract between speech encoders, the text simulator (CPS) and projectors.

Dimension legend used across tasu:
    B  batch size
    T  frames (encoder frames, or simulated frames: one per CTC token)
    V  CTC vocabulary size (blank included, blank id 0 unless stated)
    D  hidden size of the encoder / projector
    H  hidden size of the LLM
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class Posteriors:
    """CTC posteriors for a batch, in one of two equivalent layouts.

    Dense (real encoder): ``probs`` [B, T, V] (rows sum to 1) and/or ``log_probs`` [B, T, V].

    Sparse two-valued (CPS simulation): every frame is a smoothed one-hot
        p[b, t] = (1 - smooth[b, t]) * onehot(ids[b, t]) + smooth[b, t] / V
    so a frame is fully described by ``ids`` [B, T] (long) and ``smooth`` [B, T] (float,
    in [0, V/(V-1)]: a blank frame of mass m < 1/V needs slightly more than 1).
    Blank frames are frames whose id is the blank id. Projectors may use the sparse layout to avoid
    ever materialising [B, T, V]; ``dense_probs()`` gives the identical dense tensor.

    ``lengths`` [B] (long) gives the valid frames per row; frames past a row's length are padding and
    carry undefined values. ``features`` [B, T, D] optionally holds encoder hidden states aligned with
    the frames (PSD merges them together with the posteriors).
    """

    lengths: torch.Tensor
    vocab_size: int
    probs: torch.Tensor | None = None
    log_probs: torch.Tensor | None = None
    ids: torch.Tensor | None = None
    smooth: torch.Tensor | None = None
    features: torch.Tensor | None = None
    blank_id: int = 0

    def __post_init__(self) -> None:
        dense = self.probs is not None or self.log_probs is not None
        sparse = self.ids is not None
        if dense == sparse:
            raise ValueError("Posteriors needs exactly one layout: dense (probs/log_probs) or sparse (ids + smooth)")
        if sparse and (self.smooth is None or self.smooth.shape != self.ids.shape):
            raise ValueError("sparse Posteriors needs smooth with the same [B, T] shape as ids")

    @property
    def is_sparse(self) -> bool:
        return self.ids is not None

    @property
    def batch_size(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def max_frames(self) -> int:
        ref = self.ids if self.is_sparse else (self.probs if self.probs is not None else self.log_probs)
        return int(ref.shape[1])

    def dense_probs(self) -> torch.Tensor:
        """[B, T, V] probabilities (materialised for the sparse layout: O(B*T*V) memory)."""
        if self.probs is not None:
            return self.probs
        if self.log_probs is not None:
            return self.log_probs.exp()
        onehot = torch.nn.functional.one_hot(self.ids, self.vocab_size).to(self.smooth.dtype)
        s = self.smooth.unsqueeze(-1)
        return (1.0 - s) * onehot + s / self.vocab_size

    def to_dense(self) -> Posteriors:
        """The same posteriors in the dense layout."""
        if not self.is_sparse:
            return self
        return Posteriors(lengths=self.lengths, vocab_size=self.vocab_size, probs=self.dense_probs(),
                          features=self.features, blank_id=self.blank_id)

    def to(self, device=None, dtype=None) -> Posteriors:
        """Move tensors; ``dtype`` applies to floating tensors only."""
        def mv(x):
            if x is None:
                return None
            if x.is_floating_point():
                return x.to(device=device, dtype=dtype)
            return x.to(device=device)
        return replace(self, lengths=mv(self.lengths), probs=mv(self.probs), log_probs=mv(self.log_probs),
                       ids=mv(self.ids), smooth=mv(self.smooth), features=mv(self.features))

    def frame_mask(self) -> torch.Tensor:
        """[B, T] bool, True on valid frames."""
        t = torch.arange(self.max_frames, device=self.lengths.device)
        return t.unsqueeze(0) < self.lengths.unsqueeze(1)


@dataclass
class SpeechBatch:
    """What the data pipeline hands to `SpeechLLM` (one micro-batch).

    The prompt is split around the `<speech>` placeholder so the model can splice in however many
    projected frames the speech yields (PSD makes that number data-dependent):
        [prompt_prefix] [projected speech frames] [prompt_suffix] [answer]
    Loss is taken on `answer` only.

    Several speech segments per sample (LLaSO: several `<audio>` in one turn, in order): `speech_counts[b]` = S_b
    segments for sample b, and `prompt_middle[b]` holds the S_b - 1 text pieces between them:
        [prompt_prefix] [speech 0] [middle 0] [speech 1] ... [middle S-2] [speech S-1] [prompt_suffix] [answer]
    The segments of all samples are the rows of `feats` / `feat_lengths`, sample after sample (N = sum S_b rows).
    Both fields are None when every sample has exactly one segment (then N = B): the single-speech path.

    Fields (B = batch size; F = feature frames; M = mel / fbank bins):
        keys           list[str]           sample keys (unique)
        tasks          list[str]           task names (ASR, EN2ZH, ...)
        prompt_prefix  list[list[int]]     LLM ids before the speech
        prompt_suffix  list[list[int]]     LLM ids after the speech, up to the assistant's answer
        answer         list[list[int]]     LLM ids of the answer, eos included (empty when generating)
        references     list[str]           reference answer text (for scoring)
        posteriors     Posteriors | None   simulated posteriors (simulated mode)
        feats          Tensor | None       [B, F, M] acoustic features (audio modes)
        feat_lengths   Tensor | None       [B] valid feature frames
        audio_seconds  float               total seconds of audio in the batch (0 for text)
        ctc_targets    list[list[int]] | None  CTC unit ids of the transcripts (audio batches; joint CTC loss)
        speech_counts  list[int] | None    speech segments per sample (None: one each)
        prompt_middle  list[list[list[int]]] | None  LLM ids between consecutive segments, S_b - 1 per sample
    With segments, feats is [N, F, M] and feat_lengths [N] over the N = sum(speech_counts) segments.
    """

    keys: list[str]
    tasks: list[str]
    prompt_prefix: list[list[int]]
    prompt_suffix: list[list[int]]
    answer: list[list[int]]
    references: list[str]
    posteriors: Posteriors | None = None
    feats: torch.Tensor | None = None
    feat_lengths: torch.Tensor | None = None
    audio_seconds: float = 0.0
    ctc_targets: list[list[int]] | None = None
    speech_counts: list[int] | None = None
    prompt_middle: list[list[list[int]]] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def segments(self) -> list[int]:
        """Speech segments per sample (1 each on the single-speech path)."""
        return list(self.speech_counts) if self.speech_counts is not None else [1] * len(self.keys)

    def middles(self, i: int) -> list[list[int]]:
        """The text pieces between sample i's segments ([] on the single-speech path)."""
        return [] if self.prompt_middle is None else self.prompt_middle[i]

    @property
    def is_text_only(self) -> bool:
        """True for simulated (CPS) batches: no audio features."""
        return self.feats is None

    def to(self, device) -> SpeechBatch:
        """Move tensors to `device` (lists of ids stay on the host)."""
        return replace(self, posteriors=None if self.posteriors is None else self.posteriors.to(device),
                       feats=None if self.feats is None else self.feats.to(device),
                       feat_lengths=None if self.feat_lengths is None else self.feat_lengths.to(device))

    def num_frames(self) -> int:
        """Valid input frames: feature frames (audio) or simulated frames (text)."""
        if self.feat_lengths is not None:
            return int(self.feat_lengths.sum())
        return int(self.posteriors.lengths.sum()) if self.posteriors is not None else 0
