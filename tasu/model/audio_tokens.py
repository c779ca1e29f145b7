"""Audio wrapper tokens: `<|audio_bos|>` [speech frames] `<|audio_eos|>` around every speech segment.

The strings come from the config (`prompts.audio_bos` / `prompts.audio_eos`). Tokens the LLM tokenizer lacks are
added as special tokens (never split, dropped when decoding with skip_special_tokens), and the LLM's embedding
matrix grows by their rows, initialised to the mean of the existing rows (deterministic, and inside the LLM's
embedding distribution: LLaVA / LLaSO do the same for their [AUDIO_START] / [AUDIO_END]).

Training their embeddings does not need the whole LLM embedding matrix to be trainable: `AudioTokens` holds a
zero-initialised offset per wrapper token [n, H] that `SpeechLLM` adds to the embedding of those ids wherever
they appear in a prompt. It is its own freeze group (`audio_tokens`), so a stage trains the wrapper embeddings by
listing that group (e.g. stage 1: [projector, audio_tokens]) and freezes them by leaving it out.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from tasu.config.fields import ConfigError

log = logging.getLogger("tasu.model")


def add_audio_tokens(llm, tokenizer, tokens: list[str]) -> list[int]:
    """LLM ids of `tokens`, adding the missing ones to `tokenizer` as special tokens and growing `llm`'s input
    (and untied output) embeddings; the rows of added tokens start at the mean row. Modifies both in place."""
    if len(set(tokens)) != len(tokens):
        raise ConfigError(f"config key 'prompts.audio_bos' / 'prompts.audio_eos': must differ, got {tokens}")
    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
        ids = [tokenizer.convert_tokens_to_ids(t) for t in missing]
        rows = llm.get_input_embeddings().weight.shape[0]
        if max(ids) >= rows:
            # mean_resizing=False: the new rows are set below, deterministically (no random draw)
            llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            new = torch.tensor(ids)
            keep = torch.ones(llm.get_input_embeddings().weight.shape[0], dtype=torch.bool)
            keep[new] = False
            for emb in {id(m): m for m in (llm.get_input_embeddings(), llm.get_output_embeddings())
                        if m is not None}.values():
                w = emb.weight                                               # [V, H] (output: [V, H] too)
                w[new] = w[keep[: w.shape[0]]].float().mean(dim=0).to(w.dtype)
        log.info("added audio wrapper tokens %s to the LLM tokenizer (ids %s)", missing, ids)
    out = []
    for t in tokens:
        ids = tokenizer.encode(t, add_special_tokens=False)
        if len(ids) != 1:
            raise ConfigError(f"config key 'prompts.audio_bos' / 'prompts.audio_eos': {t!r} is not one token of "
                              f"the LLM tokenizer (encodes to {ids})")
        out.append(ids[0])
    return out


class AudioTokens(nn.Module):
    """Trainable offsets `delta` [n, H] (zeros at start) added to the input embedding of the wrapper token ids."""

    def __init__(self, token_ids: list[int], hidden: int):
        super().__init__()
        self.register_buffer("ids", torch.tensor(token_ids, dtype=torch.long), persistent=False)   # [n]
        self.delta = nn.Parameter(torch.zeros(len(token_ids), hidden))

    def forward(self, ids: Tensor, emb: Tensor) -> Tensor:
        """ids [L] and their LLM embeddings emb [L, H] -> emb with delta[j] added where ids == token j."""
        match = (ids.unsqueeze(-1) == self.ids.to(ids.device)).to(emb.dtype)       # [L, n]
        return emb + match @ self.delta.to(emb.dtype)
