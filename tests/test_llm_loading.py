"""LLM loading: an HF folder built from its config.json with random weights (`model.llm.random_init`)."""

import json

import pytest
import torch

from tasu.config.fields import ConfigError
from tasu.model.config import LLMConfig
from tasu.model.llm import build_tiny_tokenizer, load_llm

QWEN2_SHAPE = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64,
               "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
               "vocab_size": 300, "max_position_embeddings": 512, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
               "tie_word_embeddings": True}


@pytest.fixture()
def config_only_folder(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("the cat sees a letter\nwe need the blue sea today\n")
    build_tiny_tokenizer(str(text), 64).save_pretrained(tmp_path / "llm")
    (tmp_path / "llm" / "config.json").write_text(json.dumps(QWEN2_SHAPE))
    return tmp_path / "llm"


def test_random_init_builds_the_configured_shape_without_weights(config_only_folder):
    assert not list(config_only_folder.glob("*.safetensors"))
    cfg = LLMConfig(type="hf", path=str(config_only_folder), random_init=True, dtype="bfloat16")
    llm, tok = load_llm(cfg, seed=3)
    assert type(llm).__name__ == "Qwen2ForCausalLM" and llm.dtype == torch.bfloat16
    assert llm.config.num_key_value_heads == 2 and llm.get_input_embeddings().weight.shape == (300, 64)
    again, _ = load_llm(cfg, seed=3)                           # the seed fixes the random weights
    assert torch.equal(llm.get_input_embeddings().weight, again.get_input_embeddings().weight)
    assert tok.pad_token_id is not None


def test_without_random_init_a_folder_without_weights_is_an_error(config_only_folder):
    with pytest.raises(OSError):
        load_llm(LLMConfig(type="hf", path=str(config_only_folder)))


def test_random_init_is_for_hf_folders_only():
    with pytest.raises(ConfigError, match="model.llm.random_init"):
        LLMConfig(type="tiny", random_init=True)


def test_compile_with_zero3_is_refused(tmp_path):
    from tasu.config.loader import load_config

    with pytest.raises(ConfigError, match="model.llm.compile"):
        load_config("tiny", [f"output_dir={tmp_path}", "model.llm.compile=true", "train.zero_stage=3"])


@pytest.mark.slow
def test_compiled_decoder_layers_give_the_same_loss_and_grads(tmp_path):
    """model.llm.compile: every decoder layer compiled (inductor; ~20 s on one CPU thread), same loss and
    projector gradients as the eager model with the same weights."""
    from tasu.model.build import build_speech_llm

    from .helpers import text_batch, tiny_config

    results = []
    for compiled in (False, True):
        cfg = tiny_config(tmp_path / str(compiled), f"model.llm.compile={str(compiled).lower()}")
        torch.manual_seed(0)
        model = build_speech_llm(cfg, seed=0)
        assert all((layer._compiled_call_impl is not None) == compiled for layer in model.llm.get_decoder().layers)
        batch = text_batch(model, ["the cat sees a letter", "we need the blue sea today", "he reads"], cfg)
        loss, _ = model(batch, "simulated")
        results.append((loss.detach(), torch.autograd.grad(loss, list(model.projector.parameters()))))
    (eager, g_eager), (comp, g_comp) = results
    torch.testing.assert_close(comp, eager, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
