"""`tasu train taste-tiny`: every TASTE stage end to end (units -> text only -> no VQ -> RVQ tokenizer -> TASLM) on
the shipped tone speech, with falling losses, the eval metrics, carry files and stage-level resume.

One run of the preset (tiny LLM not pre-trained, so the test never depends on the LLM cache) takes ~20 s on one
idle CPU thread; the run is shared by the tests of this module.
"""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from tasu.config.fields import ConfigError
from tasu.config.loader import load_config
from tests.train_utils import read_metrics, run_ranks, run_tasu

STAGES = {"text_only": 60, "no_vq": 80, "tokenizer": 150, "taslm": 80}   # the preset's steps per stage
OVERRIDES = ["model.llm.pretrain_steps=0", "train.progress_bar=false", "train.tensorboard=false"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("taste") / "run"
    run_tasu(["train", "taste-tiny", f"output_dir={out}", *OVERRIDES], timeout=600)
    return out


def _window_means(losses: list[float]) -> tuple[float, float]:
    w = max(3, len(losses) // 10)
    return sum(losses[:w]) / w, sum(losses[-w:]) / w


def test_every_stage_runs_with_falling_loss(run):
    recs = read_metrics(run)
    for si, (name, steps) in enumerate(STAGES.items()):
        mine = [r for r in recs if r["stage"] == name]
        assert [r["step"] for r in mine] == list(range(1, steps + 1)), name
        assert all(r["stage_index"] == si and math.isfinite(r["loss"]) for r in mine)
        first, last = _window_means([r["loss"] for r in mine])
        assert last < 0.8 * first, (name, first, last)
    # what each stage logs besides the loss
    by = {r["stage"]: r for r in recs}
    assert by["text_only"]["commit_loss"] == 0.0 and "rvq_perplexity" not in by["no_vq"]
    assert 1.0 <= by["tokenizer"]["rvq_perplexity"] <= 16 and 0.0 < by["tokenizer"]["rvq_used"] <= 1.0
    assert {"text_loss", "speech_loss"} <= set(by["taslm"])
    assert [r["global_step"] for r in recs] == list(range(1, sum(STAGES.values()) + 1))


def test_eval_metrics_are_saved(run):
    ev = {s: json.loads((run / "stages" / s / "eval.json").read_text()) for s in STAGES}
    for s in ("text_only", "no_vq", "tokenizer"):
        # 40 clips x 2 voices; 32 units: a trained decoder is far above chance (1/32)
        assert ev[s]["utterances"] == 80 and ev[s]["eval_set"] == "data.train"
        assert 0.2 < ev[s]["unit_acc"] <= 1.0, ev[s]
    assert ev["tokenizer"]["rvq_initialised"] is True
    # one token per text token: ~17.5 tokens/s of tone speech; 2 codebooks x 16 codes = 8 bits per token
    tps = ev["tokenizer"]["speech_tokens_per_s"]
    assert 10 < tps < 25 and ev["tokenizer"]["bitrate_bps"] == pytest.approx(8 * tps)
    lm = ev["taslm"]
    assert lm["candidates"] == 2 and lm["chance"] == 0.5
    for k in ("speech_selection_acc", "next_speech_selection_acc"):
        assert 0.0 <= lm[k] <= 1.0, lm
    # the codes follow their text: the LM tells them from the same codes shuffled over the tokens
    assert lm["speech_selection_acc"] > 0.75, lm
    assert lm["text_ce"] > 0 and lm["speech_ce"] > 0


def test_carry_files_hold_each_component(run):
    tok = load_file(str(run / "stages" / "tokenizer" / "carry.safetensors"))
    assert any(k.startswith("aggregator.") for k in tok) and any(k.startswith("unit_decoder.") for k in tok)
    assert bool(tok["rvq.initted"]) and tok["rvq.embed"].shape == (2, 16, 64)
    text_only = load_file(str(run / "stages" / "text_only" / "carry.safetensors"))
    assert not any(k.startswith(("aggregator.", "rvq.")) for k in text_only)      # text-only trains the decoder only
    lm = load_file(str(run / "stages" / "taslm" / "carry.safetensors"))
    assert any("lora_" in k for k in lm) and any(k.startswith("speech_heads.") for k in lm)
    assert torch.equal(lm["rvq.embed"], tok["rvq.embed"])                        # passed on untouched
    assert (run / "units.safetensors").is_file()


def test_resume_skips_finished_stages(run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(run, out)
    (out / "stages" / "taslm" / "carry.safetensors").unlink()
    before = [r for r in read_metrics(out) if r["stage"] != "taslm"]
    r = run_tasu(["train", "taste-tiny", f"output_dir={out}", *OVERRIDES], timeout=600)
    assert "resuming after stage tokenizer" in r.stderr
    recs = read_metrics(out)
    assert recs[: len(before)] == before and len(recs) == sum(STAGES.values())
    assert (out / "stages" / "taslm" / "carry.safetensors").is_file()


@pytest.mark.parametrize("overrides, culprit", [
    (["stages.0.trainable=[aggregator]"], r"stages\[text_only\]\.trainable"),
    (["stages.3.trainable=[projector]"], r"stages\[taslm\]\.trainable"),
    (["stages.0.mode=simulated"], "cannot be mixed"),
    (["data.n_mels=128"], r"data\.n_mels"),
    (["taste.unit_source=hubert"], r"taste\.unit_source"),
    (["taste.freq_shifts_hz=[0.0,0.0]"], r"taste\.freq_shifts_hz"),
])
def test_bad_taste_configs_name_the_key(overrides, culprit):
    with pytest.raises(ConfigError, match=culprit):
        load_config("taste-tiny", overrides)


def test_taslm_without_a_trained_tokenizer_is_a_config_error(tmp_path):
    cfg = ["stages=[{name: lm, mode: taslm, trainable: [lora, speech_lm]}]", f"output_dir={tmp_path}", *OVERRIDES]
    r = run_tasu(["train", "taste-tiny", *cfg], check=False, timeout=300)
    assert r.returncode == 2 and "needs a trained TASTE tokenizer" in r.stderr, r.stderr[-2000:]
    # init_from a run whose weights hold no trained RVQ: found when the codes are needed
    from safetensors.torch import save_file

    save_file({"unit_decoder.out.bias": torch.zeros(32)}, str(tmp_path / "w.safetensors"))
    r = run_tasu(["train", "taste-tiny", *cfg, f"train.init_from={tmp_path / 'w.safetensors'}"], check=False,
                 timeout=300)
    assert r.returncode == 2 and "holds no initialised RVQ codebooks" in r.stderr, r.stderr[-2000:]


def test_two_gloo_ranks_run_every_stage(tmp_path):
    """The whole TASTE recipe on 2 data-parallel ranks (short stages, ~11 s): each rank reads its half of the
    utterances, every stage logs every step, DeepSpeed sees the global batch, each stage is evaluated."""
    out = tmp_path / "run2"
    short = {"text_only": 10, "no_vq": 10, "tokenizer": 20, "taslm": 10}
    outs = run_ranks(["train", "taste-tiny", f"output_dir={out}", *OVERRIDES,
                      *(f"stages.{i}.max_steps={n}" for i, n in enumerate(short.values()))], world=2, timeout=600)
    assert "40 training utterances (rank 0)" in outs[0]                  # 80 clips split over 2 ranks
    recs = read_metrics(out)
    for name, steps in short.items():
        assert [r["step"] for r in recs if r["stage"] == name] == list(range(1, steps + 1)), name
        assert json.loads((out / f"ds_config.{name}.json").read_text())["train_batch_size"] == 2 * 8
        assert (out / "stages" / name / "eval.json").is_file()
    assert all(math.isfinite(r["loss"]) for r in recs)
