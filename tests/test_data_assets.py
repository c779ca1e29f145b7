"""The committed tiny shard sets: readable, as documented, and reproducible from their generator script."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from tasu.config.fields import ConfigError
from tasu.config.loader import from_dict
from tasu.data.audio_io import decode_audio_bytes
from tasu.data.config import DataConfig, SourceConfig
from tasu.data.shard_index import read_index
from tasu.data.tar_io import read_range

ASSETS = Path(__file__).resolve().parent / "assets/shards"


def _samples(folder: Path) -> list[dict]:
    out = []
    for sh in read_index(folder / "index.json").shards:
        for s in read_range(sh.url, sh.offsets, 0, sh.samples):
            out.append({"meta": json.loads(s["json"]),
                        "audio": decode_audio_bytes(s["flac"]) if "flac" in s else None})
    return out


def test_committed_shards_are_small_and_as_documented():
    total = sum(p.stat().st_size for p in ASSETS.rglob("*.tar"))
    assert total < 40_000
    audio = read_index(ASSETS / "audio/index.json")
    text = read_index(ASSETS / "text/index.json")
    assert (audio.kind, audio.sample_rate, audio.total_samples, len(audio.shards)) == ("audio", 8000, 6, 2)
    assert (text.kind, text.total_samples, len(text.shards)) == ("text", 12, 3)
    for s in _samples(ASSETS / "audio"):
        m = s["meta"]
        assert set(m) >= {"key", "task", "target", "GT", "kind", "format", "source", "sample_rate", "num_samples",
                          "duration", "num_voices"}
        assert s["audio"][1] == 8000 and s["audio"][0].shape == (m["num_samples"],)
    assert all(s["audio"] is None and s["meta"]["kind"] == "text" for s in _samples(ASSETS / "text"))


def test_generator_script_reproduces_the_committed_shards(tmp_path):
    spec = importlib.util.spec_from_file_location("make_tiny_shards", ASSETS / "make_tiny_shards.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.build(tmp_path)
    for name in ("audio", "text"):
        new, old = _samples(tmp_path / name), _samples(ASSETS / name)
        assert [s["meta"] for s in new] == [s["meta"] for s in old]
        for a, b in zip(new, old):
            if a["audio"] is not None:
                assert a["audio"][1] == b["audio"][1] and np.array_equal(a["audio"][0], b["audio"][0])


def test_data_config_from_yaml_mappings_and_errors():
    cfg = from_dict(DataConfig, {"train": [{"path": "a.txt", "weight": 0.7, "kind": "text"}, {"path": "shards/"}],
                                 "bucket_boundaries": [100, 200], "max_frames": 4000}, "data")
    assert isinstance(cfg.train[0], SourceConfig) and cfg.train[0].weight == 0.7 and cfg.train[1].kind == "auto"
    for bad, key in (({"features": "mfcc"}, "data.features"), ({"bucket_boundaries": [5, 5]}, "data.bucket_boundaries"),
                     ({"max_frames": 100}, "data.max_frames"), ({"on_error": "ignore"}, "data.on_error"),
                     ({"train": [{"path": "x", "kind": "video"}]}, "data.source.kind")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            from_dict(DataConfig, bad, "data")
