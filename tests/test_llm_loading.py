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
