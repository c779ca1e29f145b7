"""Whisper's encoder (transformers' `WhisperEncoder`) + a CTC head.

Two ways to run the body on feats [B, F, M] (log-mel, Whisper's normalisation, 100 frames/s):
- padded (`true_length=False`): every row is padded to Whisper's 30 s window (3000 mel frames) with Whisper's
  log-mel floor and run exactly as `WhisperEncoder.forward` does (no attention mask): what Whisper was trained on.
  The output is cut to the batch's own ceil(F / 2) frames (the rest only encode padding).
- true length (`true_length=True`, default): the conv front end, the first T = ceil(F / 2) rows of the positional
  table and the layers are called directly on the batch's own length, with a key padding mask; frames past a row's
  length are zeroed before each convolution, so a row's output does not depend on the rest of its batch. This skips
  HF's 3000-frame check (the fixed 1500-position table is sliced) and is ~8x faster on short clips (NOTES.md §5);
  it is not numerically equal to the padded path because attention no longer sees the padding.

Hidden-state indices: see `tasu.model.encoders.base` (0 = conv front end + positions, L = final LayerNorm output).
Freezing groups: `encoder` (the WhisperEncoder body, HF state-dict layout) and `ctc_head`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import WhisperConfig
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from tasu.config.fields import ConfigError
from tasu.model.encoders.base import CTCEncoder, EncoderOutput, length_mask
from tasu.model.encoders.heads import build_head

# (d_model, encoder layers, attention heads) of the released Whisper sizes; ffn = 4 * d_model.
WHISPER_SHAPES: dict[str, tuple[int, int, int]] = {
    "tiny-test": (64, 2, 4),
    "tiny": (384, 4, 6),
    "base": (512, 6, 8),
    "small": (768, 12, 12),
    "medium": (1024, 24, 16),
    "large": (1280, 32, 20),
}

#: Whisper's log-mel normalisation: log10 clamped to (max - 8), then (x + 4) / 4. Digital silence (zero padding
#: of the waveform) therefore sits at max(row max - 2, (log10(1e-10) + 4) / 4 = -1.5) in normalised units.
_LOG_MEL_RANGE = 2.0
_LOG_MEL_MIN = -1.5


def whisper_config(size: str, n_mels: int = 80) -> WhisperConfig:
    """A WhisperConfig of a named shape preset (random weights; real weights come with their own config)."""
    if size not in WHISPER_SHAPES:
        raise ConfigError(f"config key 'model.encoder.whisper_size': unknown size '{size}' {tuple(WHISPER_SHAPES)}")
    d, layers, heads = WHISPER_SHAPES[size]
    return WhisperConfig(num_mel_bins=n_mels, d_model=d, encoder_layers=layers, encoder_attention_heads=heads,
                         encoder_ffn_dim=4 * d, decoder_layers=layers, decoder_attention_heads=heads,
                         decoder_ffn_dim=4 * d, max_source_positions=1500)


def whisper_pad_value(feats: Tensor, feat_lengths: Tensor) -> Tensor:
    """[B] the log-mel value Whisper's feature extractor gives digital silence, per row (see _LOG_MEL_RANGE)."""
    valid = length_mask(feat_lengths, feats.shape[1]).unsqueeze(-1)              # [B, F, 1]
    row_max = feats.masked_fill(~valid, float("-inf")).amax(dim=(1, 2))         # [B]
    return (row_max - _LOG_MEL_RANGE).clamp(min=_LOG_MEL_MIN)


class WhisperCTCEncoder(CTCEncoder):
    """`WhisperEncoder` body (`self.encoder`) + CTC head (`self.ctc_head`) over `vocab_size` units."""

    def __init__(self, config: WhisperConfig, vocab_size: int, head: str = "linear", head_hidden: int = 256,
                 true_length: bool = True):
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        self.hidden_size = config.d_model
        self.num_layers = config.encoder_layers
        self.n_mels = config.num_mel_bins
        self.true_length = true_length
        self.frame_rate_hz = 50.0               # 100 mel frames/s, conv2 has stride 2
        self.encoder = WhisperEncoder(config)
        self.ctc_head = build_head(head, config.d_model, vocab_size, head_hidden)
        self.max_frames = config.max_source_positions * 2   # 3000 mel frames = 30 s

    def load_encoder_state(self, state_dict: dict[str, Tensor], strict: bool = True) -> None:
        """Load `WhisperEncoder` weights (keys as in its own state dict: `conv1.weight`, `layers.0.fc1.bias`, ...).

        With `strict`, any missing or unexpected key raises a ValueError that lists them."""
        own = set(self.encoder.state_dict())
        missing = sorted(own - set(state_dict))
        unexpected = sorted(set(state_dict) - own)
        if strict and (missing or unexpected):
            raise ValueError(f"Whisper encoder state does not match the model: missing keys {missing}, "
                             f"unexpected keys {unexpected}")
        for k, v in state_dict.items():
            if k in own and v.shape != self.encoder.state_dict()[k].shape:
                raise ValueError(f"Whisper encoder state: '{k}' has shape {tuple(v.shape)}, the model expects "
                                 f"{tuple(self.encoder.state_dict()[k].shape)} (wrong size preset or n_mels?)")
        self.encoder.load_state_dict(state_dict, strict=strict)

    def output_lengths(self, feat_lengths: Tensor) -> Tensor:
        return (feat_lengths - 1) // 2 + 1       # conv2: kernel 3, stride 2, padding 1

    def forward(self, feats: Tensor, feat_lengths: Tensor, hidden_layers: Sequence[int] = ()) -> EncoderOutput:
        self.check_inputs(feats, feat_lengths)
        if feats.shape[1] > self.max_frames:
            raise ValueError(f"Whisper takes at most {self.max_frames} mel frames (30 s); got {feats.shape[1]}: "
                             "split long audio upstream")
        layers = self.resolve_layers(hidden_layers)
        lengths = self.output_lengths(feat_lengths)
        t_out = (feats.shape[1] - 1) // 2 + 1
        if self.true_length:
            x, hidden = self._run_true_length(feats, feat_lengths, lengths, set(layers))
        else:
            x, hidden = self._run_padded(feats, feat_lengths, set(layers))
            x = x[:, :t_out]
            hidden = {i: h[:, :t_out] for i, h in hidden.items()}
        logits = self.ctc_head(x, lengths)
        return EncoderOutput(logits=logits, lengths=lengths, hidden=[hidden[i] for i in layers])

    def _run_layers(self, x: Tensor, attn_mask: Tensor | None, keep: set[int]) -> tuple[Tensor, dict[int, Tensor]]:
        # The loop of WhisperEncoder.forward (dropout, layerdrop, final LayerNorm), recording the states in `keep`.
        enc = self.encoder
        x = F.dropout(x, p=enc.dropout, training=self.training)
        hidden = {0: x} if 0 in keep else {}
        n = len(enc.layers)
        for i, layer in enumerate(enc.layers, start=1):
            if not (self.training and enc.layerdrop > 0.0 and torch.rand([]) < enc.layerdrop):
                x = layer(x, attn_mask)
            if i in keep and i < n:
                hidden[i] = x
        x = enc.layer_norm(x)
        if n in keep:
            hidden[n] = x
        return x, hidden

    def _run_padded(self, feats: Tensor, feat_lengths: Tensor, keep: set[int]) -> tuple[Tensor, dict[int, Tensor]]:
        # every row -> [M, 3000], frames past its length set to Whisper's silence value
        enc = self.encoder
        pad_value = whisper_pad_value(feats, feat_lengths)                          # [B]
        x = F.pad(feats, (0, 0, 0, self.max_frames - feats.shape[1]))               # [B, 3000, M]
        valid = length_mask(feat_lengths, self.max_frames).unsqueeze(-1)
        x = torch.where(valid, x, pad_value.view(-1, 1, 1).to(x.dtype)).transpose(1, 2)  # [B, M, 3000]
        x = F.gelu(enc.conv1(x))
        x = F.gelu(enc.conv2(x)).transpose(1, 2)                                    # [B, 1500, D]
        x = x + enc.embed_positions.weight
        return self._run_layers(x, None, keep)

    def _run_true_length(self, feats: Tensor, feat_lengths: Tensor, lengths: Tensor,
                         keep: set[int]) -> tuple[Tensor, dict[int, Tensor]]:
        enc = self.encoder
        fmask = length_mask(feat_lengths, feats.shape[1]).unsqueeze(1)             # [B, 1, F]
        x = feats.transpose(1, 2).masked_fill(~fmask, 0.0)                          # [B, M, F]
        # conv1 output past the length must be zero too: conv2 (kernel 3) reads one frame beyond odd lengths
        x = F.gelu(enc.conv1(x)).masked_fill(~fmask, 0.0)
        x = F.gelu(enc.conv2(x)).transpose(1, 2)                                    # [B, T, D]
        x = x + enc.embed_positions.weight[: x.shape[1]]
        mask = length_mask(lengths, x.shape[1])                                     # [B, T]
        attn_mask = create_bidirectional_mask(config=enc.config, inputs_embeds=x, attention_mask=mask)
        return self._run_layers(x, attn_mask, keep)

