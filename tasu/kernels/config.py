"""Config of the fused-kernel layer: which implementation `tasu.kernels.get_op` hands out."""

from __future__ import annotations

from dataclasses import dataclass

from tasu.config.fields import check, doc_field

# "auto" picks the family the backend facade names for the active device (tasu.backend.BACKENDS).
IMPL_CHOICES = ("auto", "reference", "cpu", "triton", "npu")


@dataclass
class KernelsConfig:
    """Kernel selection for sim_project, psd_compress, posterior_embed and ctc_loss."""

    impl: str = doc_field("auto", "auto (per backend) | reference (pure PyTorch definitions) | cpu (vectorised "
                                  "PyTorch, any device) | triton (GPU kernels) | npu (Ascend path, unverified)")

    def __post_init__(self) -> None:
        check(self.impl in IMPL_CHOICES, "kernels.impl", f"unknown implementation '{self.impl}' {IMPL_CHOICES}")
