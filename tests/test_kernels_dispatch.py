"""get_op: per-backend selection (backend faked), config forcing, one-time fallback log, lazy optional imports."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tasu.kernels as K
from tasu.config.fields import ConfigError
from tasu.kernels import dispatch
from tasu.kernels.config import KernelsConfig


@pytest.fixture(autouse=True)
def _clean_state(monkeypatch):
    monkeypatch.setattr(dispatch, "_configured", KernelsConfig())
    monkeypatch.setattr(dispatch, "_logged", set())


def fake_backend(monkeypatch, device: str, triton: bool = True, npu: bool = False) -> None:
    monkeypatch.setattr(dispatch, "device_type", lambda: device)
    why = "" if triton else "triton is not installed"
    monkeypatch.setattr(dispatch, "triton_available", lambda: (triton, why))
    import tasu.kernels.npu as npu_mod

    monkeypatch.setattr(npu_mod, "npu_available", lambda: npu)


@pytest.mark.parametrize("device,expected", [("cpu", "cpu"), ("cuda", "triton"), ("npu", "npu")])
def test_auto_picks_the_backend_implementation(monkeypatch, device, expected):
    fake_backend(monkeypatch, device, triton=True, npu=True)
    for op in dispatch.OPS:
        assert dispatch.resolve(op) == expected


@pytest.mark.parametrize("device,impl", [("cuda", "triton"), ("npu", "npu")])
def test_auto_falls_back_to_reference_and_logs_once(monkeypatch, caplog, device, impl):
    fake_backend(monkeypatch, device, triton=False, npu=False)
    with caplog.at_level(logging.WARNING, logger="tasu.kernels"):
        for _ in range(3):
            assert dispatch.resolve("psd_compress") == "reference"
            assert dispatch.resolve("ctc_loss") == "reference"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines                                   # one line per op, not per call
    assert all(f"'{impl}' implementation unavailable" in m and "using the reference" in m for m in lines)
    ref = dispatch.get_op("psd_compress")
    from tasu.kernels.torch_ops.psd import psd_compress_reference

    assert ref is psd_compress_reference


def test_config_forces_an_implementation(monkeypatch):
    fake_backend(monkeypatch, "cuda", triton=True)
    K.configure(KernelsConfig(impl="reference"))
    assert all(dispatch.resolve(op) == "reference" for op in dispatch.OPS)
    from tasu.kernels.torch_ops.sim_project import sim_project_reference

    assert K.get_op("sim_project") is sim_project_reference
    K.configure(KernelsConfig(impl="cpu"))
    assert dispatch.resolve("posterior_embed") == "cpu"
    assert dispatch.resolve("posterior_embed", impl="reference") == "reference"    # an explicit argument wins


def test_forcing_an_unavailable_implementation_raises(monkeypatch):
    fake_backend(monkeypatch, "cpu", triton=False, npu=False)
    with pytest.raises(RuntimeError, match="'npu' was requested"):
        dispatch.get_op("sim_project", impl="npu")
    with pytest.raises(RuntimeError, match="triton is not installed"):
        dispatch.get_op("ctc_loss", impl="triton")


def test_bad_names_are_rejected():
    with pytest.raises(ConfigError, match="kernels.impl"):
        KernelsConfig(impl="cuda")
    with pytest.raises(ValueError, match="unknown kernel op"):
        K.get_op("softmax")
    with pytest.raises(ValueError, match="kernels.impl"):
        K.get_op("sim_project", impl="fast")
    with pytest.raises(TypeError, match="KernelsConfig"):
        K.configure({"impl": "cpu"})


def test_public_functions_dispatch_to_the_configured_implementation(monkeypatch):
    fake_backend(monkeypatch, "cpu")
    calls = []
    import tasu.kernels.torch_ops.posterior_embed as pe

    real = pe.posterior_embed_reference
    monkeypatch.setattr(pe, "posterior_embed_reference", lambda *a: calls.append("ref") or real(*a))
    logits, emb = torch.randn(3, 10), torch.randn(10, 4)
    K.configure(KernelsConfig(impl="reference"))
    ref = K.posterior_embed(logits, emb, 2)
    K.configure(KernelsConfig(impl="auto"))
    fused = K.posterior_embed(logits, emb, 2)
    assert calls == ["ref"]
    torch.testing.assert_close(fused, ref)


def test_importing_kernels_imports_no_optional_backend():
    code = ("import sys, tasu.kernels as K; K.get_op('sim_project'); K.get_op('psd_compress', impl='reference');"
            "bad = [m for m in ('triton', 'torch_npu', 'tasu.kernels.triton_impl') if m in sys.modules];"
            "assert not bad, bad")
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "DS_ACCELERATOR": "cpu"})
    assert res.returncode == 0, res.stderr


def test_backend_lookup_without_the_facade(monkeypatch):
    # tasu.backend missing -> "cpu" (the facade is the only module allowed to name devices)
    monkeypatch.setitem(sys.modules, "tasu.backend", None)
    assert dispatch.device_type() == "cpu"


def test_id_check_raises_on_the_host_and_asserts_asynchronously_on_a_device(monkeypatch):
    import torch

    from tasu.kernels.checks import check_ids_in_range

    with pytest.raises(ValueError, match=r"ids must lie in \[0, V=5\), got values in \[0, 7\]"):
        check_ids_in_range(torch.tensor([0, 7]), 5, "ids")
    check_ids_in_range(torch.tensor([0, 4]), 5, "ids")
    asserted = []
    monkeypatch.setattr(torch, "_assert_async", lambda cond, msg: asserted.append((cond.shape, cond.dtype, msg)))
    # a non-host tensor: no value is read back (a meta tensor has none), the check is queued on the device
    check_ids_in_range(torch.zeros(4, dtype=torch.long, device="meta"), 5, "ids")
    assert asserted == [(torch.Size([]), torch.bool, "ids must lie in [0, V=5)")]
