"""LLaSO configs: `${VAR}` expansion in config values, the three shipped LLaSO presets, the projector activation,
the audio wrapper token and init_from keys."""

import pytest
import torch
import torch.nn.functional as F

from tasu.config.fields import ConfigError
from tasu.config.loader import expand_env, load_config
from tasu.model.config import ProjectorConfig
from tasu.model.projectors import build_projector
from tasu.types import Posteriors

LLASO_VARS = ("LLASO_WHISPER", "LLASO_LLM", "LLASO_ALIGN", "LLASO_INSTRUCT", "LLASO_ALIGN_RUN")


def test_env_expansion_default_escape_and_unset(monkeypatch):
    monkeypatch.setenv("TASU_T_A", "/m")
    monkeypatch.delenv("TASU_T_B", raising=False)
    tree = {"a": "${TASU_T_A}/x", "b": ["${TASU_T_B:-d}", "lit $${TASU_T_A}"], "c": 3, "d": None}
    assert expand_env(tree) == {"a": "/m/x", "b": ["d", "lit ${TASU_T_A}"], "c": 3, "d": None}
    with pytest.raises(ConfigError, match=r"config key 'x\.y\.1': environment variable TASU_T_B is not set"):
        expand_env({"x": {"y": ["ok", "${TASU_T_B}"]}})


def test_overrides_replace_a_variable_before_it_is_expanded(monkeypatch, tmp_path):
    for v in LLASO_VARS:
        monkeypatch.setenv(v, str(tmp_path))
    monkeypatch.delenv("LLASO_LLM")
    with pytest.raises(ConfigError, match=r"model\.llm\.path.*LLASO_LLM"):
        load_config("llaso_align")
    cfg = load_config("llaso_align", [f"model.llm.path={tmp_path}"])
    assert cfg.model.llm.path == str(tmp_path)


def test_llaso_presets_load_with_the_paper_settings(monkeypatch, tmp_path):
    for v in LLASO_VARS:
        monkeypatch.setenv(v, str(tmp_path))
    align, instruct = load_config("llaso_align"), load_config("llaso_instruct")
    for cfg in (align, instruct):
        m = cfg.model
        assert (m.encoder.type, m.encoder.n_mels, cfg.data.n_mels) == ("whisper", 128, 128)
        assert m.encoder.path == str(tmp_path) and m.encoder.weights_format == "hf"
        assert (m.projector.type, m.projector.activation, m.projector.hidden) == ("linear", "gelu", 3072)
        assert (m.llm.type, m.llm.path, cfg.psd.enabled) == ("hf", str(tmp_path), False)
        assert cfg.prompts.audio_bos and cfg.prompts.audio_eos and cfg.data.max_sample_tokens == 2048
        assert all(s.mode == "features" and "encoder" not in s.trainable for s in cfg.stages)
    assert align.stages[0].trainable == ["projector", "audio_tokens"] and align.train.lr == 1e-3
    assert set(instruct.stages[0].trainable) == {"projector", "llm", "audio_tokens"} and instruct.train.lr == 3e-5
    assert instruct.train.init_from == str(tmp_path)
    lora = load_config("llaso_instruct", ["model.lora.r=64", "stages.0.trainable=[projector, lora, audio_tokens]"])
    assert lora.model.lora.r == 64
    tiny = load_config("llaso-tiny")
    assert [(s.name, s.trainable, s.lr) for s in tiny.stages] == [("align", ["projector", "audio_tokens"], 1e-3),
                                                                  ("instruct", ["projector", "llm", "audio_tokens"],
                                                                   1e-3)]
    assert tiny.model.encoder.whisper_size == "tiny-test"


@pytest.mark.parametrize("override, culprit", [
    (["model.projector.activation=tanh"], "model.projector.activation"),
    (["model.projector.type=linear-silu", "model.projector.activation=gelu"], "model.projector.activation"),
    (["prompts.audio_eos=<|audio_bos|>"], "prompts.audio_eos"),
    (["prompts.audio_bos=null", "prompts.audio_eos=null"], "prompts.audio_bos"),   # stages train audio_tokens
    (['prompts.audio_bos=""'], "prompts.audio_bos"),
    (["train.init_from=/no/such/run"], "train.init_from"),
])
def test_bad_llaso_values_name_the_key(override, culprit):
    with pytest.raises(ConfigError, match=culprit.replace(".", r"\.")):
        load_config("llaso-tiny", override)


def _dense(b: int, t: int, d: int, lengths: list[int]) -> Posteriors:
    feats = torch.randn(b, t, d)
    return Posteriors(lengths=torch.tensor(lengths), vocab_size=5, probs=torch.full((b, t, 5), 0.2), features=feats)


@pytest.mark.parametrize("activation, fn", [("gelu", F.gelu), ("silu", F.silu), (None, F.relu)])
def test_stacking_mlp_uses_the_configured_activation(activation, fn):
    torch.manual_seed(0)
    proj = build_projector(ProjectorConfig(type="linear", hidden=16, stack=2, activation=activation), 6, 8,
                           input_kind="features")
    post = _dense(2, 5, 6, [5, 3])
    out, n = proj(post)
    assert n.tolist() == [3, 2] and out.shape == (2, 3, 8)
    x = post.features.masked_fill(~post.frame_mask().unsqueeze(-1), 0.0)
    x = torch.cat([x, torch.zeros(2, 1, 6)], dim=1).reshape(2, 3, 12)           # stack 2 frames, zero tail
    ref = proj.fc2(fn(proj.fc1(x)))
    assert torch.allclose(out[0], ref[0], atol=1e-6) and torch.allclose(out[1, :2], ref[1, :2], atol=1e-6)
    assert torch.all(out[1, 2] == 0)                                             # past the row's length


def test_conv1d_default_stays_gelu_and_takes_another_activation():
    torch.manual_seed(0)
    post = _dense(1, 4, 6, [4])
    g = build_projector(ProjectorConfig(type="conv1d", hidden=16, stack=2), 6, 8, input_kind="features")
    r = build_projector(ProjectorConfig(type="conv1d", hidden=16, stack=2, activation="relu"), 6, 8,
                        input_kind="features")
    r.load_state_dict(g.state_dict())
    x = post.features.transpose(1, 2)                                            # [1, 6, 4]
    h = g.conv(x).transpose(1, 2)                                                # [1, 2, 16]
    assert torch.allclose(g(post)[0], g.out(F.gelu(h)), atol=1e-5)
    assert torch.allclose(r(post)[0], r.out(F.relu(h)), atol=1e-5)
