"""`tasu train` single-process on CPU: every input mode trains (the last loss < half the first)."""

import json

import pytest

from tasu.eval.metrics import wer

from .train_utils import losses, read_metrics, run_tasu

TONE = "pkg://assets/tone_speech/manifest.jsonl"
AUDIO_STAGE = [f"data.train=[{{path: '{TONE}', kind: audio, task: ASR}}]"]


def assert_learns(run_dir, stage=None):
    ls = losses(run_dir, stage)
    assert ls[-1] < 0.5 * ls[0], f"loss did not halve: first {ls[0]:.3f}, last {ls[-1]:.3f}"


def test_train_tiny_simulated_cli(tmp_path):
    d = tmp_path / "run"
    run_tasu(["train", "tiny", f"output_dir={d}", "train.max_steps=50"])
    recs = read_metrics(d)
    assert [r["step"] for r in recs] == list(range(1, 51))
    for key in ("step", "stage", "loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s", "audio_seconds_per_s",
                "padding_ratio", "peak_memory_bytes"):
        assert key in recs[0], key
    assert all(r["audio_seconds_per_s"] == 0 for r in recs)          # simulated: no audio read
    assert_learns(d)
    assert (d / "config.yaml").is_file() and (d / "ds_config.align_text.json").is_file()
    ds = json.loads((d / "ds_config.align_text.json").read_text())
    assert ds["train_micro_batch_size_per_gpu"] == 8 and ds["zero_optimization"]["stage"] == 0
    assert (d / "export" / "projector.safetensors").is_file()


@pytest.mark.parametrize("mode, extra", [
    ("posterior", ["model.projector.type=linear-silu", "model.encoder.ctc_weight=1.0"]),
    ("lego", ["model.projector.type=lego", "model.ctc_tokenizer.type=llm", "model.lora.r=8",
              "stages.0.trainable=[encoder, ctc_head, lora]"]),
    ("features", ["model.projector.type=linear", "model.projector.stack=2", "model.encoder.ctc_weight=1.0"]),
])
def test_train_tiny_audio_modes(tmp_path, mode, extra):
    d = tmp_path / mode
    overrides = [f"output_dir={d}", "train.max_steps=150", "model.encoder.type=tiny", f"stages.0.mode={mode}",
                 "stages.0.name=audio", "stages.0.trainable=[encoder, ctc_head, projector]",
                 "train.export_at_end=false", *AUDIO_STAGE, *extra]
    run_tasu(["train", "tiny", *overrides])
    recs = read_metrics(d)
    assert all(r["audio_seconds_per_s"] > 0 for r in recs)
    assert_learns(d)
    if "model.encoder.ctc_weight=1.0" in extra:        # joint CTC: both terms logged, summing to the loss
        for r in recs:
            assert r["loss"] == pytest.approx(r["llm_loss"] + r["ctc_loss"], rel=1e-5, abs=1e-5)
    else:
        assert "ctc_loss" not in recs[0]


def test_config_error_fails_before_compute(tmp_path):
    r = run_tasu(["train", "tiny", f"output_dir={tmp_path}/x", "train.max_stepz=3"], check=False)
    assert r.returncode == 2 and "train.max_stepz" in r.stderr
    assert not (tmp_path / "x").exists()


def test_eval_at_end_decodes_and_scores_data_eval(tmp_path):
    d = tmp_path / "run"
    run_tasu(["train", "tiny", f"output_dir={d}", "train.max_steps=5", "train.export_at_end=false",
              "eval.at_end=true", "eval.max_samples=6", "eval.no_repeat_ngram_size=3",
              f"data.eval=[{{path: '{TONE}', task: ASR}}]"])
    lines = [json.loads(ln) for ln in (d / "eval" / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and all(r["task"] == "ASR" and r["reference"] for r in lines)
    asr = json.loads((d / "eval" / "report.json").read_text())["scores"]["run"]["asr"]
    assert asr["metric"] == "wer" and asr["n"] == 6
    assert asr["value"] == pytest.approx(wer([r["reference"] for r in lines], [r["hypothesis"] for r in lines]))
    assert "asr" in (d / "eval" / "report.md").read_text()


def test_eval_at_end_without_eval_data_is_a_config_error(tmp_path):
    r = run_tasu(["train", "tiny", f"output_dir={tmp_path}/x", "eval.at_end=true"], check=False)
    assert r.returncode == 2 and "eval.at_end" in r.stderr
