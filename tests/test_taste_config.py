"""TasteConfig: defaults are valid, every field is documented, bad values name `taste.<field>`."""

from dataclasses import fields

import pytest

from tasu.config.fields import ConfigError
from tasu.taste.config import TasteConfig


def test_defaults_follow_the_paper_and_are_documented():
    cfg = TasteConfig()
    assert (cfg.codebooks, cfg.codebook_size, cfg.key_layer) == (4, 512, -1)
    assert cfg.word_pooling and cfg.kmeans_init and cfg.quantizer_dropout > 0
    for f in fields(TasteConfig):
        assert f.metadata.get("doc"), f.name


@pytest.mark.parametrize("kw, culprit", [
    ({"codebooks": 0}, "codebooks"),
    ({"codebook_size": 1}, "codebook_size"),
    ({"dim": 30, "heads": 4}, "dim"),
    ({"decay": 1.0}, "decay"),
    ({"epsilon": 0.0}, "epsilon"),
    ({"beta": -0.1}, "beta"),
    ({"kmeans_init_vectors": -1}, "kmeans_init_vectors"),
    ({"quantizer_dropout": 1.5}, "quantizer_dropout"),
    ({"dead_code_threshold": -1.0}, "dead_code_threshold"),
    ({"aggregator_layers": 0}, "aggregator_layers"),
    ({"unit_vocab": 1}, "unit_vocab"),
    ({"align_prior_width": -1.0}, "align_prior_width"),
    ({"speaker_dim": -2}, "speaker_dim"),
    ({"delay": -1}, "delay"),
    ({"text_loss_weight": -1.0}, "text_loss_weight"),
    ({"text_loss_weight": 0.0, "speech_loss_weight": 0.0}, "speech_loss_weight"),
    ({"dropout": 1.0}, "dropout"),
    ({"unit_source": "hubert"}, "unit_source"),
    ({"unit_fit_max_frames": 10, "unit_vocab": 20}, "unit_fit_max_frames"),
    ({"freq_shifts_hz": []}, "freq_shifts_hz"),
    ({"freq_shifts_hz": [0.0, 0.0]}, "freq_shifts_hz"),
    ({"selection_candidates": 1}, "selection_candidates"),
])
def test_bad_values_name_the_key(kw, culprit):
    with pytest.raises(ConfigError, match=rf"'taste\.{culprit}'"):
        TasteConfig(**kw)
