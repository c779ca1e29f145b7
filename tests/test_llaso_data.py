"""LLaSO records through the data pipeline: own-turn prompts, several voices per sample (in-memory manifests and
shards give the same batches), the expanded-length guard (fail names key and length, skip counts), simulated mode,
and the generated llaso_tiny set."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tasu.align.config import SimulationConfig
from tasu.config.loader import load_config
from tasu.data.config import DataConfig, SourceConfig
from tasu.data.expansion import SpeechExpansion, speech_expansion
from tasu.data.faults import DataError, FaultCounter
from tasu.data.features import whisper_log_mel
from tasu.data.loader import TrainStream, eval_batches
from tasu.data.manifests import MODALITY_AUDIO_TEXT, MODALITY_PURE_AUDIO, MODALITY_TEXT_AUDIO, Record, read_manifest
from tasu.data.pipeline import prepare
from tasu.data.shard import write_shards
from tasu.data.sources import read_part, resolve_source
from tasu.data.stages import build_stages
from tasu.model.llm import build_tiny_tokenizer
from tasu.synth_llaso import write_llaso_tiny
from tasu.text.ctc_tokenizer import CharCTCTokenizer
from tasu.text.prompts import PromptBuilder, load_prompts

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tasu/assets"
CTC = CharCTCTokenizer()
SIM = SimulationConfig()
BOS, EOS = "<|audio_bos|>", "<|audio_eos|>"
TURNS = {"ta": "Transcribe this. <audio>", "at": "<audio> the cat", "pa": "<audio>",
         "two": "First <audio> then <audio> ok"}
ANSWERS = {"ta": "one", "at": "two", "pa": "three", "two": "four"}


@pytest.fixture(scope="module")
def pb():
    tok = build_tiny_tokenizer(str(ASSETS / "tiny_text.txt"), 64)
    tok.add_tokens([BOS, EOS], special_tokens=True)
    return PromptBuilder(tok, load_prompts(), None, BOS, EOS)


def _wav(path: Path, seconds: float, f: float) -> np.ndarray:
    x = (0.3 * np.sin(2 * np.pi * f * np.arange(int(seconds * 16000)) / 16000)).astype(np.float32)
    sf.write(path, x, 16000, subtype="PCM_16")
    return sf.read(path, dtype="float32")[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("llaso")
    waves = {"v1.wav": _wav(d / "v1.wav", 0.3, 300), "v2.wav": _wav(d / "v2.wav", 0.5, 500),
             "v3.wav": _wav(d / "v3.wav", 0.4, 700)}
    voices = {"ta": ["v1.wav"], "at": ["v2.wav"], "pa": ["v3.wav"], "two": ["v1.wav", "v3.wav"]}
    recs = [{"id": k, "task": "QA", "voice": voices[k], "GT": "one" if k in ("ta", "two") else "",
             "conversations": [{"from": "human", "value": TURNS[k]}, {"from": "gpt", "value": ANSWERS[k]}]}
            for k in TURNS]
    manifest = d / "l.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    single = d / "single.jsonl"
    single.write_text("".join(json.dumps(r) + "\n" for r in recs[:3]), encoding="utf-8")
    summary = write_shards([str(manifest)], str(d / "shards"))
    assert summary.samples == 4 and summary.num_bad == 0
    return {"dir": d, "jsonl": str(manifest), "single": str(single), "shards": str(d / "shards"), "waves": waves,
            "voices": voices}


def _cfg(**kw) -> DataConfig:
    return DataConfig(**{"batch_size": 4, "num_workers": 0, "min_sample_frames": 5, "num_buckets": 0, **kw})


def test_records_keep_their_modality_and_raw_turn(corpus):
    recs = {r.key: r for r in read_manifest(corpus["jsonl"])}
    assert [recs[k].modality for k in ("ta", "at", "pa")] == [MODALITY_TEXT_AUDIO, MODALITY_AUDIO_TEXT,
                                                              MODALITY_PURE_AUDIO]
    assert all(recs[k].meta()["human"] == TURNS[k] for k in TURNS)


@pytest.mark.parametrize("source", ["jsonl", "shards"])
def test_eval_batches_carry_every_voice_in_order_with_the_turns(pb, corpus, source):
    (b,) = list(eval_batches(_cfg(), [corpus[source]], "features", CTC, pb, 4))
    assert b.keys == ["ta", "at", "pa", "two"] and b.speech_counts == [1, 1, 1, 2]
    rows = [w for k in b.keys for w in corpus["voices"][k]]                  # v1, v2, v3, v1, v3
    assert b.feats.shape[0] == 5 and b.feat_lengths.tolist() == [len(corpus["waves"][w]) // 160 for w in rows]
    for r, w in enumerate(rows):
        ref = whisper_log_mel(corpus["waves"][w])
        assert torch.allclose(b.feats[r, : ref.shape[0]], ref, atol=1e-5)
    for i, k in enumerate(b.keys):
        p = pb.build_turn(TURNS[k], None)
        assert (b.prompt_prefix[i], b.prompt_middle[i], b.prompt_suffix[i], b.answer[i]) == (p.prefix, p.middle,
                                                                                            p.suffix, [])
    assert b.ctc_targets is None and b.references == [ANSWERS[k] for k in b.keys]
    assert math.isclose(b.audio_seconds, sum(len(corpus["waves"][w]) / 16000 for w in rows))


def test_training_batches_have_answers_and_single_voice_batches_keep_the_old_contract(pb, corpus):
    st = TrainStream(_cfg(), [corpus["shards"]], "features", CTC, pb, SIM, seed=3)
    b = next(iter(st))
    assert sorted(b.keys) == sorted(TURNS)
    for i, k in enumerate(b.keys):
        assert b.answer[i] == pb.build_turn(TURNS[k], ANSWERS[k]).answer
    (single,) = list(eval_batches(_cfg(), [corpus["single"]], "features", CTC, pb, 4))
    assert single.speech_counts is None and single.prompt_middle is None and single.feats.shape[0] == 3


def _expected_length(pb, key: str, waves, voices, table) -> int:
    p = pb.build_turn(TURNS[key], ANSWERS[key])
    text = len(p.prefix) + sum(len(m) for m in p.middle) + len(p.suffix) + len(p.answer)
    return text + sum(table[len(waves[w]) // 160] for w in voices[key])


def test_expanded_length_guard_fails_with_key_and_length_or_counts_a_skip(pb, corpus):
    table = [math.ceil(f / 2) for f in range(3001)]
    lengths = {k: _expected_length(pb, k, corpus["waves"], corpus["voices"], table) for k in TURNS}
    longest = max(lengths, key=lengths.get)
    assert longest == "two"
    limit = sorted(lengths.values())[-2]                                      # only "two" is over
    exp = SpeechExpansion(table, limit, "data.max_sample_tokens=test")
    st = TrainStream(_cfg(on_error="fail"), [corpus["jsonl"]], "features", CTC, pb, SIM, seed=1, expansion=exp)
    with pytest.raises(DataError, match=rf"'two'.*too_long_for_llm.*{lengths['two']} positions.*> {limit}"):
        next(iter(st))
    st = TrainStream(_cfg(batch_size=3, skip_check_after=1000), [corpus["jsonl"]], "features", CTC, pb, SIM, seed=1,
                     expansion=exp)
    b = next(iter(st))
    assert "two" not in b.keys and st.stats["skipped"] == {"too_long_for_llm": 1}
    ok = SpeechExpansion(table, lengths["two"], "x")
    (b,) = list(eval_batches(_cfg(), [corpus["jsonl"]], "features", CTC, pb, 4, expansion=ok))
    assert "two" in b.keys                                                   # equal to the limit is allowed


def test_speech_expansion_predicts_the_model_and_is_off_with_psd(tmp_path):
    from tasu.model.build import build_speech_llm

    cfg = load_config("llaso-tiny", [f"output_dir={tmp_path}/r", "data.max_sample_frames=400"])
    model = build_speech_llm(cfg).eval()
    exp = speech_expansion(model, "features", cfg.data)
    assert len(exp.table) == 401 and exp.limit == min(cfg.data.max_sample_tokens, model.max_positions)
    from tasu.types import SpeechBatch

    for f in (1, 2, 3, 7, 40, 233, 400):
        b = SpeechBatch(keys=["k"], tasks=["t"], prompt_prefix=[[]], prompt_suffix=[[]], answer=[[]],
                        references=[""], feats=torch.randn(1, f, 80), feat_lengths=torch.tensor([f]))
        _, n = model.speech_embeddings(b, "features")
        assert exp.positions(f) == int(n[0]) == math.ceil(math.ceil(f / 2) / 2)   # Whisper /2, stacking /2
    assert speech_expansion(model, "simulated", cfg.data) is None
    model.psd_threshold = 0.9
    assert speech_expansion(model, "features", cfg.data) is None


def test_simulated_mode_prompts_the_own_turn_and_skips_multi_voice_records(pb, corpus):
    plan = build_stages("simulated", _cfg(), CTC, pb, SIM, train=True)
    src = resolve_source(SourceConfig(path=corpus["jsonl"]), 0, "data.train.0")
    faults = FaultCounter(1.0, 1000, "skip")
    got = {}
    for item in read_part(src, 0, 0, 1, 0, False, True):
        s = prepare(plan, item, faults)
        if s is not None:
            got[s["__key__"]] = s
    assert list(got) == ["ta"]                        # at / pa: no GT to simulate; two: two voices, one transcript
    assert faults.skipped == {"no_transcript": 2, "multi_audio_text": 1}
    p = pb.build_turn(TURNS["ta"], ANSWERS["ta"])
    assert (got["ta"]["prompt_prefix"], got["ta"]["prompt_suffix"], got["ta"]["answer"]) == (p.prefix, p.suffix,
                                                                                              p.answer)


def test_the_shipped_llaso_tiny_set_is_small_reproducible_and_covers_the_modalities(tmp_path):
    shipped = ASSETS / "llaso_tiny"
    assert sum(p.stat().st_size for p in shipped.iterdir()) < 500_000
    os.symlink(ASSETS / "tone_speech", tmp_path / "tone_speech")
    paths = write_llaso_tiny(tmp_path / "llaso_tiny", tmp_path / "tone_speech")
    for name, p in paths.items():
        assert p.read_text() == (shipped / f"{name}.jsonl").read_text(), name
    new_clips = sorted(x.name for x in (tmp_path / "llaso_tiny").glob("*.flac"))
    assert new_clips == sorted(x.name for x in shipped.glob("*.flac"))
    for name in new_clips:
        assert np.array_equal(sf.read(tmp_path / "llaso_tiny" / name)[0], sf.read(shipped / name)[0]), name
    recs = list(read_manifest(shipped / "train.jsonl"))
    assert all(isinstance(r, Record) for r in recs)                          # no bad record
    assert {r.modality for r in recs} == {MODALITY_TEXT_AUDIO, MODALITY_AUDIO_TEXT, MODALITY_PURE_AUDIO}
    assert any(len(r.audio) == 2 for r in recs) and all(Path(a).is_file() for r in recs for a in r.audio)
    assert {r.task for r in read_manifest(shipped / "align.jsonl")} == {"ASR"}
