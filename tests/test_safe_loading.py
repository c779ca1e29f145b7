"""Safe loading: every pickle tasu reads goes through torch.load(weights_only=True); a malicious pickle is refused
before it can run. The payload of each malicious file creates a marker file when unpickled, so each test also
proves that nothing ran (the marker stays absent).

Paths covered: DeepSpeed checkpoint files (verified by `verify_checkpoint_pickles` before DeepSpeed's own
full-pickle load), rank RNG states (tests/test_resume_export.py), Whisper openai `.pt` and HF `.bin` weights; a
source scan keeps any new torch.load / pickle.load from slipping in unguarded. Slow tier: a real run's resume
refuses a planted checkpoint file end to end, and every supported checkpoint layout (ZeRO 0-3, bf16, offload,
LoRA) passes the check."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch

from tasu.model.encoders.whisper_weights import WhisperWeightsError, load_whisper_encoder_state
from tasu.train import checkpoint as ckpt
from tasu.train.engine import UnsafeCheckpointError, verify_checkpoint_pickles

from .train_utils import ROOT, run_ranks, run_tasu


class Payload:
    """Unpickling calls Path.touch(marker): harmless, but visible."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _evil(path: Path, marker: Path, wrap=lambda p: {"module": p}, zip_format: bool = True) -> None:
    """A file whose unpickling runs the payload: torch.save's zip format, or a bare pickle stream."""
    if zip_format:
        torch.save(wrap(Payload(marker)), path)
    else:
        with open(path, "wb") as f:
            pickle.dump(wrap(Payload(marker)), f, protocol=2)
    assert not marker.exists()


def test_evil_pickle_in_a_deepspeed_checkpoint_is_refused_before_deepspeed_loads_it(tmp_path):
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    d = tmp_path / "step-00-00000004"
    d.mkdir()
    # what DeepSpeed writes: tensors, containers, a loss scaler object and the ZeRO stage enum -> accepted
    torch.save({"module": {"w": torch.ones(2)}, "zero_stage": ZeroStageEnum(2), "loss_scaler": LossScaler(1.0),
                "ds_version": "0.19.8"}, d / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    verify_checkpoint_pickles(d)
    marker = tmp_path / "pwned"
    _evil(d / "mp_rank_00_model_states.pt", marker)
    with pytest.raises(UnsafeCheckpointError, match=r"mp_rank_00_model_states\.pt: refused"):
        verify_checkpoint_pickles(d)
    assert not marker.exists()
    # and the check really is the only guard: full pickle would have run the payload
    torch.load(d / "mp_rank_00_model_states.pt", weights_only=False)
    assert marker.exists()


def test_evil_rank_rng_state_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "rank0.json").write_text('{"step": 1}')
    _evil(tmp_path / "rank0_rng.pt", marker, wrap=lambda p: {"cpu": p}, zip_format=False)
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only"):
        ckpt.read_rank_state(tmp_path, 0)
    assert not marker.exists()


@pytest.mark.parametrize("layout", ["openai", "hf"])
def test_evil_whisper_weights_are_refused(tmp_path, layout):
    marker = tmp_path / "pwned"
    if layout == "openai":
        path = tmp_path / "tiny.pt"
        _evil(path, marker, wrap=lambda p: {"dims": {}, "model_state_dict": p})
        fmt = "openai"
    else:
        path = tmp_path / "m"
        path.mkdir()
        from transformers import WhisperConfig

        WhisperConfig(d_model=8, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=16,
                      num_mel_bins=80).to_json_file(path / "config.json")
        _evil(path / "pytorch_model.bin", marker)
        fmt = "hf"
    with pytest.raises(WhisperWeightsError, match=r"weights_only=True"):
        load_whisper_encoder_state(str(path), fmt)
    assert not marker.exists()


_LOAD = re.compile(r"\b(torch\.load|pickle\.loads?|cPickle\.load|dill\.load|joblib\.load|np\.load|numpy\.load|"
                   r"yaml\.load|yaml\.unsafe_load|marshal\.loads?|shelve\.open)\(")


def test_every_deserialisation_in_tasu_is_safe():
    """A source scan: torch.load only with weights_only=True, np.load only with allow_pickle=False, no pickle /
    marshal / yaml.load at all (new code that adds one must make it safe or change this test on purpose)."""
    bad = []
    for f in sorted((ROOT / "tasu").rglob("*.py")):
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            m = _LOAD.search(line)
            if not m or line.lstrip().startswith("#"):
                continue
            call = line[m.start():]
            ok = (m.group(1) == "torch.load" and "weights_only=True" in call) or \
                 (m.group(1) in ("np.load", "numpy.load") and "allow_pickle=False" in call)
            if not ok:
                bad.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bad, "unsafe deserialisation:\n" + "\n".join(bad)


COMMON = ["train.export_at_end=false", "train.progress_bar=false", "train.tensorboard=false"]


@pytest.mark.slow
def test_resume_from_a_planted_checkpoint_file_is_refused_end_to_end(tmp_path):
    run = tmp_path / "run"
    run_tasu(["train", "tiny", f"output_dir={run}", "train.max_steps=4", "train.save_every=2", *COMMON])
    latest = ckpt.find_resume("auto", run / "checkpoints")
    marker = tmp_path / "pwned"
    _evil(latest.path / "mp_rank_00_model_states.pt", marker)
    r = run_tasu(["train", "tiny", f"output_dir={run}", "train.max_steps=6", "train.save_every=2", *COMMON],
                 check=False)
    assert r.returncode != 0 and "refused" in r.stderr, r.stderr[-3000:]
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    ["train.zero_stage=0"], ["train.zero_stage=1", "train.offload_optimizer=true"], ["train.zero_stage=2"],
    ["train.zero_stage=2", "train.precision=bf16"], ["train.zero_stage=3"],
    ["train.zero_stage=3", "train.precision=bf16", "train.offload_params=true"],
    ["train.zero_stage=2", "model.lora.r=4", "stages.0.trainable=[projector, lora]"],
], ids=lambda o: "+".join(x.split("=")[0].split(".")[-1] + "=" + x.split("=")[1] for x in o))
def test_every_checkpoint_layout_passes_the_safe_load_check_and_resumes(tmp_path, overrides):
    run = tmp_path / "run"
    args = ["train", "tiny", f"output_dir={run}", "train.max_steps=4", "train.save_every=2", *COMMON, *overrides]
    run_ranks(args)
    verify_checkpoint_pickles(ckpt.find_resume("auto", run / "checkpoints").path)
    # a resume from step 2 passes through the check inside Engine.load
    ckpt_4 = run / "checkpoints" / ckpt.tag_for(0, 4)
    import shutil

    shutil.rmtree(ckpt_4)
    run_ranks(args)
    assert (ckpt_4 / "COMPLETE").is_file()
