"""Engine settings: merged DeepSpeed config, batch arithmetic, precision refusal, backend facade, NaN policy."""

import json
import os

import pytest
import torch

from tasu import backend
from tasu.config.fields import ConfigError
from tasu.config.loader import load_config
from tasu.train.engine import build_ds_config, lr_lambda

from .train_utils import ROOT, base_env, read_metrics, run_tasu


def train_cfg(*overrides):
    return load_config("tiny", list(overrides)).train


def test_ds_config_injects_batch_and_clipping():
    ds = build_ds_config(train_cfg("train.grad_accum=3", "train.grad_clip=0.5", "train.zero_stage=2"), 4, 2)
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_accumulation_steps"] == 3
    assert ds["train_batch_size"] == 24 and ds["gradient_clipping"] == 0.5
    assert ds["zero_optimization"]["stage"] == 2


def test_global_batch_mismatch_is_explained():
    with pytest.raises(ConfigError, match=r"train\.global_batch.*\(8\) x train\.grad_accum \(1\) x world size \(2\)"):
        build_ds_config(train_cfg("train.global_batch=10"), 8, 2)
    assert build_ds_config(train_cfg("train.global_batch=16"), 8, 2)["train_batch_size"] == 16


def test_shipped_ds_configs_hold_only_zero_offload_precision():
    for f in sorted((ROOT / "ds_configs").glob("*.json")):
        ds = build_ds_config(train_cfg(f"train.ds_config={f}"), 2, 1)
        assert ds["zero_optimization"]["stage"] == 0  # train.zero_stage always wins


def test_ds_config_with_batch_keys_is_refused(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps({"zero_optimization": {"stage": 2}, "train_batch_size": 64}))
    with pytest.raises(ConfigError, match="train_batch_size"):
        build_ds_config(train_cfg(f"train.ds_config={f}"), 2, 1)


def test_offload_sets_client_optimizer_flag():
    ds = build_ds_config(train_cfg("train.zero_stage=3", "train.offload_optimizer=true", "train.offload_params=true"),
                         2, 1)
    assert ds["zero_force_ds_cpu_optimizer"] is False and "offload_param" in ds["zero_optimization"]


def test_fp16_refused_on_cpu_with_clear_message(monkeypatch):
    monkeypatch.setattr(backend, "current_device_type", lambda: "cpu")
    with pytest.raises(ValueError, match="fp16 is not supported on the cpu backend"):
        build_ds_config(train_cfg("train.precision=fp16"), 2, 1)


@pytest.mark.parametrize("kind, comm", [("cpu", "gloo"), ("cuda", "nccl"), ("npu", "hccl")])
def test_backend_table_with_faked_accelerator(monkeypatch, kind, comm):
    backend.current_device_type.cache_clear()
    monkeypatch.setenv("DS_ACCELERATOR", kind)
    try:
        assert backend.current_device_type() == kind
        assert backend.info().comm_backend == comm
        if kind != "npu":  # torch.device("npu") exists only once torch_npu is imported
            assert backend.device(1) == (torch.device("cpu") if kind == "cpu" else torch.device(kind, 1))
    finally:
        backend.current_device_type.cache_clear()


def test_backend_rejects_unknown_accelerator(monkeypatch):
    backend.current_device_type.cache_clear()
    monkeypatch.setenv("DS_ACCELERATOR", "tpu")
    try:
        with pytest.raises(ValueError, match="DS_ACCELERATOR='tpu'"):
            backend.current_device_type()
    finally:
        backend.current_device_type.cache_clear()


def test_npu_detection_is_guarded_here():
    assert backend.npu_available() is False   # torch_npu cannot import without CANN


def test_lr_schedule_warmup_then_cosine_floor():
    f = lr_lambda("warmup_cosine", 10, 100, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(100) == pytest.approx(0.1)
    assert lr_lambda("constant", 0, 100, 0.1)(50) == 1.0


def test_nan_loss_fails_with_message(tmp_path):
    env_cmd = ["train", "tiny", f"output_dir={tmp_path}/a", "train.max_steps=6", "train.export_at_end=false"]
    os.environ["TASU_INJECT"] = "nan_loss@3"
    try:
        r = run_tasu(env_cmd, check=False)
        assert r.returncode != 0 and "step 3: loss is nan" in r.stderr and "nan_policy=skip" in r.stderr
        run_tasu([*env_cmd[:2], f"output_dir={tmp_path}/b", *env_cmd[3:], "train.nan_policy=skip"])
        recs = read_metrics(tmp_path / "b")
        assert [r["nan_skipped"] for r in recs] == [False, False, True, False, False, False]
    finally:
        del os.environ["TASU_INJECT"]


def test_base_env_drops_rank_variables():
    assert "RANK" not in base_env()


ONE_RANK_STEPS = """
import copy, torch
from tasu.config.loader import load_config
from tasu.train.engine import Engine, build_ds_config, init_distributed
init_distributed()
t = load_config("tiny", ["train.grad_clip=0.05", "train.schedule=constant", "train.weight_decay=0.01"]).train
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
ref = copy.deepcopy(model)
engine = Engine(model, t, build_ds_config(t, 4, 1), 0.1, 0, 10)
assert engine.engine.enable_backward_allreduce is False
opt = torch.optim.AdamW(ref.parameters(), lr=0.1, betas=tuple(t.adam_betas), eps=t.adam_eps, weight_decay=0.01)
for i in range(3):
    x = torch.randn(4, 8)
    engine.backward(engine.forward(x).pow(2).mean())
    engine.step()
    opt.zero_grad()
    ref(x).pow(2).mean().backward()
    torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.05)
    opt.step()
for a, b in zip(engine.module.parameters(), ref.parameters()):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
print("OK")
"""


def test_one_rank_zero0_skips_self_allreduce_and_matches_plain_adamw():
    """One rank, ZeRO-0: no flatten / all-reduce / copy-back of the gradients (pure cost there), and the steps
    (clipping + AdamW) equal plain torch's."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", ONE_RANK_STEPS], env=base_env(), capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stderr[-3000:]
