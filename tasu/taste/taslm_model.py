"""TASLM: a causal LLM (+ peft LoRA) over the joint text/speech sequence, with per-codebook speech heads.

One row, L text tokens t_i, their TASTE codes c_i [N], delay d = taste.delay (d >= 1: the text leads):

    position p   0     1     ...   L        L + 1   ...   L + d
    text_p       bos   t0    ...   t_{L-1}  eos     pad
    speech_p     --    ...   c0 at p = 1 + d, ..., c_{L-1} at p = L + d          (-- = PAD_CODE)

The input at p is E_text(text_p) + E_speech(speech_p); the hidden state at p predicts text_{p+1} with the LLM's
own head and speech_{p+1} with N per-codebook heads, so the speech of token i is predicted having read the text
up to t_{i+d-1}. S = 1 + max(L + 1, L + d) positions per row, right-padded to the batch maximum.
Loss: taste.text_loss_weight x text CE + taste.speech_loss_weight x mean over codebooks of the speech CE.

Selection scoring (likelihood-based, for `next_speech_selection_accuracy`):
  - `speech_selection_scores`: the same text with its own codes vs C - 1 copies whose code rows are shuffled over
    the token positions: does the LM know which speech goes with which text?
  - `continuation_scores`: the first half of an utterance (text + speech) followed by its own second half vs the
    second halves of C - 1 other utterances, scored by mean log-likelihood per continuation target (next-speech
    selection as in spoken StoryCloze-style evaluations).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tasu.taste.taslm import PAD_CODE, SpeechEmbedding, SpeechHeads, TaslmLoss, delay_codes, taslm_loss

IGNORE = -100


class TaslmModel(nn.Module):
    def __init__(self, llm: nn.Module, num_codebooks: int, codebook_size: int, delay: int, bos_id: int, eos_id: int,
                 pad_id: int, w_text: float = 1.0, w_speech: float = 1.0):
        super().__init__()
        if delay < 1:
            raise ValueError(f"TASLM: taste.delay must be >= 1 (the speech of a token follows its text), got {delay}")
        self.llm = llm
        hidden = llm.config.hidden_size
        self.speech_embed = SpeechEmbedding(hidden, num_codebooks, codebook_size)
        self.speech_heads = SpeechHeads(hidden, num_codebooks, codebook_size)
        # speech embeddings start at the scale of the LLM's own embeddings, so the first steps see a text LM
        std = float(getattr(llm.config, "initializer_range", 0.02))
        for table in self.speech_embed.tables:
            nn.init.normal_(table.weight, std=std)
        self.num_codebooks, self.delay = num_codebooks, delay
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.w_text, self.w_speech = w_text, w_speech

    def _base(self):
        return self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm

    def sequences(self, text_ids: Tensor, text_lengths: Tensor, codes: Tensor) -> dict[str, Tensor]:
        """The joint rows (see the module doc): inputs text [B, S-1], speech [B, S-1, N], attention [B, S-1];
        targets text [B, S-1] (IGNORE = none) and speech [B, S-1, N] (PAD_CODE = none)."""
        b, seq = text_ids.shape
        if codes.shape[:2] != (b, seq) or codes.shape[2] != self.num_codebooks:
            raise ValueError(f"TASLM: codes must be [B={b}, L={seq}, N={self.num_codebooks}], got "
                             f"{tuple(codes.shape)}")
        d, dev = self.delay, text_ids.device
        s = 1 + max(seq + 1, seq + d)
        pos = torch.arange(s, device=dev).unsqueeze(0)                                    # [1, S]
        n = text_lengths.to(dev).unsqueeze(1)                                              # [B, 1]
        valid_tok = torch.arange(seq, device=dev).unsqueeze(0) < n                        # [B, L]
        text = torch.full((b, s), self.pad_id, dtype=torch.long, device=dev)
        text[:, 0] = self.bos_id
        text[:, 1:seq + 1] = text_ids.masked_fill(~valid_tok, self.pad_id)
        text = torch.where(pos == n + 1, torch.full_like(text, self.eos_id), text)
        speech = torch.full((b, s, self.num_codebooks), PAD_CODE, dtype=torch.long, device=dev)
        speech[:, 1:1 + seq + d] = delay_codes(codes, n.squeeze(1), d)                   # codes d steps after text
        row_len = 1 + torch.maximum(n + 1, n + d)                                          # [B, 1]
        text_tgt = text.masked_fill(pos > n + 1, IGNORE)
        return {"text": text[:, :-1], "speech": speech[:, :-1], "attention": (pos < row_len)[:, :-1].long(),
                "text_targets": text_tgt[:, 1:], "speech_targets": speech[:, 1:]}

    def logits(self, text: Tensor, speech: Tensor, attention: Tensor) -> tuple[Tensor, list[Tensor]]:
        """text logits [B, S, V] and N speech logits [B, S, K] for input rows text [B, S], speech [B, S, N]."""
        base = self._base()
        emb = base.get_input_embeddings()(text)
        emb = emb + self.speech_embed(speech).to(emb.dtype)                               # [B, S, H]
        h = base.get_decoder()(inputs_embeds=emb, attention_mask=attention).last_hidden_state
        return base.get_output_embeddings()(h), self.speech_heads(h)

    def forward(self, text_ids: Tensor, text_lengths: Tensor, codes: Tensor) -> TaslmLoss:
        """text_ids [B, L], text_lengths [B], codes [B, L, N] (PAD_CODE on padding) -> weighted joint loss."""
        q = self.sequences(text_ids, text_lengths, codes)
        text_logits, speech_logits = self.logits(q["text"], q["speech"], q["attention"])
        return taslm_loss(text_logits, q["text_targets"], speech_logits, q["speech_targets"], self.w_text,
                          self.w_speech, text_ignore_index=IGNORE)

    @torch.no_grad()
    def log_likelihoods(self, text_ids: Tensor, text_lengths: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
        """Per target position: text log p [B, S-1] and speech log p summed over codebooks [B, S-1] (0 where there
        is no target)."""
        q = self.sequences(text_ids, text_lengths, codes)
        text_logits, speech_logits = self.logits(q["text"], q["speech"], q["attention"])
        tt = q["text_targets"]
        text_ll = _gather_ll(text_logits, tt, tt != IGNORE)
        speech_ll = sum(_gather_ll(lg, q["speech_targets"][..., n], q["speech_targets"][..., n] >= 0)
                        for n, lg in enumerate(speech_logits))
        return text_ll, speech_ll


def _gather_ll(logits: Tensor, targets: Tensor, keep: Tensor) -> Tensor:
    lp = F.log_softmax(logits.float(), dim=-1).gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return lp * keep


def _pad_rows(rows: list[Tensor], fill: int) -> Tensor:
    width = max(r.shape[0] for r in rows)
    out = torch.full((len(rows), width, *rows[0].shape[1:]), fill, dtype=rows[0].dtype, device=rows[0].device)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


@torch.no_grad()
def speech_selection_scores(model: TaslmModel, text_ids: Tensor, text_lengths: Tensor, codes: Tensor,
                            candidates: int, generator: torch.Generator) -> Tensor:
    """scores [B, C] = joint log-likelihood of the text with candidate codes; candidate 0 holds the true codes,
    the others the code rows shuffled over the row's valid token positions."""
    cols = [codes]
    for _ in range(candidates - 1):
        shuffled = codes.clone()
        for b, n in enumerate(text_lengths.tolist()):
            perm = torch.randperm(n, generator=generator).to(codes.device)
            shuffled[b, :n] = codes[b, perm]
        cols.append(shuffled)
    b = text_ids.shape[0]
    all_codes = torch.cat(cols)                                                            # [C * B, L, N]
    text_ll, speech_ll = model.log_likelihoods(text_ids.repeat(candidates, 1), text_lengths.repeat(candidates),
                                               all_codes)
    return (text_ll.sum(1) + speech_ll.sum(1)).view(candidates, b).t()


@torch.no_grad()
def continuation_scores(model: TaslmModel, text_ids: Tensor, text_lengths: Tensor, codes: Tensor,
                        candidates: int) -> tuple[Tensor, Tensor]:
    """(scores [B', C], keep [B] bool): rows with >= 2 tokens form items; item i's context is the first
    ceil(L_i / 2) tokens (text + codes) of row i, candidate 0 its own rest, candidate c the rest of the c-th next
    item (cyclically). Score = mean log-likelihood over the continuation's targets (its text tokens + eos, and
    its speech codes). Needs at least `candidates` items."""
    keep = text_lengths >= 2
    idx = keep.nonzero().squeeze(1).tolist()
    if len(idx) < candidates:
        raise ValueError(f"continuation selection: {len(idx)} utterances with >= 2 tokens, need >= {candidates} "
                         "(taste.selection_candidates)")
    d = model.delay
    texts, code_rows, lengths, masks_t, masks_s = [], [], [], [], []
    for j, i in enumerate(idx):
        n_i = int(text_lengths[i])
        k = (n_i + 1) // 2
        for c in range(candidates):
            o = idx[(j + c) % len(idx)]
            n_o = int(text_lengths[o])
            ko = (n_o + 1) // 2
            t = torch.cat([text_ids[i, :k], text_ids[o, ko:n_o]])
            texts.append(t)
            code_rows.append(torch.cat([codes[i, :k], codes[o, ko:n_o]]))
            n = t.shape[0]
            lengths.append(n)
            masks_t.append((k, n))                   # text target indices k .. n (n = eos)
            masks_s.append((d + k, d + n - 1))       # speech target indices of the continuation's codes
    text_ll, speech_ll = model.log_likelihoods(_pad_rows(texts, model.pad_id), torch.tensor(lengths,
                                               device=text_ids.device), _pad_rows(code_rows, PAD_CODE))
    scores = []
    for r, ((a, e), (sa, se)) in enumerate(zip(masks_t, masks_s)):
        n_tgt = (e - a + 1) + (se - sa + 1) * model.num_codebooks
        scores.append((text_ll[r, a:e + 1].sum() + speech_ll[r, sa:se + 1].sum()) / n_tgt)
    return torch.stack(scores).view(len(idx), candidates), keep
