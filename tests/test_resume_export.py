"""Checkpoints: stop + resume gives the same losses as an uninterrupted run; incomplete checkpoints are never
loaded; `tasu export` + `SpeechLLM.from_pretrained` reproduce the logits; only safe formats are loaded."""

import shutil

import pytest
import torch

from tasu.model.speech_llm import SpeechLLM
from tasu.train import checkpoint as ckpt

from .helpers import text_batch
from .train_utils import losses, read_metrics, run_ranks, run_tasu

COMMON = ["train.export_at_end=false", "train.progress_bar=false"]


def test_stop_and_resume_identical_losses_single_process(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    run_tasu(["train", "tiny", f"output_dir={full}", "train.max_steps=20", *COMMON])
    # the same run "stopped" at step 12: later checkpoints are deleted, and resuming redoes steps 13-20
    run_tasu(["train", "tiny", f"output_dir={part}", "train.max_steps=20", "train.save_every=6", *COMMON])
    for c in ckpt.complete_checkpoints(part / "checkpoints"):
        if c.step > 12:
            shutil.rmtree(c.path)
    # simulate a crash while writing the next checkpoint: an incomplete tmp dir must be ignored
    (part / "checkpoints" / "tmp-step-00-00000018").mkdir()
    run_tasu(["train", "tiny", f"output_dir={part}", "train.max_steps=20", "train.save_every=6",
              "train.resume=auto", *COMMON])
    assert [r["step"] for r in read_metrics(part)] == list(range(1, 21))
    assert losses(part) == losses(full)


def test_stop_and_resume_two_ranks_zero2(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    args = ["train", "tiny", "train.max_steps=12", "train.zero_stage=2", "train.save_every=4", *COMMON]
    run_ranks([*args, f"output_dir={full}"])
    run_ranks([*args, f"output_dir={part}"])
    for c in ckpt.complete_checkpoints(part / "checkpoints"):
        if c.step > 4:
            shutil.rmtree(c.path)
    run_ranks([*args, f"output_dir={part}", "train.resume=auto"])
    assert losses(part) == losses(full)


def test_resume_explicit_incomplete_checkpoint_is_refused(tmp_path):
    d = tmp_path / "x"
    (d / "checkpoints" / "step-00-00000004").mkdir(parents=True)   # no COMPLETE marker
    r = run_tasu(["train", "tiny", f"output_dir={d}", f"train.resume={d}/checkpoints/step-00-00000004",
                  *COMMON], check=False)
    assert r.returncode != 0 and "incomplete" in r.stderr
    assert ckpt.find_resume("auto", d / "checkpoints") is None


def test_keep_last_prunes(tmp_path):
    d = tmp_path / "k"
    run_tasu(["train", "tiny", f"output_dir={d}", "train.max_steps=8", "train.save_every=2", "train.keep_last=2",
              *COMMON])
    assert [c.step for c in ckpt.complete_checkpoints(d / "checkpoints")] == [6, 8]


@pytest.mark.parametrize("extra", [[], ["model.lora.r=4", "stages.0.trainable=[projector, lora]"]],
                         ids=["projector", "lora"])
def test_export_roundtrip_reproduces_logits(tmp_path, extra):
    run = tmp_path / "run"
    run_tasu(["train", "tiny", f"output_dir={run}", "train.max_steps=5", *COMMON, *extra])
    out = tmp_path / "export"
    run_tasu(["export", str(run), str(out)])
    assert (out / "projector.safetensors").is_file() and (out / "llm" / "config.json").is_file()
    if extra:
        assert (out / "lora" / "adapter_model.safetensors").is_file()

    from tasu.config.loader import load_config
    from tasu.model.build import build_speech_llm
    from tasu.train.export import load_trained_weights

    cfg = load_config(str(run / "config.yaml"))
    reference = build_speech_llm(cfg)
    load_trained_weights(reference, run, cfg)
    reference.eval()
    loaded = SpeechLLM.from_pretrained(out)
    batch = text_batch(reference, ["the cat sees a letter", "we need the blue sea"], cfg)
    with torch.no_grad():
        speech_a, len_a = reference.speech_embeddings(batch, "simulated")
        speech_b, len_b = loaded.speech_embeddings(batch, "simulated")
        xa, xb = reference.splice(batch, speech_a, len_a), loaded.splice(batch, speech_b, len_b)
        la = reference.llm(inputs_embeds=xa.embeds, attention_mask=xa.attention_mask).logits
        lb = loaded.llm(inputs_embeds=xb.embeds, attention_mask=xb.attention_mask).logits
    assert torch.allclose(la, lb, atol=1e-5), (la - lb).abs().max()


def test_checkpoint_rng_loads_with_weights_only_and_refuses_pickles(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "rank0.json").write_text('{"step": 1}')
    with open(tmp_path / "rank0_rng.pt", "wb") as f:
        pickle.dump({"cpu": Evil()}, f)
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only"):
        ckpt.read_rank_state(tmp_path, 0)
