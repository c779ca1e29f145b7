"""The CTC encoder interface: acoustic features in, CTC logits (+ optional hidden states) out.

Shapes: feats [B, F, M] (F feature frames, M mel / fbank bins), feat_lengths [B];
logits [B, T, V] with T encoder frames (after subsampling), lengths [B].

Hidden-state indices (`hidden_layers`) follow Hugging Face's `hidden_states` convention: an encoder with L layers
has L + 1 states; index 0 is the input of the first layer (front end + positions), index k the output of layer k,
and index L (= -1) the encoder's final output (after its closing LayerNorm), i.e. what the CTC head reads.
Negative indices count from the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tasu.types import Posteriors


@dataclass
class EncoderOutput:
    """logits [B, T, V] CTC logits; lengths [B] valid frames; hidden: requested states, each [B, T, D]."""

    logits: Tensor
    lengths: Tensor
    hidden: list[Tensor] = field(default_factory=list)


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """[B, max_len] bool, True on valid frames."""
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


class CTCEncoder(nn.Module):
    """Base class. Subclasses set `vocab_size`, `hidden_size`, `frame_rate_hz`, `num_layers`, `n_mels` and own two
    submodules so freezing can address them: `encoder` (the acoustic body) and `ctc_head`."""

    vocab_size: int
    hidden_size: int
    frame_rate_hz: float
    num_layers: int
    n_mels: int

    def forward(self, feats: Tensor, feat_lengths: Tensor, hidden_layers: Sequence[int] = ()) -> EncoderOutput:
        raise NotImplementedError

    def output_lengths(self, feat_lengths: Tensor) -> Tensor:
        """[B] encoder frames produced from [B] feature frames."""
        raise NotImplementedError

    def posteriors(self, feats: Tensor, feat_lengths: Tensor, hidden_layers: Sequence[int] = (),
                   log_probs: bool = True) -> Posteriors:
        """CTC posteriors (log_softmax in fp32); `features` = the requested hidden state(s), concatenated on D.
        `log_probs=False`: probabilities only (one softmax: no second [B, T, V] tensor for consumers that read
        probabilities only, e.g. PSD + projector)."""
        return self.posteriors_of(self(feats, feat_lengths, hidden_layers), log_probs)

    def posteriors_of(self, out: EncoderOutput, log_probs: bool = True) -> Posteriors:
        """`posteriors` of an encoder output already computed (callers that also need its raw logits, e.g. a CTC
        loss, run the encoder once)."""
        features = None
        if out.hidden:
            features = out.hidden[0] if len(out.hidden) == 1 else torch.cat(out.hidden, dim=-1)
        if not log_probs:
            return Posteriors(lengths=out.lengths, vocab_size=self.vocab_size,
                              probs=torch.softmax(out.logits.float(), dim=-1), features=features)
        lp = torch.log_softmax(out.logits.float(), dim=-1)
        return Posteriors(lengths=out.lengths, vocab_size=self.vocab_size, probs=lp.exp(), log_probs=lp,
                          features=features)

    def resolve_layers(self, hidden_layers: Sequence[int]) -> list[int]:
        """Requested hidden indices -> non-negative indices in [0, num_layers]; clear error when out of range."""
        n = self.num_layers + 1
        out = []
        for i in hidden_layers:
            if not -n <= int(i) < n:
                raise ValueError(f"hidden layer {i} out of range: this encoder has {n} hidden states "
                                 f"(0 = front end, {n - 1} or -1 = final output)")
            out.append(int(i) % n)
        return out

    def check_inputs(self, feats: Tensor, feat_lengths: Tensor) -> None:
        """Validate [B, F, M] feats and [B] lengths (1 <= length <= F)."""
        if feats.dim() != 3 or feats.shape[-1] != self.n_mels:
            raise ValueError(f"feats must be [B, F, {self.n_mels}] (n_mels = {self.n_mels}), got {tuple(feats.shape)}")
        if feat_lengths.dim() != 1 or feat_lengths.shape[0] != feats.shape[0]:
            raise ValueError(f"feat_lengths must be [B={feats.shape[0]}], got {tuple(feat_lengths.shape)}")
        if feats.shape[0] and (int(feat_lengths.min()) < 1 or int(feat_lengths.max()) > feats.shape[1]):
            raise ValueError(f"feat_lengths must lie in [1, {feats.shape[1]}], got "
                             f"min {int(feat_lengths.min())} max {int(feat_lengths.max())}")
