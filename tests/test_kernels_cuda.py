"""CUDA tier (`-m gpu`, run with DS_ACCELERATOR=cuda): the Triton kernels on a real GPU against the float64
reference, the CUDA CTC, `get_op`'s automatic choice, and `tasu train` in bf16 with ZeRO-2 on the GPU."""

from __future__ import annotations

import pytest
import torch

from .kernel_checks import (
    TOL,
    check_argmax_takes_the_first_maximum,
    check_posterior_embed_exact,
    check_psd,
    check_sim_project,
    rel_err,
)
from .train_utils import losses, run_tasu

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CUDA = "cuda"


@pytest.fixture(scope="module")
def triton_modules():
    pytest.importorskip("triton")
    from tasu.kernels.triton_impl import posterior_embed, psd, sim_project

    return sim_project, psd, posterior_embed


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("affine, bias", [(True, True), (False, True), (True, False)])
def test_cuda_sim_project(triton_modules, dtype, affine, bias):
    check_sim_project(triton_modules[0], dtype, affine, CUDA, bias=bias)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_sim_project_at_the_benchmark_vocabulary(triton_modules, dtype):
    check_sim_project(triton_modules[0], dtype, True, CUDA, v=25055, d=1536, shape=(2, 16), seed=5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_psd(triton_modules, dtype):
    check_psd(triton_modules[1], dtype, CUDA)
    # the float64 reference's backward writes a full-size gradient per frame: keep B x T small at V = 25055
    check_psd(triton_modules[1], dtype, CUDA, b=3, t=40, v=25055, dim=64, seed=7)


def test_cuda_argmax_takes_the_first_maximum(triton_modules):
    check_argmax_takes_the_first_maximum(triton_modules[1], CUDA)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_posterior_embed_exact(triton_modules, dtype):
    check_posterior_embed_exact(triton_modules[2], dtype, CUDA)
    check_posterior_embed_exact(triton_modules[2], dtype, CUDA, n=(2, 70), v=5003, h=96, seed=9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("full_length", [False, True], ids=["partial-lengths", "full-lengths"])
def test_cuda_ctc_loss_matches_reference(dtype, full_length):
    from tasu.kernels.torch_ops.ctc_loss import ctc_loss_cuda, ctc_loss_reference

    g = torch.Generator().manual_seed(3)
    b, t, v, s = 3, 40, 300, 12
    logits = torch.randn(b, t, v, generator=g).to(dtype)
    targets = torch.randint(1, v, (b, s), generator=g)
    il = torch.tensor([t, t, t] if full_length else [t, t - 5, 30])      # full: the form cuDNN would take
    tl = torch.tensor([s, 7, 4])
    x = logits.to(CUDA).requires_grad_()
    loss = ctc_loss_cuda(x, targets.to(CUDA), il.to(CUDA), tl.to(CUDA), 0, "mean")
    x64 = logits.double().requires_grad_()
    ref = ctc_loss_reference(x64, targets, il, tl, 0, "mean")
    assert rel_err(loss, ref) <= TOL[dtype]
    (g_x,), (g_ref,) = torch.autograd.grad(loss, [x]), torch.autograd.grad(ref, [x64])
    assert rel_err(g_x, g_ref) <= TOL[dtype]


def test_get_op_picks_triton_on_cuda(monkeypatch):
    from tasu.kernels import dispatch

    monkeypatch.setattr(dispatch, "device_type", lambda: "cuda")
    assert all(dispatch.resolve(op) == "triton" for op in dispatch.OPS)


@pytest.mark.parametrize("zero_stage", [2])
def test_train_tiny_bf16_on_the_gpu(tmp_path, zero_stage):
    d = tmp_path / "run"
    run_tasu(["train", "tiny", f"output_dir={d}", "train.max_steps=60", "train.precision=bf16",
              f"train.zero_stage={zero_stage}"], env={"DS_ACCELERATOR": "cuda"})
    ls = losses(d)
    assert ls[-1] < 0.5 * ls[0], f"loss did not halve on the GPU: first {ls[0]:.3f}, last {ls[-1]:.3f}"
