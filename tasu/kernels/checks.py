"""Input checks shared by the ops and their callers that cost no host synchronisation on an accelerator."""

from __future__ import annotations

import torch


def check_ids_in_range(ids: torch.Tensor, vocab_size: int, what: str) -> None:
    """Raise unless every id lies in [0, vocab_size).

    Host tensors: a ValueError giving the range found. Accelerator tensors: an asynchronous device assertion
    (`torch._assert_async`), because reading the range back would stall the host once per call, and a fused op
    on a launch-bound step cannot afford it. The data pipeline has already checked these ids on the host (CPS
    raises a ValueError naming the sample), so on a device this is a guard against out-of-bounds reads, not the
    user-facing error."""
    if not ids.numel():
        return
    if ids.device.type == "cpu":
        lo, hi = torch.aminmax(ids)
        if int(lo) < 0 or int(hi) >= vocab_size:
            raise ValueError(f"{what} must lie in [0, V={vocab_size}), got values in [{int(lo)}, {int(hi)}]")
        return
    torch._assert_async(((ids >= 0) & (ids < vocab_size)).all(), f"{what} must lie in [0, V={vocab_size})")
