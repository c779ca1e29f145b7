"""Backend facade: the only module that names CUDA / Ascend NPU.

The device type comes from `DS_ACCELERATOR` or is auto-detected; tasu.train.engine passes the same value to
DeepSpeed, so both agree. This module holds the table device type -> communication backend -> autocast dtype ->
fused-kernel family, and the device calls tasu needs (set device, synchronize, memory stats, RNG state) through
the device's torch module (`torch.cuda`, or `torch.npu` once torch_npu is imported), so it needs no DeepSpeed.

The NPU path follows torch_npu's documented API (`import torch_npu`, `torch.npu.*`, backend "hccl") and is
import-guarded: it is NOT verified on Ascend hardware.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger("tasu.backend")


@dataclass(frozen=True)
class BackendInfo:
    """What a device type implies for distributed training."""

    device_type: str       # "cpu" | "cuda" | "npu"
    comm_backend: str      # torch.distributed backend
    supports_fp16: bool    # fp16 training (DeepSpeed refuses fp16 on CPU)
    supports_bf16: bool
    autocast_dtype: torch.dtype
    kernel_impl: str       # the tasu.kernels family `kernels.impl=auto` picks here


BACKENDS = {
    "cpu": BackendInfo("cpu", "gloo", supports_fp16=False, supports_bf16=True, autocast_dtype=torch.bfloat16,
                       kernel_impl="cpu"),
    "cuda": BackendInfo("cuda", "nccl", supports_fp16=True, supports_bf16=True, autocast_dtype=torch.bfloat16,
                        kernel_impl="triton"),
    "npu": BackendInfo("npu", "hccl", supports_fp16=True, supports_bf16=True, autocast_dtype=torch.bfloat16,
                       kernel_impl="npu"),
}


def npu_available() -> bool:
    """True only when torch_npu imports and sees a device (find_spec is not enough: it needs CANN libraries)."""
    try:
        import torch_npu  # noqa: F401

        return bool(torch.npu.is_available())
    except Exception:
        return False


def _detect() -> str:
    forced = os.environ.get("DS_ACCELERATOR")
    if forced:
        if forced not in BACKENDS:
            raise ValueError(f"DS_ACCELERATOR={forced!r} is not supported by tasu (cpu | cuda | npu)")
        return forced
    if torch.cuda.is_available():
        return "cuda"
    if npu_available():
        return "npu"
    return "cpu"


@functools.lru_cache(maxsize=1)
def current_device_type() -> str:
    """The active device type: DS_ACCELERATOR if set, else auto-detected (cuda, then npu, then cpu)."""
    return _detect()


def info() -> BackendInfo:
    return BACKENDS[current_device_type()]


def _device_module():
    """torch.cuda or torch.npu (registered by importing torch_npu) for the active accelerator."""
    kind = current_device_type()
    if kind == "npu":
        import torch_npu  # noqa: F401
    return getattr(torch, kind)


def device(local_rank: int = 0) -> torch.device:
    """The torch device for this process."""
    kind = current_device_type()
    if kind == "cpu":
        return torch.device("cpu")
    return torch.device(kind, local_rank)


def set_device(local_rank: int) -> None:
    if current_device_type() != "cpu":
        _device_module().set_device(local_rank)


def device_name() -> str:
    """The accelerator's product name (e.g. 'NVIDIA H100 80GB HBM3'), or the CPU's model name."""
    if current_device_type() != "cpu":
        return _device_module().get_device_name()   # torch.npu mirrors torch.cuda here (unverified on NPU)
    from tasu.provenance import cpu_name

    return cpu_name()


def synchronize() -> None:
    if current_device_type() != "cpu":
        _device_module().synchronize()


def peak_memory_bytes() -> int:
    """Peak allocated device memory (accelerators) or this process's resident-set high-water mark (CPU: VmHWM,
    which `reset_peak_memory` resets; ru_maxrss where /proc is unreadable)."""
    if current_device_type() == "cpu":
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    return int(_device_module().max_memory_allocated())


def reset_peak_memory() -> bool:
    """Restart the peak at the current usage; False where that is impossible (CPU without /proc/self/clear_refs)."""
    if current_device_type() != "cpu":
        _device_module().reset_peak_memory_stats()
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")          # Linux: VmHWM <- current RSS
        return True
    except OSError:
        return False


def rng_state() -> dict:
    """RNG states to checkpoint: torch CPU + the accelerator's (if any)."""
    state = {"cpu": torch.get_rng_state()}
    if current_device_type() != "cpu":
        state["device"] = _device_module().get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "device" in state and current_device_type() != "cpu":
        _device_module().set_rng_state(state["device"])


def check_precision(precision: str) -> None:
    """Refuse a precision the backend cannot train in, with a clear message."""
    b = info()
    if precision == "fp16" and not b.supports_fp16:
        raise ValueError(f"train.precision=fp16 is not supported on the {b.device_type} backend "
                         "(DeepSpeed refuses fp16 there); use bf16 or fp32")
    if precision == "bf16" and not b.supports_bf16:
        raise ValueError(f"train.precision=bf16 is not supported on the {b.device_type} backend")
