"""Projector interface and `FrameInput`, the per-frame view every projector reads.

A projector maps `Posteriors` [B, T, V] (input_kind "posteriors") or their encoder `features` [B, T, D]
(input_kind "features") to LLM input embeddings [B, T', H] plus lengths [B]. Frames past a row's length are
padding: they are zeroed on input and on output, so a row's embeddings never depend on the rest of its batch.

`FrameInput` keeps the sparse CPS layout (ids + smooth) when it gets one, and offers the two operations projectors
need -- a per-frame linear map and a strided frame selection -- in O(B*T*out) memory for the sparse layout
(`tasu.align.sim_project`), so simulated batches never materialise [B, T, V].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tasu.align.sim_project import sim_linear
from tasu.kernels.checks import check_ids_in_range
from tasu.types import Posteriors

INPUT_KINDS = ("posteriors", "features")


@dataclass
class FrameInput:
    """mask [B, T] (True = valid); either dense [B, T, C] or sparse ids/smooth [B, T] with C = vocab_size."""

    mask: Tensor
    dense: Tensor | None = None
    ids: Tensor | None = None
    smooth: Tensor | None = None
    vocab_size: int = 0

    @classmethod
    def from_posteriors(cls, post: Posteriors, input_kind: str) -> FrameInput:
        mask = post.frame_mask()
        if input_kind == "features":
            if post.features is None:
                raise ValueError("this projector reads encoder features (input_kind='features') but the "
                                 "Posteriors carry none: request hidden layers from the encoder")
            return cls(mask=mask, dense=post.features.masked_fill(~mask.unsqueeze(-1), 0.0))
        if post.is_sparse:
            ids = post.ids.masked_fill(~mask, 0)
            check_ids_in_range(ids, post.vocab_size, "sparse Posteriors ids on valid frames")
            return cls(mask=mask, ids=ids, smooth=post.smooth.masked_fill(~mask, 0.0), vocab_size=post.vocab_size)
        return cls(mask=mask, dense=post.dense_probs().masked_fill(~mask.unsqueeze(-1), 0.0))

    @property
    def is_sparse(self) -> bool:
        return self.ids is not None

    @property
    def dim(self) -> int:
        return self.vocab_size if self.is_sparse else int(self.dense.shape[-1])

    @property
    def frames(self) -> int:
        return int(self.mask.shape[1])

    def strided(self, start: int, stride: int, count: int) -> FrameInput:
        """Frames start, start + stride, ... (`count` of them); positions outside [0, T) become padding."""
        t = self.frames
        if count <= 0:
            left, right, sl = 0, 0, slice(0, 0)
        else:
            left = max(0, -start)
            right = max(0, start + stride * (count - 1) + 1 - t)
            sl = slice(start + left, start + left + stride * (count - 1) + 1, stride)

        def take(x: Tensor | None, value) -> Tensor | None:
            if x is None:
                return None
            pad = (0, 0, left, right) if x.dim() == 3 else (left, right)
            return F.pad(x, pad, value=value)[:, sl]

        return FrameInput(mask=take(self.mask, False), dense=take(self.dense, 0.0), ids=take(self.ids, 0),
                          smooth=take(self.smooth, 0.0), vocab_size=self.vocab_size)

    def linear(self, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """weight [O, C] @ frame + bias -> [B, T, O], zero on padding frames."""
        if self.is_sparse:
            out = sim_linear(self.ids, self.smooth, self.vocab_size, weight, bias)
        else:
            out = F.linear(self.dense.to(weight.dtype), weight, bias)
        return out.masked_fill(~self.mask.unsqueeze(-1), 0.0)


class Projector(nn.Module):
    """Base: `forward(post) -> (embeddings [B, T', H], lengths [B])`."""

    input_kind: str
    in_dim: int
    out_dim: int

    def __init__(self, in_dim: int, out_dim: int, input_kind: str):
        super().__init__()
        if input_kind not in INPUT_KINDS:
            raise ValueError(f"projector input_kind must be one of {INPUT_KINDS}, got '{input_kind}'")
        self.in_dim, self.out_dim, self.input_kind = in_dim, out_dim, input_kind

    def frames(self, post: Posteriors) -> FrameInput:
        """The frames this projector reads, checked against its input size."""
        x = FrameInput.from_posteriors(post, self.input_kind)
        if x.dim != self.in_dim:
            what = "feature size" if self.input_kind == "features" else "CTC vocabulary size"
            raise ValueError(f"{type(self).__name__} was built for in_dim {self.in_dim} but got {what} {x.dim}")
        return x

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """[B] output frames for [B] input frames (identity unless the projector downsamples)."""
        return lengths

    def forward(self, post: Posteriors) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class FrozenRef:
    """Holds the LLM's input embedding without registering it as a submodule: the LLM owns it (no duplicate
    state-dict entries, no accidental unfreezing when the projector is set trainable)."""

    def __init__(self, module: nn.Embedding):
        self.module = module

    @property
    def weight(self) -> Tensor:
        return self.module.weight.detach()       # [V_llm, H]


def check_llm_ids(ctc_to_llm_ids: list[int] | None, vocab_size: int, llm_vocab: int, who: str) -> torch.Tensor:
    """CTC id i (>= 1) -> LLM id ctc_to_llm_ids[i - 1], validated; returns a [V - 1] long tensor."""
    if ctc_to_llm_ids is None:
        raise ValueError(f"{who} needs ctc_to_llm_ids (the LLM id of every CTC unit)")
    if len(ctc_to_llm_ids) != vocab_size - 1:
        raise ValueError(f"{who}: ctc_to_llm_ids has {len(ctc_to_llm_ids)} entries, expected V - 1 = "
                         f"{vocab_size - 1} (one per non-blank CTC unit)")
    ids = torch.as_tensor(ctc_to_llm_ids, dtype=torch.long)
    if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= llm_vocab):
        raise ValueError(f"{who}: ctc_to_llm_ids must lie in [0, {llm_vocab}) (the LLM vocabulary)")
    return ids
