"""Config loading: every shipped YAML loads; bad keys, types, values, files and tasks fail naming the culprit."""

import re

import pytest

from tasu.config.fields import ConfigError
from tasu.config.loader import PRESET_DIR, load_config, preset_names
from tasu.text.prompts import PromptBuilder, load_prompts


@pytest.mark.parametrize("name", preset_names())
def test_every_shipped_preset_loads(name, tmp_path, monkeypatch):
    # presets that point at local models / data name them by environment variable: set each to an existing folder
    for var in set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", (PRESET_DIR / f"{name}.yaml").read_text())):
        monkeypatch.setenv(var, str(tmp_path))
    cfg = load_config(name)
    assert cfg.stages, name


def test_presets_exist():
    assert {"tiny", "tiny-curriculum"} <= set(preset_names())
    assert all(p.suffix == ".yaml" for p in PRESET_DIR.iterdir() if p.is_file())


def test_override_types_are_applied():
    cfg = load_config("tiny", ["train.max_steps=7", "train.lr=1e-4", "output_dir=/tmp/x", "stages.0.lr=2e-3"])
    assert cfg.train.max_steps == 7 and cfg.train.lr == 1e-4 and cfg.output_dir == "/tmp/x"
    assert cfg.stages[0].lr == 2e-3


@pytest.mark.parametrize("override, culprit", [
    (["train.max_stepz=3"], "train.max_stepz"),
    (["model.projector.kind=x"], "model.projector.kind"),
    (["bogus=1"], "bogus"),
])
def test_unknown_key_names_it(override, culprit):
    with pytest.raises(ConfigError, match=culprit.replace(".", r"\.")):
        load_config("tiny", override)


@pytest.mark.parametrize("override, culprit", [
    (["train.max_steps=abc"], "train.max_steps"),
    (["train.lr=[1, 2]"], "train.lr"),
    (["train.tensorboard=3"], "train.tensorboard"),
    (["model.projector.hidden=1.5"], "model.projector.hidden"),
])
def test_wrong_type_names_key(override, culprit):
    with pytest.raises(ConfigError, match=culprit.replace(".", r"\.")):
        load_config("tiny", override)


@pytest.mark.parametrize("override, culprit", [
    (["train.zero_stage=4"], "train.zero_stage"),
    (["train.max_steps=0"], "train.max_steps"),
    (["simulation.drop_rate=1.5"], "simulation.drop_rate"),
    (["model.projector.type=mlp9"], "model.projector.type"),
    (["stages.0.mode=video"], "mode"),
    (["train.precision=fp8"], "train.precision"),
    (["eval.repetition_penalty=0"], "eval.repetition_penalty"),
    (["eval.no_repeat_ngram_size=-1"], "eval.no_repeat_ngram_size"),
])
def test_impossible_value_names_key(override, culprit):
    with pytest.raises(ConfigError, match=culprit.replace(".", r"\.")):
        load_config("tiny", override)


def test_missing_file_names_key(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.llm\.tokenizer_text"):
        load_config("tiny", [f"model.llm.tokenizer_text={tmp_path}/nope.txt"])
    with pytest.raises(ConfigError, match=r"data\.train\.0\.path"):
        load_config("tiny", [f"data.train.0.path={tmp_path}/missing.txt"])
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(str(tmp_path / "nope.yaml"))


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="tiny"):
        load_config("no-such-preset")


def test_unknown_task_names_it():
    class Tok:  # the smallest tokenizer PromptBuilder needs
        eos_token_id = 1

    pb = PromptBuilder(Tok(), load_prompts())
    with pytest.raises(ConfigError, match="'SPEAKER_AGE'"):
        pb.build("SPEAKER_AGE", "x")


def test_shipped_prompts_cover_tasks():
    prompts = load_prompts()
    assert {"ASR", "EN2ZH", "EN2DE", "QA", "SLU_scenario", "SLU_action", "sentiment"} <= set(prompts)


def test_bad_prompt_file_names_line(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"task": "ASR", "prompt": "no placeholder"}\n')
    with pytest.raises(ConfigError, match=r"p\.jsonl:1"):
        load_prompts(f)
