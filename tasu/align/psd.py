"""PSD (posterior spike/blank compression) of real encoder posteriors, as in the reference TASU code.

Meaning (defined by `psd_reference`, a plain loop): for each row, over its valid frames,
    1. argmax per frame;
    2. each maximal run of consecutive frames with the same *non-blank* argmax becomes one frame = the mean of
       its probabilities (and of its features); frames whose argmax is blank stay one by one;
    3. every resulting frame whose (mean) blank probability is >= blank_threshold is dropped.
The argmax is taken on `probs` when given, else on `log_probs` (on their exp in the kernel-op path).

Output: dense `Posteriors` with `probs` [B, T', V] (the merged means), plus `log_probs` = log(merged mean
probs) when the input had `log_probs` (computed as a segment logsumexp - log(count) straight from the input
log-probs, so tiny probabilities do not underflow), `features` [B, T', D] merged the same way, and the new
`lengths`. Rows are right-padded with zeros; T' = max new length, at least 1 column. A row with no frame left
(length 0 in, or every frame dropped) gets length 0: consumers must handle empty speech.

`psd_compress` is the vectorised version: no per-frame Python loop; host syncs only for sizes and the input checks.
Without merged log-probs to produce (input without `log_probs`, or `log_probs=False`: the projectors read
probabilities only) it runs the `psd_compress` kernel op (`tasu.kernels.get_op`, chosen by `kernels.impl`), which
reads the [B, T] blank column first and touches the V-sized rows only of frames that can survive. With merged
log-probs requested it runs the segment path below (run starts -> cumsum -> segment ids -> index_add / bincount
and a segment log-sum-exp). Either way autograd flows through probs, log_probs and features, sums accumulate in
at least float32 and the output keeps the input dtype.
Sparse (simulated) input is accepted and densified first (O(B T V) memory).
"""

from __future__ import annotations

import torch

from tasu.kernels import get_op
from tasu.types import Posteriors


def _dense_input(post: Posteriors, blank_threshold: float) -> Posteriors:
    if not 0.0 < blank_threshold <= 1.0:
        raise ValueError(f"PSD: blank_threshold must be in (0, 1], got {blank_threshold}")
    if post.is_sparse:
        post = post.to_dense()
    ref = post.probs if post.probs is not None else post.log_probs
    if ref.dim() != 3 or ref.shape[-1] != post.vocab_size:
        raise ValueError(f"PSD: posteriors must be [B, T, V={post.vocab_size}], got {tuple(ref.shape)}")
    b, t = ref.shape[:2]
    if post.lengths.shape != (b,):
        raise ValueError(f"PSD: lengths must be [{b}], got {tuple(post.lengths.shape)}")
    if b and (int(post.lengths.min()) < 0 or int(post.lengths.max()) > t):
        raise ValueError(f"PSD: lengths must lie in [0, {t}], got {post.lengths.tolist()}")
    if post.features is not None and post.features.shape[:2] != (b, t):
        raise ValueError(f"PSD: features must be [{b}, {t}, D], got {tuple(post.features.shape)}")
    return post


def psd_compress(post: Posteriors, blank_threshold: float = 0.9, log_probs: bool = True) -> Posteriors:
    """Vectorised PSD (see the module docstring); equals `psd_reference` to float rounding. `log_probs=False`
    drops the merged log-probs (the output then has probs only) and always runs the kernel op."""
    post = _dense_input(post, blank_threshold)
    if post.log_probs is None or not log_probs:
        probs = post.probs if post.probs is not None else post.log_probs.exp()
        out_p, out_f, lengths = get_op("psd_compress")(probs, post.lengths, post.features, post.blank_id,
                                                       blank_threshold)
        return Posteriors(lengths=lengths.to(post.lengths.device), vocab_size=post.vocab_size, probs=out_p,
                          features=out_f, blank_id=post.blank_id)
    lp = post.log_probs
    probs = post.probs if post.probs is not None else lp.exp()
    B, T, V = probs.shape
    dev, blank = probs.device, post.blank_id
    acc = torch.promote_types(probs.dtype, torch.float32)

    # --- segments: [B, T] run starts over valid frames ---
    valid = post.frame_mask().to(dev)  # [B, T]
    am = (probs if post.probs is not None else lp).argmax(-1)  # [B, T]
    start = valid.clone()
    if T > 1:
        same_run = (am[:, 1:] == am[:, :-1]) & (am[:, 1:] != blank)  # continues the previous non-blank run
        start[:, 1:] &= ~same_run
    n_seg = start.sum(1)  # [B]
    seg_off = torch.cumsum(n_seg, 0) - n_seg  # [B] first global segment id of each row
    local = torch.cumsum(start.long(), 1) - 1  # [B, T] segment index within the row
    gid = (local + seg_off.unsqueeze(1))[valid]  # [N] global segment id per valid frame (row-major order)
    S = int(n_seg.sum())  # host sync: number of segments
    row = torch.repeat_interleave(torch.arange(B, device=dev), n_seg, output_size=S)  # [S]

    # --- per-segment means: [S, V] (and [S, D]) ---
    count = torch.bincount(gid, minlength=S).to(acc).unsqueeze(1)  # [S, 1]
    mean_p = probs.new_zeros((S, V), dtype=acc).index_add(0, gid, probs[valid].to(acc)) / count
    keep = mean_p[:, blank] < blank_threshold  # [S]

    # --- output positions of kept segments ---
    kept_row = torch.zeros(B, dtype=torch.long, device=dev).index_add(0, row, keep.long())  # [B] new lengths
    kept_off = torch.cumsum(kept_row, 0) - kept_row
    pos = torch.cumsum(keep.long(), 0) - 1 - kept_off[row]  # [S] column in the output row (if kept)
    t_out = max(int(kept_row.max()) if B else 0, 1)
    r_k, p_k = row[keep], pos[keep]

    def scatter_out(vals: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        out = vals.new_zeros((B, t_out, vals.shape[-1]), dtype=dtype)
        return out.index_put((r_k, p_k), vals[keep].to(dtype))

    out_probs = scatter_out(mean_p, probs.dtype)
    out_lp = None
    if lp is not None:
        # log mean p = logsumexp over the run - log(count); shift by the (detached) per-segment max
        lpv = lp[valid].to(acc)  # [N, V]
        seg_max = lpv.new_full((S, V), float("-inf")).scatter_reduce(
            0, gid.unsqueeze(1).expand(-1, V), lpv.detach(), reduce="amax", include_self=True)
        seg_max = torch.where(torch.isfinite(seg_max), seg_max, torch.zeros_like(seg_max))
        sum_exp = lpv.new_zeros((S, V)).index_add(0, gid, (lpv - seg_max[gid]).exp())
        out_lp = scatter_out(sum_exp.log() + seg_max - count.log(), lp.dtype)
    out_feat = None
    if post.features is not None:
        f = post.features
        mean_f = f.new_zeros((S, f.shape[-1]), dtype=acc).index_add(0, gid, f[valid].to(acc)) / count
        out_feat = scatter_out(mean_f, f.dtype)
    return Posteriors(lengths=kept_row.to(post.lengths.device), vocab_size=V, probs=out_probs, log_probs=out_lp,
                      features=out_feat, blank_id=blank)


def psd_reference(post: Posteriors, blank_threshold: float = 0.9) -> Posteriors:
    """Plain per-frame loop that defines PSD (slow; tests and documentation only)."""
    post = _dense_input(post, blank_threshold)
    lp = post.log_probs
    probs = post.probs if post.probs is not None else lp.exp()
    score = post.probs if post.probs is not None else lp
    B, T, V = probs.shape
    blank = post.blank_id
    rows: list[list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]] = []
    for b in range(B):
        groups: list[list[int]] = []  # frame indices of each merged frame
        prev = None
        for t in range(int(post.lengths[b])):
            a = int(score[b, t].argmax())
            if a != blank and a == prev:
                groups[-1].append(t)
            else:
                groups.append([t])
            prev = a
        out = []
        for g in groups:
            p = probs[b, g].mean(0)
            if float(p[blank].detach()) >= blank_threshold:
                continue
            lpm = torch.logsumexp(lp[b, g], 0) - torch.log(torch.tensor(float(len(g)))) if lp is not None else None
            fm = post.features[b, g].mean(0) if post.features is not None else None
            out.append((p, lpm, fm))
        rows.append(out)
    t_out = max([len(r) for r in rows] + [1])
    out_p = probs.new_zeros((B, t_out, V))
    out_lp = lp.new_zeros((B, t_out, V)) if lp is not None else None
    out_f = post.features.new_zeros((B, t_out, post.features.shape[-1])) if post.features is not None else None
    for b, r in enumerate(rows):
        for t, (p, lpm, fm) in enumerate(r):
            out_p[b, t] = p
            if out_lp is not None:
                out_lp[b, t] = lpm
            if out_f is not None:
                out_f[b, t] = fm
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    return Posteriors(lengths=lengths, vocab_size=V, probs=out_p, log_probs=out_lp, features=out_f, blank_id=blank)
