"""`get_op(name)`: the implementation of a fused op for the active backend.

Implementations per op (all share one signature and are checked against the reference by the tests):
    reference  pure-PyTorch definition of the op's meaning (dense / per-frame; slow, any device)
    cpu        vectorised PyTorch path wrapped in an autograd.Function (device-agnostic; default on CPU)
    triton     CUDA path: Triton kernels (CTC: the reduced problem on PyTorch's native CUDA kernel)
    npu        Ascend path (the adapter's import is guarded in tasu.backend; NOT verified on hardware)

Selection: `get_op(name, impl)` > `configure(KernelsConfig(impl=...))` (config key `kernels.impl`) > "auto".
"auto" takes the family the backend facade names for the active device (`BackendInfo.kernel_impl`); when that
implementation is unavailable (Triton not installed, no Ascend adapter) it falls back to the reference and logs one
line per op. An implementation named explicitly must be available, or get_op raises.
Implementations are imported lazily, so importing tasu.kernels never imports triton or the Ascend adapter.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
from collections.abc import Callable

from tasu.kernels.config import IMPL_CHOICES, KernelsConfig

log = logging.getLogger("tasu.kernels")

IMPLS = tuple(i for i in IMPL_CHOICES if i != "auto")

# op -> impl -> "module:function"
_TABLE: dict[str, dict[str, str]] = {
    "sim_project": {
        "reference": "tasu.kernels.torch_ops.sim_project:sim_project_reference",
        "cpu": "tasu.kernels.torch_ops.sim_project:sim_project_fused",
        "triton": "tasu.kernels.triton_impl.sim_project:sim_project_triton",
        "npu": "tasu.kernels.npu:sim_project_npu",
    },
    "psd_compress": {
        "reference": "tasu.kernels.torch_ops.psd:psd_compress_reference",
        "cpu": "tasu.kernels.torch_ops.psd:psd_compress_vectorised",
        "triton": "tasu.kernels.triton_impl.psd:psd_compress_triton",
        "npu": "tasu.kernels.npu:psd_compress_npu",
    },
    "posterior_embed": {
        "reference": "tasu.kernels.torch_ops.posterior_embed:posterior_embed_reference",
        "cpu": "tasu.kernels.torch_ops.posterior_embed:posterior_embed_fused",
        "triton": "tasu.kernels.triton_impl.posterior_embed:posterior_embed_triton",
        "npu": "tasu.kernels.npu:posterior_embed_npu",
    },
    "ctc_loss": {
        "reference": "tasu.kernels.torch_ops.ctc_loss:ctc_loss_reference",
        "cpu": "tasu.kernels.torch_ops.ctc_loss:ctc_loss_reduced",
        "triton": "tasu.kernels.torch_ops.ctc_loss:ctc_loss_cuda",
        "npu": "tasu.kernels.npu:ctc_loss_npu",
    },
}
OPS = tuple(_TABLE)

_configured = KernelsConfig()
_logged: set[tuple[str, str]] = set()


def configure(cfg: KernelsConfig) -> None:
    """Set the process-wide selection (the `kernels` section of the tasu config)."""
    global _configured
    if not isinstance(cfg, KernelsConfig):
        raise TypeError(f"configure() takes a KernelsConfig, got {type(cfg).__name__}")
    _configured = cfg


def configured_impl() -> str:
    return _configured.impl


def device_type() -> str:
    """The active backend's device type (from the backend facade, the only module naming devices); "cpu" when
    the facade cannot be imported."""
    try:
        from tasu.backend import current_device_type
    except ImportError:
        return "cpu"
    return current_device_type()


@functools.lru_cache(maxsize=1)
def triton_available() -> tuple[bool, str]:
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    return True, ""


def impl_available(impl: str) -> tuple[bool, str]:
    """(available, reason if not) for an implementation family."""
    if impl in ("reference", "cpu"):
        return True, ""
    if impl == "triton":
        return triton_available()
    if impl == "npu":
        from tasu.kernels.npu import npu_available

        return (True, "") if npu_available() else (False, "the Ascend adapter is not importable or sees no NPU "
                                                           "(tasu.backend.npu_available)")
    raise ValueError(f"unknown kernel implementation '{impl}' {IMPLS}")


def resolve(name: str, impl: str | None = None) -> str:
    """The implementation family `get_op(name, impl)` would use."""
    if name not in _TABLE:
        raise ValueError(f"unknown kernel op '{name}' {OPS}")
    want = impl if impl is not None else _configured.impl
    if want not in IMPL_CHOICES:
        raise ValueError(f"unknown kernel implementation '{want}' {IMPL_CHOICES} (config key kernels.impl)")
    if want != "auto":
        ok, why = impl_available(want)
        if not ok:
            raise RuntimeError(f"kernel op '{name}': implementation '{want}' was requested but {why}")
        return want
    from tasu.backend import BACKENDS

    backend = device_type()
    if backend not in BACKENDS:
        raise RuntimeError(f"kernel op '{name}': unknown backend '{backend}' {tuple(BACKENDS)}")
    preferred = BACKENDS[backend].kernel_impl
    ok, why = impl_available(preferred)
    if ok:
        return preferred
    if (name, preferred) not in _logged:
        _logged.add((name, preferred))
        log.warning("tasu.kernels: %s: '%s' implementation unavailable on backend %s (%s); using the reference",
                    name, preferred, backend, why)
    return "reference"


def _load(target: str) -> Callable:
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def get_op(name: str, impl: str | None = None) -> Callable:
    """The callable implementing op `name` (see the module docstring for the selection rules)."""
    family = resolve(name, impl)
    return _load(_TABLE[name][family])
