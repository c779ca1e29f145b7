"""CTCModel: a CTC speech encoder trained (or evaluated) on its own, with no LLM: the `ctc` stage mode.

It keeps SpeechLLM's training contract, `forward(batch, mode) -> (loss, n)`, so the one recipe trains both, and
SpeechLLM's parameter layout (`encoder.encoder.*` body, `encoder.ctc_head.*` head), so the weights a ctc stage
trains carry into a later posterior / lego / features stage unchanged, and freezing groups (`encoder`,
`ctc_head`) mean the same thing in both.

    feats [B, F, M] -> encoder -> logits [B, T, V] -> CTC loss against ctc_targets (unit ids, no blanks)

The CTC vocabulary is `ctc_tokenizer` (blank id 0): the same object the CPS simulator of later stages uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tasu.kernels import get_op
from tasu.types import Posteriors, SpeechBatch


def ctc_loss(logits: torch.Tensor, lengths: torch.Tensor, targets: Sequence[Sequence[int]],
             blank_id: int = 0) -> torch.Tensor:
    """Mean over the batch of each row's CTC loss divided by its target length (torch's reduction="mean") of raw
    CTC logits [B, T, V] (any float dtype; lengths [B]) against unit-id targets, through the `ctc_loss` kernel op
    (`kernels.impl`). The op log-softmaxes in fp32 block by block: no fp32 [B, T, V] log-prob tensor (nor its
    gradient) is ever built, which at a 152k LLM vocabulary is 9.7 GB for B = 16, T = 1000. Rows whose targets
    cannot be aligned in T frames add 0 (zero_infinity), so one too-short clip cannot turn the step into inf."""
    if len(targets) != logits.shape[0] or any(len(t) == 0 for t in targets):
        raise ValueError(f"ctc_loss needs one non-empty target per row: {logits.shape[0]} rows, target lengths "
                         f"{[len(t) for t in targets][:8]}")
    dev = lengths.device
    flat = torch.tensor([u for t in targets for u in t], dtype=torch.long, device=dev)
    tlen = torch.tensor([len(t) for t in targets], dtype=torch.long, device=dev)
    return get_op("ctc_loss")(logits, flat, lengths, tlen, blank_id, "mean", True)


class CTCModel(nn.Module):
    """`encoder` (a CTCEncoder: body `encoder.encoder`, head `encoder.ctc_head`) + its CTC tokenizer."""

    def __init__(self, encoder: nn.Module, ctc_tokenizer):
        super().__init__()
        if encoder is None:
            raise ValueError("a ctc stage needs an encoder (model.encoder.type is 'none')")
        if encoder.vocab_size != ctc_tokenizer.vocab_size:
            raise ValueError(f"CTC head predicts {encoder.vocab_size} classes but the CTC tokenizer has "
                             f"{ctc_tokenizer.vocab_size} (blank included)")
        self.encoder = encoder
        self.ctc_tokenizer = ctc_tokenizer
        # the recipe sets this for ZeRO-3 stages of SpeechLLM; every ctc batch runs the same graph, so it is unused
        self.uniform_graph = False

    def encode(self, batch: SpeechBatch):
        """The encoder's output (raw logits [B, T, V], lengths [B]) for an audio batch."""
        if batch.feats is None:
            raise ValueError(f"ctc mode needs acoustic features; got a text-only batch (keys {batch.keys[:3]})")
        p = next(self.encoder.parameters())
        return self.encoder(batch.feats.to(p.dtype), batch.feat_lengths)

    def posteriors(self, batch: SpeechBatch) -> Posteriors:
        """Dense CTC posteriors [B, T, V] of an audio batch (log-softmax in fp32)."""
        return self.encoder.posteriors_of(self.encode(batch))

    def forward(self, batch: SpeechBatch, mode: str = "ctc") -> tuple[torch.Tensor, int]:
        """Mean CTC loss per target unit, and the number of target units in the batch."""
        if mode != "ctc":
            raise ValueError(f"CTCModel trains in ctc mode only, got mode '{mode}' (text-only data in a ctc stage?)")
        if batch.ctc_targets is None:
            raise ValueError(f"ctc mode needs ctc_targets (a GT transcript per sample); batch keys {batch.keys[:3]}")
        out = self.encode(batch)                     # raw logits: the ctc_loss op log-softmaxes them in fp32
        return ctc_loss(out.logits, out.lengths, batch.ctc_targets), sum(len(t) for t in batch.ctc_targets)

    @torch.no_grad()
    def decode(self, batch: SpeechBatch, beam: int = 1, prune_top_k: int | None = None) -> list[str]:
        """Transcripts: greedy (beam 1) or CTC prefix beam search, mapped to text by the CTC tokenizer."""
        from tasu.eval.ctc_decode import greedy_decode, prefix_beam_search

        post = self.posteriors(batch)
        if beam == 1:
            ids = greedy_decode(post.log_probs, post.lengths, post.blank_id)
        else:
            ids = prefix_beam_search(post.log_probs, post.lengths, beam, post.blank_id, prune_top_k)
        return [self.ctc_tokenizer.decode(row) for row in ids]


def ctc_only(cfg) -> bool:
    """True when every stage of the config is a ctc stage: the run's model is a CTCModel (no LLM is built)."""
    return all(s.mode == "ctc" for s in cfg.stages)
