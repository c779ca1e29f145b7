"""`tasu train` with ctc stages (DeepSpeed, single process, CPU): the whisper-ctc-tiny preset learns tone speech,
`tasu ctc eval` / `export-posteriors` read the run, and ctc weights carry across SpeechLLM stages."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tasu.cli import main as tasu_main
from tasu.eval.posterior_shards import read_posteriors

from .train_utils import losses, read_metrics, run_tasu

TONE = "pkg://assets/tone_speech/manifest.jsonl"


@pytest.fixture(scope="module")
def ctc_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("ctc") / "run"
    run_tasu(["train", "whisper-ctc-tiny", f"output_dir={d}", "train.progress_bar=false"])
    return d


def test_preset_learns_tone_speech(ctc_run, tmp_path, capsys):
    ls = losses(ctc_run)
    assert len(ls) == 150 and ls[-1] < 0.1 * ls[0], f"loss did not fall: first {ls[0]:.3f}, last {ls[-1]:.3f}"
    rec = read_metrics(ctc_run)[0]
    assert rec["stage"] == "ctc" and rec["audio_seconds_per_s"] > 0 and rec["tokens_per_s"] > 0
    carry = load_file(str(ctc_run / "stages" / "ctc" / "carry.safetensors"))
    assert carry and all(k.startswith("encoder.") for k in carry)      # no LLM, no projector
    export = ctc_run / "export"
    assert (export / "encoder.safetensors").is_file() and (export / "tasu_config.yaml").is_file()
    for model_dir, beam in ((ctc_run, 1), (export, 4)):
        out = tmp_path / f"eval-{beam}.json"
        assert tasu_main(["ctc", "eval", str(model_dir), TONE, "--beam", str(beam), "--out", str(out)]) == 0
        res = json.loads(out.read_text())
        assert res["samples"] == 40 and res["beam"] == beam
        assert res["cer"] < 0.2, f"train CER {res['cer']:.3f} (beam {beam})"
        assert len(res["results"]) == 40 and {"key", "reference", "hypothesis"} <= set(res["results"][0])
    assert tasu_main(["ctc", "export-posteriors", str(ctc_run), TONE, str(tmp_path / "post"), "--top-k", "4"]) == 0
    samples = list(read_posteriors(tmp_path / "post"))
    assert len(samples) == 40 and samples[0].log_probs.shape[1] == 29
    # a bad model dir is a clear error, not a traceback
    assert tasu_main(["ctc", "eval", str(tmp_path), TONE]) == 2
    assert "neither a tasu run dir" in capsys.readouterr().err


def test_ctc_stage_between_speech_llm_stages(tmp_path):
    """ctc (encoder + head, partial: top layer, separate LR) -> posterior (projector) -> ctc (head only):
    the encoder trained by the ctc stage is what the SpeechLLM stage runs, and the projector it trained passes
    through the last ctc stage (which has no projector) into the final carry and export."""
    d = tmp_path / "run"
    stages = ("stages=[{name: enc, mode: ctc, trainable: [ctc_head], encoder_top_layers: 1, lr: 3.0e-3, "
              "encoder_lr: 1.0e-3, max_steps: 8}, "
              "{name: align, mode: posterior, trainable: [projector], max_steps: 4}, "
              "{name: head, mode: ctc, trainable: [ctc_head], max_steps: 4}]")
    run_tasu(["train", "tiny-curriculum", f"output_dir={d}", "model.llm.pretrain_steps=0",
              "model.encoder.type=whisper", "model.encoder.whisper_size=tiny-test", "model.encoder.head=mlp",
              "model.encoder.head_hidden=32", f"data.train=[{{path: '{TONE}', kind: audio, task: ASR}}]",
              "data.batch_size=4", "train.progress_bar=false", "train.zero_stage=2", stages])
    enc = load_file(str(d / "stages" / "enc" / "carry.safetensors"))
    align = load_file(str(d / "stages" / "align" / "carry.safetensors"))
    head = load_file(str(d / "stages" / "head" / "carry.safetensors"))
    # stage 1 trained only the head, the top layer (layers.1 of 2) and the closing LayerNorm
    assert {k.split(".")[2] for k in enc if k.startswith("encoder.encoder.")} == {"layers", "layer_norm"}
    assert all(".layers.1." in k for k in enc if ".layers." in k)
    for k, v in enc.items():
        torch.testing.assert_close(align[k], v)                           # frozen in stage 2, carried on
    proj = [k for k in align if k.startswith("projector.")]
    assert proj and all(torch.equal(head[k], align[k]) for k in proj)   # passed through the ctc stage
    assert any(not torch.equal(head[k], align[k]) for k in head if k.startswith("encoder.ctc_head."))
    ds = json.loads((d / "ds_config.enc.json").read_text())
    assert ds["zero_optimization"]["stage"] == 2
    assert (d / "export" / "projector.safetensors").is_file()            # the run's model is a SpeechLLM
    assert {r["stage"] for r in read_metrics(d)} == {"enc", "align", "head"}
