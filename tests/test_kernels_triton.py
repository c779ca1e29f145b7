"""Triton kernels vs the reference, run on CPU through the Triton interpreter (slow tier).

TRITON_INTERPRET=1 must be set before a kernel is defined (`@triton.jit` reads it at decoration time), so this
module sets it first and (re)imports tasu.kernels.triton_impl afterwards. The checks (tests/kernel_checks.py) are
the CUDA tier's: fp32 <= 1e-5, bf16 <= 1e-2, relative to a float64 reference on the same inputs.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch

os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="Triton is an optional dependency (pip install triton)")

from .kernel_checks import (  # noqa: E402
    check_argmax_takes_the_first_maximum,
    check_posterior_embed_exact,
    check_psd,
    check_sim_project,
)

pytestmark = pytest.mark.slow


def _load(name: str):
    full = f"tasu.kernels.triton_impl.{name}"
    if full in sys.modules:            # defined earlier without the interpreter: define the kernels again
        return importlib.reload(sys.modules[full])
    return importlib.import_module(full)


tsim, tpsd, tpe = _load("sim_project"), _load("psd"), _load("posterior_embed")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("affine, bias", [(True, True), (False, True), (True, False)])
def test_triton_sim_project(dtype, affine, bias):
    check_sim_project(tsim, dtype, affine, bias=bias)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_psd(dtype):
    check_psd(tpsd, dtype)


def test_triton_argmax_takes_the_first_maximum():
    check_argmax_takes_the_first_maximum(tpsd)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_posterior_embed_exact(dtype):
    check_posterior_embed_exact(tpe, dtype)
