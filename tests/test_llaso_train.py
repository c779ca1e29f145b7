"""`tasu train llaso-tiny`: both stages run on the generated LLaSO set (three modality configurations, a two-clip
task) with falling loss in each; `tasu eval run` decodes the eval records from the run dir (and identically from
its export) into results that `tasu eval report` scores; `train.init_from` starts a run from another run's
weights; an unfrozen Whisper encoder trains."""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tasu.config.fields import ConfigError
from tasu.config.loader import load_config
from tasu.eval.run import decode_records, load_for_eval
from tasu.model.build import build_speech_llm
from tasu.train import checkpoint as ckpt
from tasu.train.init_from import init_carry_path
from tasu.train.recipe import build_stage_model, previous_weights

from .train_utils import losses, read_metrics, run_tasu

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "tasu/assets/llaso_tiny/eval.jsonl"
KINDS = ["--task-kind", "word_pick=exact", "--task-kind", "spoken_qa=exact", "--task-kind", "speed_compare=label"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("llaso") / "run"
    run_tasu(["train", "llaso-tiny", f"output_dir={d}", "train.progress_bar=false"])
    return d


def _mean(xs):
    return sum(xs) / len(xs)


def test_both_stages_train_with_falling_loss(run):
    recs = read_metrics(run)
    assert [r["stage"] for r in recs] == ["align"] * 40 + ["instruct"] * 40
    for stage in ("align", "instruct"):
        ls = losses(run, stage)
        assert _mean(ls[-5:]) < 0.75 * _mean(ls[:5]), f"{stage}: {ls}"
    assert all(r["audio_seconds_per_s"] > 0 for r in recs)
    align = load_file(str(ckpt.carry_path(run, "align")))
    instruct = load_file(str(ckpt.carry_path(run, "instruct")))
    assert {k.split(".")[0] for k in align} == {"projector", "audio_tokens"}
    assert {k.split(".")[0] for k in instruct} == {"projector", "audio_tokens", "llm"}
    assert not any(k.startswith("encoder.") for k in instruct)                 # Whisper stayed frozen
    assert float(align["audio_tokens.delta"].abs().sum()) > 0                   # the wrapper embeddings trained
    assert (run / "export" / "audio_tokens.safetensors").is_file()


def test_eval_run_writes_results_that_eval_report_scores(run, tmp_path):
    out = tmp_path / "results.jsonl"
    r = run_tasu(["eval", "run", str(run), "--data", str(EVAL), "--out", str(out)])
    assert "wrote 22 results" in r.stdout
    got = [json.loads(x) for x in out.read_text().splitlines()]
    want = [json.loads(x) for x in EVAL.read_text().splitlines()]
    assert [g["key"] for g in got] == [w["id"] for w in want]
    assert [(g["task"], g["reference"]) for g in got] == [(w["task"], w["conversations"][1]["value"]) for w in want]
    assert all(isinstance(g["hypothesis"], str) and set(g) == {"key", "task", "reference", "hypothesis"} for g in got)
    model, cfg = load_for_eval(run / "export")                                  # the export decodes identically
    assert decode_records(model, cfg, str(EVAL), "features", 8, cfg.eval.max_new_tokens, 1) == got
    rep = tmp_path / "report.json"
    run_tasu(["eval", "report", str(out), "--out", str(tmp_path / "report.md"), "--json", str(rep), *KINDS])
    scores = json.loads(rep.read_text())["scores"]["results"]
    assert {t: s["n"] for t, s in scores.items()} == {"asr": 10, "speed": 4, "word_pick": 4, "spoken_qa": 2,
                                                      "speed_compare": 2}
    assert scores["asr"]["metric"] == "wer" and scores["speed_compare"]["metric"] == "accuracy"
    bad = run_tasu(["eval", "run", str(tmp_path), "--data", str(EVAL), "--out", str(out)], check=False)
    assert bad.returncode == 2 and "neither a run dir" in bad.stderr


def test_init_from_starts_the_first_stage_from_another_run(run, tmp_path):
    one_stage = "stages=[{name: more, mode: features, trainable: [llm]}]"
    carry = ckpt.carry_path(run, "instruct")
    assert init_carry_path(run) == carry and init_carry_path(carry) == carry
    cfg = load_config("llaso-tiny", [f"output_dir={tmp_path}/r", f"train.init_from={run}", one_stage])
    model = build_stage_model(cfg, 0, Path(cfg.output_dir))
    trained = load_file(str(carry))
    params = dict(model.named_parameters())
    assert all(params[k].detach().equal(v) for k, v in trained.items())
    fresh = dict(build_speech_llm(cfg).named_parameters())
    assert not fresh["projector.fc1.weight"].equal(params["projector.fc1.weight"])
    weights, src = previous_weights(cfg, 0, Path(cfg.output_dir))               # passed on in this run's carry
    assert src == carry and set(weights) == set(trained)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.yaml").write_text("stages: [{name: a}]\n")
    with pytest.raises(ConfigError, match="train.init_from.*no finished stage"):
        init_carry_path(tmp_path / "empty")


def test_unfrozen_whisper_encoder_trains_in_features_mode(tmp_path):
    d = tmp_path / "unfrozen"
    run_tasu(["train", "llaso-tiny", f"output_dir={d}", "train.max_steps=3", "train.export_at_end=false",
              "train.progress_bar=false", "stages=[{name: align, mode: features, trainable: [encoder, projector]}]"])
    carry = load_file(str(ckpt.carry_path(d, "align")))
    cfg = load_config("llaso-tiny", [f"output_dir={d}"])
    fresh = dict(build_speech_llm(cfg).named_parameters())
    body = [k for k in carry if k.startswith("encoder.encoder.layers.")]
    assert body and all(not carry[k].equal(fresh[k].detach()) for k in body if k.endswith("fc1.weight"))
