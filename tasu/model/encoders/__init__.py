"""CTC speech encoders: feats [B, F, M] -> CTC logits [B, T, V] (+ hidden states) -> `Posteriors`.

base.py     `CTCEncoder` interface, `EncoderOutput`
tiny.py     small transformer encoder for tests / toy runs
whisper.py  transformers' WhisperEncoder + CTC head (true-length or 30 s padded)
heads.py    CTC heads: linear | mlp | bigru | conformer
build.py    `build_encoder(EncoderConfig, vocab_size)`
"""

from tasu.model.encoders.base import CTCEncoder, EncoderOutput
from tasu.model.encoders.build import build_encoder

__all__ = ["CTCEncoder", "EncoderOutput", "build_encoder"]
