"""The streaming loader on the tiny committed shards: modes, stages, batching, mixing, eval, faults, exact resume."""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from tasu.align.config import SimulationConfig
from tasu.data.audio_io import decode_audio_bytes, resample
from tasu.data.config import DataConfig, SourceConfig
from tasu.data.faults import DataError
from tasu.data.features import whisper_log_mel
from tasu.data.loader import TrainStream, eval_batches
from tasu.data.shard_index import read_index
from tasu.data.sources import read_part, resolve_source
from tasu.data.stages import build_stages
from tasu.model.llm import build_tiny_tokenizer
from tasu.text.ctc_tokenizer import CharCTCTokenizer
from tasu.text.prompts import PromptBuilder, load_prompts

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT / "tests/assets/shards/audio"
TEXT = ROOT / "tests/assets/shards/text"
TINY_TEXT = ROOT / "tasu/assets/tiny_text.txt"
CTC = CharCTCTokenizer()
SIM = SimulationConfig()


@pytest.fixture(scope="module")
def pb():
    return PromptBuilder(build_tiny_tokenizer(str(TINY_TEXT), 160), load_prompts())


def make_cfg(**kw) -> DataConfig:
    return DataConfig(**{"batch_size": 2, "num_workers": 0, "min_sample_frames": 5, "shuffle_buffer": 4, **kw})


def stream(pb, sources, mode="simulated", rank=0, world=1, seed=1, **kw) -> TrainStream:
    return TrainStream(make_cfg(**kw), sources, mode, CTC, pb, SIM, rank, world, seed)


def take(it, n):
    out = []
    for _ in range(n):
        out.append(next(it))
    return out


def assert_same_batch(a, b):
    assert a.keys == b.keys and a.tasks == b.tasks and a.references == b.references
    assert (a.prompt_prefix, a.prompt_suffix, a.answer) == (b.prompt_prefix, b.prompt_suffix, b.answer)
    assert a.audio_seconds == b.audio_seconds and a.ctc_targets == b.ctc_targets
    for name in ("feats", "feat_lengths"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None and y is None) or torch.equal(x, y)
    assert (a.posteriors is None) == (b.posteriors is None)
    if a.posteriors is not None:
        for name in ("ids", "smooth", "lengths"):
            assert torch.equal(getattr(a.posteriors, name), getattr(b.posteriors, name))


def test_simulated_mode_never_reads_audio(pb, monkeypatch):
    read = []
    orig = tarfile.TarFile.extractfile

    def spy(self, member):
        read.append(member.name if hasattr(member, "name") else member)
        return orig(self, member)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", spy)
    for name in ("decode_audio_bytes", "read_audio", "read_member", "audio_info"):
        monkeypatch.setattr(f"tasu.data.stages.{name}", lambda *a, **k: pytest.fail("audio was read"))
    st = stream(pb, [str(AUDIO), {"path": str(TINY_TEXT), "weight": 2.0}], "simulated")
    batches = take(iter(st), 12)
    assert read and all(n.endswith(".json") for n in read)
    assert all(b.feats is None and b.posteriors is not None and b.posteriors.is_sparse for b in batches)
    keys = {k for b in batches for k in b.keys}
    assert any(k.startswith("tiny-audio-") for k in keys) and any(k.startswith("tiny_text-") for k in keys)
    for b in batches:
        assert all(a and a[-1] == pb.eos_id for a in b.answer) and b.audio_seconds == 0.0
        frames = b.posteriors.lengths.tolist()
        assert all(0 < f <= len(CTC.encode(r)) for f, r in zip(frames, b.references))


def test_stages_are_pure_and_write_what_they_declare(pb):
    cfg = make_cfg(spec_augment=True)
    plan = build_stages("features", cfg, CTC, pb, SIM, train=True, seed=3)
    src = resolve_source(SourceConfig(path=str(AUDIO)), 0, "data.train.0")
    s = next(read_part(src, 0, 0, 1, 0, False, False))
    for stage in plan.pre["audio"] + plan.post["audio"]:
        frozen = dict(s)
        out = stage(s)
        assert set(s) == set(frozen) and all(s[k] is frozen[k] for k in frozen)  # input untouched
        assert set(stage.writes) <= set(out), stage
        s = out
    assert s["feats"].shape == (s["num_frames"], 80) and "audio_bytes" not in s and "audio" not in s


def test_audio_batches_respect_the_frame_budget_and_match_the_features(pb):
    st = stream(pb, [str(AUDIO)], "features", max_frames=100, max_sample_frames=60, num_buckets=3)
    batches = take(iter(st), 10)
    src = resolve_source(SourceConfig(path=str(AUDIO)), 0, "k")
    decoded = {s["__key__"]: decode_audio_bytes(s["audio_bytes"]) for s in read_part(src, 0, 0, 1, 0, False, False)}
    for b in batches:
        assert b.posteriors is None and b.feats.shape[0] == len(b)
        assert len(b) * int(b.feat_lengths.max()) <= 100
        for i, k in enumerate(b.keys):
            audio, sr = decoded[k]
            ref = whisper_log_mel(resample(audio, sr, 16000))
            n = int(b.feat_lengths[i])
            assert torch.allclose(b.feats[i, :n], ref, atol=1e-6) and not b.feats[i, n:].any()
        assert abs(b.audio_seconds - sum(len(decoded[k][0]) / 8000 for k in b.keys)) < 1e-9
        assert b.ctc_targets == [CTC.encode(r) for r in b.references]  # GT = target in the tiny set
    assert len({len(b) for b in batches}) > 1  # dynamic sizes


def test_mixing_weights_and_homogeneous_batches(pb):
    st = stream(pb, [{"path": str(TINY_TEXT), "weight": 0.7}, {"path": str(TEXT), "weight": 0.3}], batch_size=4)
    it = iter(st)
    counts = Counter()
    for _ in range(100):
        next(it)
        counts.update(st.last_info["sources"])
    assert abs(counts[1] / sum(counts.values()) - 0.3) < 0.06
    st = stream(pb, [{"path": str(TEXT), "kind": "text"}, str(AUDIO)], "features", batch_size=3)
    kinds = Counter()
    for b in take(iter(st), 12):
        if b.feats is None:
            assert b.posteriors is not None and all(k.startswith("tiny_text-") for k in b.keys)
            assert b.ctc_targets is None
            kinds["text"] += 1
        else:
            assert b.posteriors is None and all(k.startswith("tiny-audio-") for k in b.keys)
            kinds["audio"] += 1
    assert kinds["text"] and kinds["audio"]


def test_text_batches_respect_the_token_budget(pb):
    st = stream(pb, [str(TINY_TEXT)], max_tokens=600, max_sample_tokens=150, num_buckets=5)
    sizes = set()
    for b in take(iter(st), 15):
        seq = [len(p) + int(t) + len(q) + len(a) for p, t, q, a in
               zip(b.prompt_prefix, b.posteriors.lengths, b.prompt_suffix, b.answer)]
        assert len(b) * max(seq) <= 600 and max(seq) <= 150
        sizes.add(len(b))
    assert len(sizes) > 1


def test_each_sample_once_per_epoch_with_workers(pb):
    st = stream(pb, [str(TEXT)], batch_size=2, num_workers=2, num_buckets=0)
    it = iter(st)
    seen = Counter()
    for _ in range(14):
        b = next(it)
        seen.update((k, e) for k, e in zip(b.keys, st.last_info["sample_epochs"]))
    epoch0 = {k: n for (k, e), n in seen.items() if e == 0}
    assert len(epoch0) == 12 and set(epoch0.values()) == {1}
    assert st.stats["epochs"] == {"text": 2} and st.samples_per_epoch() == {"text": 12}


def test_eval_batches_are_ordered_unshuffled_and_complete(pb):
    cfg = make_cfg(features="fbank")
    batches = list(eval_batches(cfg, [str(AUDIO)], "features", CTC, pb, batch_size=4))
    assert all(b.feats.shape[2] == 80 and b.feats.shape[1] == int(b.feat_lengths.max()) for b in batches)
    keys = [k for b in batches for k in b.keys]
    assert keys == [f"tiny-audio-{i}" for i in range(6)] and [len(b) for b in batches] == [4, 2]
    assert all(a == [] for b in batches for a in b.answer)
    lines = [x.strip() for x in TINY_TEXT.read_text().splitlines() if x.strip()]
    assert [r for b in batches for r in b.references] == lines[:6]
    parts = [[k for b in eval_batches(cfg, [str(TEXT)], "simulated", CTC, pb, 5, rank=r, world_size=2)
              for k in b.keys] for r in (0, 1)]
    assert sorted(parts[0] + parts[1]) == sorted(f"tiny_text-{i}" for i in range(1, 13))
    assert len(parts[0]) == len(parts[1]) == 6


def test_pipe_and_brace_urls(pb, caplog):
    cfg = make_cfg()
    url = f"pipe:cat {TEXT}/shard-00000{{0..2}}.tar | cat"  # the index entry is found by the name in the command
    src = {"path": url, "index": str(TEXT / "index.json")}
    with caplog.at_level(logging.WARNING, logger="tasu.data"):
        keys = [k for b in eval_batches(cfg, [src], "simulated", CTC, pb, 5) for k in b.keys]
    assert "in no index" not in caplog.text
    assert keys == [f"tiny_text-{i}" for i in range(1, 13)]
    keys2 = [k for b in eval_batches(cfg, [f"{TEXT}/shard-00000{{0..2}}.tar"], "simulated", CTC, pb, 5)
             for k in b.keys]
    assert keys2 == keys
    st = stream(pb, [src], batch_size=3, num_workers=2, num_buckets=0)
    assert len({k for b in take(iter(st), 4) for k in b.keys}) == 12  # 2 workers x 2 batches x 3 = one epoch


@pytest.mark.parametrize("case", ["simulated_w0", "features_mixed_w2"])
def test_resume_gives_the_uninterrupted_batches(pb, case):
    if case == "simulated_w0":
        sources, mode, kw = [str(TEXT), {"path": str(TINY_TEXT), "weight": 0.5}], "simulated", {}
    else:
        sources, mode = [{"path": str(TEXT), "kind": "text", "weight": 0.5}, str(AUDIO)], "features"
        kw = {"num_workers": 2, "spec_augment": True, "max_frames": 120, "max_sample_frames": 60, "num_buckets": 4}
    total, cut = 11, 5
    full = stream(pb, sources, mode, **kw)
    ref = take(iter(full), total)
    first = stream(pb, sources, mode, **kw)
    head = take(iter(first), cut)
    for a, b in zip(head, ref):
        assert_same_batch(a, b)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = stream(pb, sources, mode, **kw)
    resumed.load_state_dict(state)
    for a, b in zip(take(iter(resumed), total - cut), ref[cut:]):
        assert_same_batch(a, b)
    assert resumed.stats == full.stats
    # a fresh iterator over the same stream continues where the last one stopped
    again = stream(pb, sources, mode, **kw)
    take(iter(again), 3)
    assert_same_batch(next(iter(again)), ref[3])


def test_resume_with_another_setup(pb, caplog):
    st = stream(pb, [str(TEXT)], num_workers=0)
    take(iter(st), 3)
    state = st.state_dict()
    other = stream(pb, [str(TEXT)], num_workers=2)
    with pytest.raises(ValueError, match="num_workers: saved 1, now 2"):
        other.load_state_dict(state)
    with caplog.at_level(logging.WARNING, logger="tasu.data"):
        other.load_state_dict(state, strict=False)
    assert "restarting at epoch" in caplog.text
    next(iter(other))
    assert other.last_info["sample_epochs"][0] >= 1


def _damaged_copy(tmp_path: Path) -> tuple[Path, str, str]:
    """The audio shards with sample 0's FLAC bytes garbled and sample 1's tar header destroyed."""
    out = tmp_path / "audio"
    shutil.copytree(AUDIO, out)
    sh = read_index(out / "index.json").shards[0]
    data = bytearray((out / "shard-000000.tar").read_bytes())
    flac_at = sh.offsets[0] + 3 * 512  # json header, json data (< 512 bytes), flac header
    assert data[flac_at:flac_at + 4] == b"fLaC"
    data[flac_at:flac_at + 64] = b"\xab" * 64
    data[sh.offsets[1]:sh.offsets[1] + 512] = bytes(range(256)) * 2
    (out / "shard-000000.tar").write_bytes(bytes(data))
    return out, "tiny-audio-0", f"{out}/shard-000000.tar#1"


def test_read_faults_are_skipped_counted_and_logged(pb, tmp_path, caplog):
    damaged, bad_key, bad_where = _damaged_copy(tmp_path)
    with caplog.at_level(logging.WARNING, logger="tasu.data"):
        st = stream(pb, [str(damaged)], "features", max_skip_ratio=1.0, shuffle_buffer=0, batch_size=2)
        keys = Counter(k for b in take(iter(st), 6) for k in b.keys)
    assert st.stats["skipped"]["corrupt_audio"] >= 1 and st.stats["skipped"]["corrupt_tar"] >= 1
    assert bad_key not in keys and "tiny-audio-1" not in keys
    assert {f"tiny-audio-{i}" for i in range(2, 6)} <= set(keys)
    assert f"sample {bad_key!r} (corrupt_audio)" in caplog.text and bad_where in caplog.text
    st = stream(pb, [str(damaged)], "features", max_skip_ratio=0.1, skip_check_after=3)
    with pytest.raises(DataError, match="data.max_skip_ratio"):
        take(iter(st), 10)
    st = stream(pb, [str(damaged)], "features", on_error="fail", shuffle_buffer=0)
    with pytest.raises(DataError, match="data.on_error=fail"):
        take(iter(st), 10)


def test_in_memory_psslm_manifest_with_a_bad_record(pb, tmp_path, caplog):
    import soundfile as sf

    recs = []
    for i in range(3):
        t = np.arange(2400 + 800 * i) / 16000
        sf.write(tmp_path / f"{i}.wav", 0.1 * np.sin(2 * np.pi * 300 * t), 16000)
        recs.append({"key": f"m{i}", "task": "ASR", "target": f"word {i}", "path": str(tmp_path / f"{i}.wav"),
                     "GT": f"word {i}"})
    recs.append({"key": "m0", "task": "ASR", "target": "dup", "path": "x.wav", "GT": "dup"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    with caplog.at_level(logging.WARNING, logger="tasu.data"):
        st = stream(pb, [str(tmp_path / "m.jsonl")], "features", max_skip_ratio=1.0)
    assert "duplicate_key" in caplog.text
    b = next(iter(st))
    assert b.feats is not None and st.stats["skipped"] == {"duplicate_key": 1}
    assert set(b.feat_lengths.tolist()) <= {15, 20, 25}


def test_collate_pads_features_and_refuses_mixed_batches():
    from tasu.data.collate import collate

    def audio(key, frames, targets):
        return {"__key__": key, "task": "ASR", "prompt_prefix": [1], "prompt_suffix": [2], "answer": [3, 4],
                "reference": "r", "feats": torch.ones(frames, 80), "audio_seconds": frames / 100,
                "ctc_targets": targets}

    b = collate([audio("a", 3, [5]), audio("b", 5, [6, 7])])
    assert b.feats.shape == (2, 5, 80) and b.feat_lengths.tolist() == [3, 5] and not b.feats[0, 3:].any()
    assert b.ctc_targets == [[5], [6, 7]] and abs(b.audio_seconds - 0.08) < 1e-9 and b.posteriors is None
    assert collate([audio("a", 3, [5]), audio("b", 5, [])]).ctc_targets is None
    text = {k: v for k, v in audio("t", 2, []).items() if k != "feats"} | {"sim": None}
    with pytest.raises(ValueError, match="all text"):
        collate([audio("a", 3, [5]), text])


def test_shards_without_an_index_are_scanned(pb, tmp_path, caplog):
    for p in TEXT.glob("*.tar"):
        shutil.copy(p, tmp_path / p.name)
    with caplog.at_level(logging.WARNING, logger="tasu.data"):
        src = resolve_source(SourceConfig(path=str(tmp_path / "shard-*.tar")), 0, "data.train.0")
    assert "in no index" in caplog.text
    ref = read_index(TEXT / "index.json").shards
    assert [(s.samples, s.offsets) for s in src.shards] == [(s.samples, s.offsets) for s in ref]
    keys = [k for b in eval_batches(make_cfg(), [str(tmp_path)], "simulated", CTC, pb, 4) for k in b.keys]
    assert keys == [f"tiny_text-{i}" for i in range(1, 13)]
