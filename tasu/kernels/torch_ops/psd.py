"""`psd_compress`: batched PSD of [B, T, V] posteriors (and [B, T, D] features) without a per-frame loop.

Meaning (`tasu.align.psd.psd_reference`, wrapped here as the reference): per row, over its valid frames, take
the argmax; each maximal run of consecutive frames with the same non-blank argmax becomes one frame (the mean of
its probabilities and features); blank-argmax frames stay one by one; frames whose (mean) blank probability is
>= blank_threshold are dropped. Output rows are right-padded with zeros to T' = max(max new length, 1).

Signature shared by every implementation:
    psd_compress(probs [B, T, V], lengths [B], features [B, T, D] | None, blank_id, blank_threshold)
        -> (probs [B, T', V], features [B, T', D] | None, lengths [B] long)

Probabilities are posteriors: every valid frame sums to 1 (tasu.types.Posteriors; +- 0.2 is tolerated).

The vectorised path reads the [B, T] blank column first: a frame whose blank probability exceeds SURE_BLANK (0.6)
has the blank as its argmax, so V-sized rows are read for the argmax only for the other valid frames (on real CTC
posteriors a small minority), block by block through a cached buffer. It then plans on [B, T]-sized tensors (run
starts, segment ids, kept slots) and moves data with row gathers that write every output element once: per batch
row one `index_select` of its kept segments' first frames straight into its slots and one fill of its padding,
then one gather + `index_add` for the frames of multi-frame segments (accumulated in >= fp32). No [B, T, V]
temporary. Backward is the matching gather (each kept frame receives grad / run length). Host syncs: a few sizes,
none per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SURE_BLANK = 0.6              # blank probability above which a frame's argmax is the blank (see plan_argmax)
_ARGMAX_BLOCK_BYTES = 1 << 20  # rows gathered per argmax block on CPU (kept in L2)


def check_psd_inputs(probs: torch.Tensor, lengths: torch.Tensor, features: torch.Tensor | None, blank_id: int,
                     blank_threshold: float) -> None:
    if probs.dim() != 3 or not probs.is_floating_point():
        raise ValueError(f"psd_compress: probs must be a float [B, T, V] tensor, got {tuple(probs.shape)} "
                         f"{probs.dtype}")
    b, t, v = probs.shape
    if lengths.shape != (b,) or lengths.is_floating_point():
        raise ValueError(f"psd_compress: lengths must be an integer [{b}] tensor, got {tuple(lengths.shape)} "
                         f"{lengths.dtype}")
    if features is not None and (features.dim() != 3 or features.shape[:2] != (b, t)):
        raise ValueError(f"psd_compress: features must be [{b}, {t}, D], got {tuple(features.shape)}")
    if not 0 <= blank_id < v:
        raise ValueError(f"psd_compress: blank_id {blank_id} is outside the vocabulary [0, {v})")
    if not 0.0 < blank_threshold <= 1.0:
        raise ValueError(f"psd_compress: blank_threshold must be in (0, 1], got {blank_threshold}")
    if b and (int(lengths.min()) < 0 or int(lengths.max()) > t):
        raise ValueError(f"psd_compress: lengths must lie in [0, {t}], got {lengths.tolist()}")


def psd_compress_reference(probs: torch.Tensor, lengths: torch.Tensor, features: torch.Tensor | None = None,
                           blank_id: int = 0, blank_threshold: float = 0.9):
    """The per-frame loop of tasu.align.psd (the definition of PSD)."""
    check_psd_inputs(probs, lengths, features, blank_id, blank_threshold)
    from tasu.align.psd import psd_reference  # lazy: tasu.align may itself dispatch to tasu.kernels
    from tasu.types import Posteriors

    out = psd_reference(Posteriors(lengths=lengths, vocab_size=probs.shape[-1], probs=probs, features=features,
                                   blank_id=blank_id), blank_threshold)
    return out.probs, out.features, out.lengths.to(lengths.device)


def frame_argmax(probs: torch.Tensor) -> torch.Tensor:
    """[B, T] argmax over V (first maximum). On CPU numpy's argmax is ~4x faster than torch's for long rows."""
    if probs.device.type == "cpu" and probs.dtype in (torch.float32, torch.float64) and probs.is_contiguous():
        return torch.from_numpy(probs.detach().numpy().argmax(-1)).long()
    return probs.argmax(-1)


def rows_argmax(rows: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """[K] argmax (first maximum) of rows[idx] for rows [N, V], without an [K, V] copy: blocks of rows are gathered
    into one reused buffer that stays in cache (CPU: ~1 MiB; accelerators: 64 MiB blocks)."""
    rows = rows.detach()
    n, v = rows.shape
    out = torch.empty(idx.numel(), dtype=torch.long, device=rows.device)
    budget = _ARGMAX_BLOCK_BYTES if rows.device.type == "cpu" else 64 << 20
    per = max(1, budget // max(1, v * rows.element_size()))
    buf = torch.empty(min(per, idx.numel()), v, dtype=rows.dtype, device=rows.device)
    for start in range(0, idx.numel(), per):
        sel = idx[start:start + per]
        blk = buf[:sel.numel()]
        torch.index_select(rows, 0, sel, out=blk)
        out[start:start + sel.numel()] = frame_argmax(blk.unsqueeze(0))[0]
    return out


def plan_argmax(probs: torch.Tensor, blank_prob: torch.Tensor, valid: torch.Tensor, blank_id: int) -> torch.Tensor:
    """[B, T] per-frame argmax where PSD needs it, reading a V-sized row only when the blank column cannot decide.

    A frame whose blank probability exceeds SURE_BLANK (0.6) has the blank as its argmax: its row sums to 1, so
    every other entry is below 1 - 0.6 (the margin tolerates rows that sum to 1 +- 0.2, e.g. after bf16 rounding).
    Real CTC posteriors are mostly such frames, so only the rest (and only valid frames) are read. Frames that are
    not read get blank_id, which is what PSD's plan needs from them (they break runs, stay one by one)."""
    b, t, v = probs.shape
    am = torch.full((b, t), blank_id, dtype=torch.long, device=probs.device)
    need = (valid & ~(blank_prob > SURE_BLANK)).reshape(-1).nonzero().squeeze(1)           # [K]
    if need.numel():
        am.view(-1).index_copy_(0, need, rows_argmax(probs.reshape(b * t, v), need))
    return am


def acc_threshold(threshold: float, dtype: torch.dtype) -> float:
    """The smallest value of `dtype` that is >= threshold: for x in dtype, x < result <=> float(x) < threshold."""
    t = torch.tensor(threshold, dtype=dtype)
    if float(t) < threshold:
        t = torch.nextafter(t, torch.tensor(float("inf"), dtype=dtype))
    return float(t)


@dataclass
class PSDPlan:
    """Where every kept output frame comes from. S segments, K kept, M kept multi-frame, F their frames."""

    t_out: int                  # T'
    lengths: torch.Tensor       # [B] kept frames per row
    src_first: torch.Tensor     # [B*T'] flat input frame copied to each output slot (0 for pad slots)
    slot_count: torch.Tensor    # [B*T'] run length merged into each output slot (0 for pad slots)
    multi_dst: torch.Tensor     # [M] output slot of each kept multi-frame segment
    multi_count: torch.Tensor   # [M] its run length
    multi_frames: torch.Tensor  # [F] flat input frames of those segments
    multi_local: torch.Tensor   # [F] index in [0, M) of each such frame's segment
    kept_frames: torch.Tensor   # [Fk] flat input frames that reach the output (backward)
    kept_dst: torch.Tensor      # [Fk] their output slot
    kept_count: torch.Tensor    # [Fk] their run length


def valid_frames(lengths: torch.Tensor, t: int, device: torch.device) -> torch.Tensor:
    """[B, T] bool, True on frames inside each row's length."""
    return torch.arange(t, device=device).unsqueeze(0) < lengths.to(device).unsqueeze(1)


def plan_psd(argmax: torch.Tensor, blank_prob: torch.Tensor, lengths: torch.Tensor, blank_id: int,
             blank_threshold: float, prob_dtype: torch.dtype) -> PSDPlan:
    """Segments and output slots from the [B, T] argmax and blank probabilities (small tensors only)."""
    b, t = argmax.shape
    dev = argmax.device
    valid = valid_frames(lengths, t, dev)                                                        # [B, T]
    start = valid.clone()
    if t > 1:
        start[:, 1:] &= ~((argmax[:, 1:] == argmax[:, :-1]) & (argmax[:, 1:] != blank_id))  # run continues
    start_f, valid_f = start.reshape(-1), valid.reshape(-1)
    frames = valid_f.nonzero().squeeze(1)                                                        # [Nv]
    seg_of_frame = (torch.cumsum(start_f, 0) - 1).index_select(0, frames)                       # [Nv]
    first = start_f.nonzero().squeeze(1)                                                         # [S]
    n_seg = first.numel()
    count = torch.bincount(seg_of_frame, minlength=n_seg)                                        # [S]
    acc = torch.promote_types(prob_dtype, torch.float32)
    blank_sum = torch.zeros(n_seg, dtype=acc, device=dev).index_add_(
        0, seg_of_frame, blank_prob.reshape(-1).index_select(0, frames).to(acc))
    # compare as the reference does: the mean rounded to the probabilities' dtype, against the threshold as a
    # Python float (`acc_threshold` makes that exact in `acc`)
    keep = (blank_sum / count).to(prob_dtype).to(acc) < acc_threshold(blank_threshold, acc)       # [S]
    row = torch.div(first, t, rounding_mode="floor")                                             # [S]
    lengths_out = torch.zeros(b, dtype=torch.long, device=dev).index_add_(0, row, keep.long())
    t_out = max(int(lengths_out.max()) if b else 0, 1)
    row_off = torch.cumsum(lengths_out, 0) - lengths_out                                         # [B]
    pos = torch.cumsum(keep.long(), 0) - 1 - row_off.index_select(0, row)                        # [S]
    dst = row * t_out + pos                                                                      # [S] (kept only)
    kept_idx = keep.nonzero().squeeze(1)                                                         # [K]
    src_first = torch.zeros(b * t_out, dtype=torch.long, device=dev)
    src_first.index_copy_(0, dst.index_select(0, kept_idx), first.index_select(0, kept_idx))
    slot_count = torch.zeros(b * t_out, dtype=torch.long, device=dev)
    slot_count.index_copy_(0, dst.index_select(0, kept_idx), count.index_select(0, kept_idx))
    multi = keep & (count > 1)                                                                   # [S]
    multi_idx = multi.nonzero().squeeze(1)                                                       # [M]
    multi_rank = torch.cumsum(multi.long(), 0) - 1                                               # [S]
    frame_multi = multi.index_select(0, seg_of_frame)                                            # [Nv]
    frame_kept = keep.index_select(0, seg_of_frame)
    kept_seg = seg_of_frame[frame_kept]
    return PSDPlan(
        t_out=t_out, lengths=lengths_out, src_first=src_first, slot_count=slot_count,
        multi_dst=dst.index_select(0, multi_idx), multi_count=count.index_select(0, multi_idx),
        multi_frames=frames[frame_multi], multi_local=multi_rank.index_select(0, seg_of_frame[frame_multi]),
        kept_frames=frames[frame_kept], kept_dst=dst.index_select(0, kept_seg),
        kept_count=count.index_select(0, kept_seg))


def merge_rows(x: torch.Tensor, plan: PSDPlan) -> torch.Tensor:
    """[B, T, C] -> [B, T', C]: per kept segment the mean of its frames, zeros in padding slots.

    Every output element is written once: per batch row, one gather of its kept segments' first frames straight
    into the row's slots [0, n) and one fill of its padding (n = kept frames; a loop over B, not over frames);
    then the multi-frame segments' means overwrite their slots."""
    b, t, c = x.shape
    if b * t == 0:
        return x.new_zeros(b, plan.t_out, c)
    flat = x.reshape(b * t, c)
    out = torch.empty(b, plan.t_out, c, dtype=x.dtype, device=x.device)
    src = plan.src_first.view(b, plan.t_out)
    for row, n in enumerate(plan.lengths.tolist()):              # one host sync for all rows
        torch.index_select(flat, 0, src[row, :n], out=out[row, :n])   # single-frame segments are now final
        out[row, n:].zero_()
    out = out.view(b * plan.t_out, c)
    if plan.multi_dst.numel():
        acc = torch.promote_types(x.dtype, torch.float32)
        sums = torch.zeros(plan.multi_dst.numel(), c, dtype=acc, device=x.device)
        sums.index_add_(0, plan.multi_local, flat.index_select(0, plan.multi_frames).to(acc))
        out.index_copy_(0, plan.multi_dst, (sums / plan.multi_count.unsqueeze(1)).to(x.dtype))
    return out.reshape(b, plan.t_out, c)


def spread_grad(grad_out: torch.Tensor, plan: PSDPlan, t_in: int) -> torch.Tensor:
    """Backward of `merge_rows`: [B, T', C] -> [B, T, C]; each kept frame gets its slot's grad / run length."""
    b, _, c = grad_out.shape
    g = grad_out.reshape(-1, c)
    acc = torch.promote_types(g.dtype, torch.float32)
    vals = g.index_select(0, plan.kept_dst).to(acc) / plan.kept_count.unsqueeze(1)
    out = torch.zeros(b * t_in, c, dtype=g.dtype, device=g.device)
    out.index_copy_(0, plan.kept_frames, vals.to(g.dtype))
    return out.reshape(b, t_in, c)


class _PSDFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, probs, features, plan):
        ctx.plan, ctx.t_in = plan, probs.shape[1]
        out_f = merge_rows(features, plan) if features is not None else None
        return merge_rows(probs, plan), out_f

    @staticmethod
    def backward(ctx, g_probs, g_feat):
        d_probs = spread_grad(g_probs, ctx.plan, ctx.t_in) if ctx.needs_input_grad[0] else None
        d_feat = spread_grad(g_feat, ctx.plan, ctx.t_in) if ctx.needs_input_grad[1] and g_feat is not None else None
        return d_probs, d_feat, None


def psd_compress_vectorised(probs: torch.Tensor, lengths: torch.Tensor, features: torch.Tensor | None = None,
                            blank_id: int = 0, blank_threshold: float = 0.9):
    """Vectorised PSD (any device); equals `psd_compress_reference` to float rounding, gradients included."""
    check_psd_inputs(probs, lengths, features, blank_id, blank_threshold)
    blank_prob = probs[..., blank_id]                                  # [B, T] strided view: no copy
    argmax = plan_argmax(probs, blank_prob, valid_frames(lengths, probs.shape[1], probs.device), blank_id)
    plan = plan_psd(argmax, blank_prob, lengths, blank_id, blank_threshold, probs.dtype)
    out_p, out_f = _PSDFn.apply(probs, features, plan)
    return out_p, out_f, plan.lengths.to(lengths.device)
