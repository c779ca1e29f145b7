"""Frame-wise MLP projectors: linear-silu (TASU's), linear with frame stacking (SLAM style), conv1d.

All three accept dense or sparse posteriors, or encoder features; on sparse (CPS) posteriors the first layer runs
through `tasu.align.sim_project`, so [B, T, V] is never built. `linear` and `conv1d` take their hidden activation
by name (`model.projector.activation`): `linear` with gelu and stack 1 is LLaVA's / LLaSO's mlp2x_gelu.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from tasu.align.sim_project import sim_layernorm_linear
from tasu.model.encoders.base import length_mask
from tasu.model.projectors.base import FrameInput, Projector
from tasu.types import Posteriors

ACTIVATION_FNS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu}


def _ceil_div(x, k: int):
    return (x + k - 1) // k


def _activation(name: str):
    if name not in ACTIVATION_FNS:
        raise ValueError(f"unknown projector activation '{name}' {tuple(ACTIVATION_FNS)}")
    return ACTIVATION_FNS[name]


class LinearSiLUProjector(Projector):
    """TASU's reference projector: LayerNorm(in) -> Linear(in, hidden) -> SiLU -> Linear(hidden, H). Keeps T."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, input_kind: str = "posteriors"):
        super().__init__(in_dim, out_dim, input_kind)
        self.norm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, post: Posteriors) -> tuple[Tensor, Tensor]:
        x = self.frames(post)
        if x.is_sparse:   # exact LayerNorm + Linear on two-valued frames: O(B*T*hidden), no [B, T, V]
            h = sim_layernorm_linear(x.ids, x.smooth, x.vocab_size, self.norm, self.fc1)
        else:
            h = self.fc1(self.norm(x.dense.to(self.fc1.weight.dtype)))
        out = self.fc2(F.silu(h))                                                  # [B, T, H]
        return out.masked_fill(~x.mask.unsqueeze(-1), 0.0), post.lengths


class _TapProjector(Projector):
    """out[t'] = sum_j W_j @ frame[t' * k + j - left] + b over `taps` taps: frame stacking (left = 0, taps = k) and
    a strided conv (left = 1, taps = k + 2) share this. T' = ceil(T / k); padding frames contribute nothing."""

    def __init__(self, in_dim: int, out_dim: int, input_kind: str, stack: int, taps: int, left: int):
        super().__init__(in_dim, out_dim, input_kind)
        if stack < 1:
            raise ValueError(f"model.projector.stack must be >= 1, got {stack}")
        self.stack, self.taps, self.left = stack, taps, left

    def tap_weight(self, j: int) -> Tensor:                                   # [hidden, in] of tap j
        raise NotImplementedError

    def first_layer(self, x: FrameInput, bias: Tensor) -> Tensor:
        t_out = _ceil_div(x.frames, self.stack)
        h = bias
        for j in range(self.taps):
            h = h + x.strided(j - self.left, self.stack, t_out).linear(self.tap_weight(j))
        return h                                                              # [B, T', hidden]

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return _ceil_div(lengths, self.stack)


class StackLinearProjector(_TapProjector):
    """SLAM-ASR style: concat k consecutive frames (tail padded with zeros) -> Linear(k*in, hidden) -> act (ReLU by
    default) -> Linear(hidden, H); lengths = ceil(len / k). `fc1.weight[:, j*in:(j+1)*in]` acts on frame j of each
    group."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, stack: int = 1, input_kind: str = "posteriors",
                 activation: str = "relu"):
        super().__init__(in_dim, out_dim, input_kind, stack, taps=stack, left=0)
        self.activation = activation
        self.act = _activation(activation)
        self.fc1 = nn.Linear(stack * in_dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def tap_weight(self, j: int) -> Tensor:
        return self.fc1.weight[:, j * self.in_dim:(j + 1) * self.in_dim]

    def forward(self, post: Posteriors) -> tuple[Tensor, Tensor]:
        x = self.frames(post)
        lengths = self.output_lengths(post.lengths)
        h = self.act(self.first_layer(x, self.fc1.bias))
        out = self.fc2(h)                                                    # [B, T', H]
        return out.masked_fill(~length_mask(lengths, out.shape[1]).unsqueeze(-1), 0.0), lengths


class Conv1dProjector(_TapProjector):
    """Conv1d(in, hidden, kernel k + 2, stride k, padding 1) -> act (GELU by default) -> Linear(hidden, H);
    T' = ceil(T / k). Each output frame sees its own k frames plus one neighbour on each side."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, stack: int = 1, input_kind: str = "posteriors",
                 activation: str = "gelu"):
        super().__init__(in_dim, out_dim, input_kind, stack, taps=stack + 2, left=1)
        self.activation = activation
        self.act = _activation(activation)
        self.conv = nn.Conv1d(in_dim, hidden, kernel_size=stack + 2, stride=stack, padding=1)
        self.out = nn.Linear(hidden, out_dim)

    def tap_weight(self, j: int) -> Tensor:
        return self.conv.weight[:, :, j]

    def forward(self, post: Posteriors) -> tuple[Tensor, Tensor]:
        x = self.frames(post)
        lengths = self.output_lengths(post.lengths)
        out = self.out(self.act(self.first_layer(x, self.conv.bias)))
        return out.masked_fill(~length_mask(lengths, out.shape[1]).unsqueeze(-1), 0.0), lengths
