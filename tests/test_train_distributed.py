"""2-rank CPU DeepSpeed jobs (gloo): ZeRO 0 / 2 / 3 (bf16) / 2 + LoRA, the curriculum under ZeRO-3 with mixed
text/audio batches, and the deepspeed launcher with a hostfile."""

import json
import shutil
import subprocess
import sys

import pytest

from .train_utils import ROOT, base_env, free_port, losses, read_metrics, run_ranks

pytestmark = pytest.mark.integration


def falls(ls: list[float]) -> bool:
    """Falling loss: the mean of the last 5 steps is clearly below the mean of the first 5."""
    return sum(ls[-5:]) / 5 < 0.75 * sum(ls[:5]) / 5


@pytest.mark.parametrize("name, overrides", [
    ("zero0", ["train.zero_stage=0"]),
    ("zero2", ["train.zero_stage=2"]),
    ("zero3_bf16", ["train.zero_stage=3", "train.precision=bf16"]),
    ("zero2_lora", ["train.zero_stage=2", "model.lora.r=4", "stages.0.trainable=[projector, lora]",
                    "eval.at_end=true", "eval.max_samples=4",
                    "data.eval=[{path: 'pkg://assets/tone_speech/manifest.jsonl', task: ASR}]"]),
])
def test_two_ranks_train(tmp_path, name, overrides):
    d = tmp_path / name
    run_ranks(["train", "tiny", f"output_dir={d}", "train.max_steps=30", "train.export_at_end=false", *overrides])
    if "eval.at_end=true" in overrides:          # rank 0 decodes after the last barrier (LoRA weights included)
        assert len((d / "eval" / "results.jsonl").read_text().splitlines()) == 4
    recs = read_metrics(d)
    assert len(recs) == 30
    assert falls([r["loss"] for r in recs]), [round(r["loss"], 3) for r in recs]
    ds = json.loads((d / "ds_config.align_text.json").read_text())
    assert ds["train_batch_size"] == 16 and ds["zero_optimization"]["stage"] == int(overrides[0][-1])
    assert (d / "checkpoints" / "step-00-00000030" / "COMPLETE").is_file()


def test_zero3_mixed_text_and_audio_batches(tmp_path):
    """One stream mixes text-only (simulated, encoder skipped) and audio batches: ranks see different kinds at the
    same step under ZeRO-3 and must neither hang nor desynchronise."""
    d = tmp_path / "mixed"
    sources = ("data.train=[{path: 'pkg://assets/tiny_text.txt', kind: text, weight: 0.5}, "
               "{path: 'pkg://assets/tone_speech/manifest.jsonl', kind: audio, weight: 0.5}]")
    run_ranks(["train", "tiny", f"output_dir={d}", "train.max_steps=30", "train.zero_stage=3",
               "model.encoder.type=tiny", "stages.0.mode=posterior", "stages.0.trainable=[encoder, projector]",
               "train.export_at_end=false", sources], timeout=600)
    recs = read_metrics(d)
    assert len(recs) == 30
    assert any(r["audio_seconds_per_s"] > 0 for r in recs) and any(r["audio_seconds_per_s"] == 0 for r in recs)


@pytest.mark.skipif(shutil.which("deepspeed") is None, reason="the deepspeed launcher is not on PATH")
def test_hostfile_launch_curriculum_zero3(tmp_path):
    """`deepspeed --hostfile` (localhost slots=2, no ssh) runs the two-stage curriculum under ZeRO-3."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=2\n")
    d = tmp_path / "tc"
    cmd = ["deepspeed", "--hostfile", str(hostfile), "--no_ssh_check", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "--module", "tasu", "train", "tiny-curriculum", f"output_dir={d}",
           "train.zero_stage=3", "train.max_steps=20"]
    r = subprocess.run(cmd, env=base_env(), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert len(losses(d, "align_text")) == 20 and len(losses(d, "finetune_audio")) == 20
    assert (d / "export" / "tasu_config.yaml").is_file()


def test_launcher_returns_nonzero_on_config_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tasu", "--local_rank=0", "train", "tiny", "train.zero_stage=9"],
                       env=base_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "train.zero_stage" in r.stderr


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_torchrun_launch(tmp_path):
    d = tmp_path / "tr"
    cmd = ["torchrun", "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "tasu", "train", "tiny",
           f"output_dir={d}", "train.max_steps=8", "train.zero_stage=2", "train.export_at_end=false"]
    r = subprocess.run(cmd, env=base_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert [m["step"] for m in read_metrics(d)] == list(range(1, 9))
