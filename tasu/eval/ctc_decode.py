"""CTC decoding of a batch of frame log-probabilities: greedy (best path) and prefix beam search.

Inputs everywhere: ``log_probs`` [B, T, V] (log-softmax over V classes, blank included) and ``lengths`` [B]
(valid frames per row; frames past a row's length are ignored). Outputs are label ids without blanks.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def _check(log_probs: torch.Tensor, lengths: torch.Tensor, blank_id: int) -> torch.Tensor:
    """Validate shapes and return lengths as a CPU long tensor [B]."""
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be [B, T, V], got shape {tuple(log_probs.shape)}")
    b, t, v = log_probs.shape
    lengths = torch.as_tensor(lengths).to("cpu", torch.long).reshape(-1)
    if lengths.numel() != b:
        raise ValueError(f"lengths has {lengths.numel()} entries for a batch of {b}")
    if b and (lengths.min() < 0 or lengths.max() > t):
        raise ValueError(f"lengths must lie in [0, {t}] (the frame count), got {lengths.tolist()}")
    if not 0 <= blank_id < v:
        raise ValueError(f"blank_id {blank_id} is outside the vocabulary [0, {v})")
    return lengths


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, blank_id: int = 0) -> list[list[int]]:
    """Best path: per-frame argmax, merge repeats, drop blanks. One vectorised pass over [B, T]."""
    lengths = _check(log_probs, lengths, blank_id)
    best = log_probs.argmax(dim=-1).cpu()  # [B, T]
    b, t = best.shape
    prev = torch.cat([torch.full((b, 1), -1, dtype=best.dtype), best[:, :-1]], dim=1)  # [B, T], -1 before frame 0
    valid = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)  # [B, T]
    keep = (best != prev) & (best != blank_id) & valid  # first frame of each non-blank run
    return [row[mask].tolist() for row, mask in zip(best, keep)]


def prefix_beam_search(
    log_probs: torch.Tensor, lengths: torch.Tensor, beam: int = 8, blank_id: int = 0, prune_top_k: int | None = None
) -> list[list[int]]:
    """CTC prefix beam search: the best label sequence per row (probability summed over its alignments)."""
    lengths = _check(log_probs, lengths, blank_id)
    return [prefix_beam_search_nbest(log_probs[i, : int(lengths[i])], beam, blank_id, prune_top_k)[0][0]
            for i in range(log_probs.shape[0])]


def prefix_beam_search_nbest(
    log_probs: torch.Tensor, beam: int = 8, blank_id: int = 0, prune_top_k: int | None = None
) -> list[tuple[list[int], float]]:
    """Prefix beam search over one utterance ``log_probs`` [T, V] -> up to `beam` (labels, log P(labels)),
    best first, where log P sums over all alignments of the labels that the search kept.

    Each hypothesis carries two scores (log space): ``pb`` (alignments ending in blank) and ``pnb``
    (ending in its last label), so that "a a" (needs a blank between) and "a" (repeat merged) are told apart.
    A step scores every (prefix, next label) extension as one [N, K] tensor (N hypotheses, K candidate
    labels: all non-blank, or the frame's `prune_top_k` best), then keeps the `beam` best of the N
    unchanged prefixes and the N*K extensions.
    """
    if log_probs.dim() != 2:
        raise ValueError(f"log_probs must be [T, V] for one utterance, got shape {tuple(log_probs.shape)}")
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if prune_top_k is not None and prune_top_k < 1:
        raise ValueError(f"prune_top_k must be >= 1 or None, got {prune_top_k}")
    v = log_probs.shape[1]
    if not 0 <= blank_id < v:
        raise ValueError(f"blank_id {blank_id} is outside the vocabulary [0, {v})")
    lp = log_probs.detach().to("cpu", torch.float64)
    labels = torch.tensor([c for c in range(v) if c != blank_id], dtype=torch.long)  # [V-1]

    prefixes: list[tuple[int, ...]] = [()]
    pb = torch.tensor([0.0], dtype=torch.float64)  # [N]
    pnb = torch.tensor([NEG_INF], dtype=torch.float64)  # [N]
    for frame in lp:  # frame [V]
        cand = labels
        if prune_top_k is not None and prune_top_k < labels.numel():
            cand = labels[frame[labels].topk(prune_top_k).indices]  # [K]
        col = torch.full((v,), -1, dtype=torch.long)
        col[cand] = torch.arange(cand.numel())  # label -> its column in `ext`, -1 when pruned
        total = torch.logaddexp(pb, pnb)  # [N]
        last = torch.tensor([p[-1] if p else -1 for p in prefixes], dtype=torch.long)  # [N], -1: empty prefix
        has_last = last >= 0
        last_col = torch.where(has_last, col[last.clamp(min=0)], -1)  # [N]
        # unchanged prefix: a blank frame, or the last label repeated (merged into it)
        stay_b = total + frame[blank_id]
        stay_nb = torch.where(has_last, pnb + frame[last.clamp(min=0)], torch.full_like(pnb, NEG_INF))
        # extensions by c: from any alignment, except that repeating the last label needs a blank first
        ext = total.unsqueeze(1) + frame[cand].unsqueeze(0)  # [N, K]
        rep = (last_col >= 0).nonzero().flatten()
        ext[rep, last_col[rep]] = pb[rep] + frame[last[rep]]
        # an extension that spells a prefix already in the beam is the same hypothesis: merge it there
        index = {p: i for i, p in enumerate(prefixes)}
        for k, p in enumerate(prefixes):
            i = index.get(p[:-1]) if p else None
            j = int(last_col[k])
            if i is not None and j >= 0:
                stay_nb[k] = torch.logaddexp(stay_nb[k], ext[i, j])
                ext[i, j] = NEG_INF
        scores = torch.cat([torch.logaddexp(stay_b, stay_nb), ext.flatten()])  # [N + N*K]
        n_keep = min(beam, int(torch.isfinite(scores).sum()))
        if n_keep == 0:  # every path has probability 0 (a frame of -inf everywhere)
            return [([], NEG_INF)]
        top = scores.topk(n_keep).indices.tolist()
        n, k = len(prefixes), cand.numel()
        new_prefixes, new_pb, new_pnb = [], [], []
        for s in top:
            if s < n:
                new_prefixes.append(prefixes[s])
                new_pb.append(stay_b[s])
                new_pnb.append(stay_nb[s])
            else:
                i, j = divmod(s - n, k)
                new_prefixes.append(prefixes[i] + (int(cand[j]),))
                new_pb.append(torch.tensor(NEG_INF, dtype=torch.float64))
                new_pnb.append(ext[i, j])
        prefixes, pb, pnb = new_prefixes, torch.stack(new_pb), torch.stack(new_pnb)
    final = torch.logaddexp(pb, pnb)
    order = final.argsort(descending=True).tolist()
    return [(list(prefixes[i]), float(final[i])) for i in order]
