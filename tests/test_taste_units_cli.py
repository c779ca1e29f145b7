"""`tasu units fit | assign`: k-means units over the frames of the taste-tiny encoder setup, written and read back;
the same units a training run fits; mismatches name the key."""

import json

import pytest
import torch
from safetensors import safe_open

from tasu.cli import main
from tasu.config.loader import load_config, resolve_path
from tasu.data.features import whisper_log_mel
from tasu.data.manifests import read_manifest
from tasu.taste.units import load_centroids, save_centroids

MANIFEST = "pkg://assets/tone_speech/manifest.jsonl"


@pytest.fixture(scope="module")
def units(tmp_path_factory):
    d = tmp_path_factory.mktemp("units")
    assert main(["units", "fit", "taste-tiny", "--out", str(d / "u.safetensors")]) == 0
    assert main(["units", "assign", "taste-tiny", "--units", str(d / "u.safetensors"), "--out",
                 str(d / "u.jsonl")]) == 0
    return d


def test_fit_writes_centroids_with_metadata(units):
    c = load_centroids(units / "u.safetensors")
    assert c.shape == (32, 160) and torch.isfinite(c).all()      # taste.unit_vocab x (2 log-mel frames x 80 bins)
    with safe_open(str(units / "u.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["k"] == "32" and meta["layer"] == "features" and meta["encoder"] == "whisper"
    # deterministic: a second fit gives the same centroids
    main(["units", "fit", "taste-tiny", "--out", str(units / "again.safetensors")])
    assert torch.equal(load_centroids(units / "again.safetensors"), c)


def test_assign_gives_one_unit_per_encoder_frame(units):
    rows = [json.loads(ln) for ln in (units / "u.jsonl").read_text().splitlines()]
    recs = list(read_manifest(resolve_path(MANIFEST)))
    assert len(rows) == 2 * len(recs)                          # every clip at both frequency shifts
    keys = {r["key"] for r in rows}
    assert {r.key for r in recs} | {f"{r.key}~70Hz" for r in recs} == keys
    import soundfile as sf

    first = recs[0]
    audio, _ = sf.read(first.audio[0], dtype="float32")
    frames = (whisper_log_mel(audio).shape[0] - 1) // 2 + 1     # Whisper: 2 mel frames per encoder frame
    row = next(r for r in rows if r["key"] == first.key)
    assert len(row["units"]) == frames and row["frames_per_second"] == 50.0
    used = {u for r in rows for u in r["units"]}
    assert used <= set(range(32)) and len(used) > 16
    shifted = next(r for r in rows if r["key"] == f"{first.key}~70Hz")
    assert shifted["units"] != row["units"]                   # the voice changes the units, not the length
    assert len(shifted["units"]) == len(row["units"])


def test_a_training_run_fits_the_same_units(units, tmp_path):
    from tasu.taste.recipe import prepare_corpus

    cfg = load_config("taste-tiny", [f"output_dir={tmp_path}", "model.llm.pretrain_steps=0"])
    corpus = prepare_corpus(cfg, tmp_path, 0, 1, "cpu", {})
    assert torch.equal(load_centroids(tmp_path / "units.safetensors"), load_centroids(units / "u.safetensors"))
    rows = {json.loads(ln)["key"]: json.loads(ln)["units"] for ln in (units / "u.jsonl").read_text().splitlines()}
    assert all(u.units.tolist() == rows[u.key] for u in corpus.train)
    # taste.units_path: the run reads the file instead of fitting
    cfg = load_config("taste-tiny", [f"output_dir={tmp_path / 'b'}", f"taste.units_path={units / 'u.safetensors'}"])
    corpus = prepare_corpus(cfg, tmp_path / "b", 0, 1, "cpu", {})
    assert not (tmp_path / "b" / "units.safetensors").exists()
    assert all(u.units.tolist() == rows[u.key] for u in corpus.train)


def test_mismatched_units_file_names_the_key(units, tmp_path, capsys):
    save_centroids(tmp_path / "k8.safetensors", torch.randn(8, 160), {"layer": "features"})
    assert main(["units", "assign", "taste-tiny", "--units", str(tmp_path / "k8.safetensors"), "--out",
                 str(tmp_path / "x.jsonl")]) == 2
    assert "taste.unit_vocab" in capsys.readouterr().err
    save_centroids(tmp_path / "d7.safetensors", torch.randn(32, 7), {"layer": "features"})
    assert main(["units", "assign", "taste-tiny", "--units", str(tmp_path / "d7.safetensors"), "--out",
                 str(tmp_path / "x.jsonl")]) == 2
    assert "--units" in capsys.readouterr().err
    # encoder-layer units are 64-dim (the encoder's width), the file holds 160-dim log-mel units
    assert main(["units", "assign", "taste-tiny", "taste.unit_source=encoder", "--units",
                 str(units / "u.safetensors"), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "--units" in capsys.readouterr().err
    # same width, other layer: the metadata tells
    save_centroids(tmp_path / "l1.safetensors", torch.randn(32, 64), {"layer": "1"})
    assert main(["units", "assign", "taste-tiny", "taste.unit_source=encoder", "--units",
                 str(tmp_path / "l1.safetensors"), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "taste.unit_layer" in capsys.readouterr().err
    assert main(["units", "fit", "taste-tiny", "--data", str(tmp_path / "nope.jsonl"), "--out",
                 str(tmp_path / "x.safetensors")]) == 2
