"""`tasu shard`: every input format, every bad-record kind, fail mode, re-runs, and garbage manifests."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasu.data.audio_io import decode_audio_bytes
from tasu.data.manifests import MODALITY_AUDIO_TEXT, MODALITY_PURE_AUDIO, MODALITY_TEXT_AUDIO
from tasu.data.shard import ShardError, ShardOptions, shard_main, write_shards
from tasu.data.shard_index import read_index
from tasu.data.tar_io import read_range

from .fuzz_utils import nonblank_lines


def tone(seconds: float, rate: int, f: float = 300.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32)


def wav(path: Path, seconds: float = 0.2, rate: int = 16000, f: float = 300.0, fmt: str = "WAV") -> np.ndarray:
    x = tone(seconds, rate, f)
    sf.write(path, x, rate, format=fmt, subtype="PCM_16")
    return np.round(x * 32768) / 32768  # what 16-bit storage keeps


def jsonl(path: Path, recs: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in recs), encoding="utf-8")
    return path


def samples(out: Path) -> list[dict]:
    """All samples of a shard folder, with parsed JSON and decoded audio."""
    out_samples = []
    for sh in read_index(out / "index.json").shards:
        for s in read_range(sh.url, sh.offsets, 0, sh.samples):
            assert isinstance(s, dict), s
            s["meta"] = json.loads(s["json"])
            if "flac" in s:
                s["audio"], s["rate"] = decode_audio_bytes(s["flac"])
            out_samples.append(s)
    return out_samples


def psslm(key, path, target="a b c", task="ASR", gt=None):
    return {"key": key, "task": task, "target": target, "path": str(path), "GT": target if gt is None else gt}


def test_psslm_wav_flac_and_kaldi_ark(tmp_path):
    a = wav(tmp_path / "a.wav", 0.25, f=200)
    b = wav(tmp_path / "b.flac", 0.3, f=400, fmt="FLAC")
    # a Kaldi archive with three objects: a WAV (wave holder), a float vector at int16 scale, kaldiio AUDIO bytes
    c, d, e = tone(0.2, 16000, 500), tone(0.15, 16000, 600), tone(0.1, 16000, 700)
    ark, offsets = io.BytesIO(), {}
    buf = io.BytesIO()
    sf.write(buf, c, 16000, format="WAV", subtype="PCM_16")
    ark.write(b"c "), offsets.__setitem__("c", ark.tell()), ark.write(buf.getvalue())
    pcm = np.round(d * 32768).astype(np.float32)
    ark.write(b"d "), offsets.__setitem__("d", ark.tell())
    ark.write(b"\0BFV " + b"\x04" + struct.pack("<i", pcm.size) + pcm.tobytes())
    buf = io.BytesIO()
    sf.write(buf, e, 16000, format="FLAC", subtype="PCM_16")
    data = buf.getvalue()
    ark.write(b"e "), offsets.__setitem__("e", ark.tell())
    ark.write(b"AUDIO" + bytes([2]) + len(data).to_bytes(2, "little") + data)
    (tmp_path / "x.ark").write_bytes(ark.getvalue())
    man = jsonl(tmp_path / "m.jsonl", [psslm("a", "a.wav"), psslm("b", tmp_path / "b.flac", task="EN2DE", gt="g b"),
                                       *(psslm(k, f"{tmp_path}/x.ark:{offsets[k]}") for k in "cde")])
    s = write_shards([str(man)], str(tmp_path / "out"), ShardOptions(shard_size=2))
    assert (s.samples, s.num_bad, len(s.shards)) == (5, 0, 3)
    got = {x["meta"]["key"]: x for x in samples(tmp_path / "out")}
    assert list(got) == ["a", "b", "c", "d", "e"]
    for k, ref in zip("abcde", (a, b, np.round(c * 32768) / 32768, np.round(d * 32768) / 32768,
                                np.round(e * 32768) / 32768)):
        assert got[k]["rate"] == 16000 and got[k]["meta"]["sample_rate"] == 16000
        assert got[k]["meta"]["num_samples"] == ref.size
        np.testing.assert_allclose(got[k]["audio"], ref, atol=1.5 / 32768)
    assert got["b"]["meta"] | {} == got["b"]["meta"]
    assert (got["b"]["meta"]["task"], got["b"]["meta"]["GT"], got["b"]["meta"]["format"]) == ("EN2DE", "g b", "ps-slm")
    idx = json.loads((tmp_path / "out/index.json").read_text())
    assert idx["total_samples"] == 5 and idx["kind"] == "audio" and idx["sample_rate"] == 16000
    assert abs(idx["total_audio_seconds"] - (0.25 + 0.3 + 0.2 + 0.15 + 0.1)) < 1e-6
    assert idx["total_text_tokens"] == 3 * 5 and [x["samples"] for x in idx["shards"]] == [2, 2, 1]


def test_llaso_json_and_jsonl_modalities(tmp_path):
    wav(tmp_path / "v1.wav"), wav(tmp_path / "v2.wav", 0.3)
    recs = [
        {"id": "t", "voice": ["v1.wav"], "conversations": [
            {"from": "human", "value": "Transcribe this audio.\n<audio>"}, {"from": "gpt", "value": "hello"}]},
        {"id": "u", "voice": "v1.wav", "task": "QA", "conversations": [
            {"from": "human", "value": "<audio>\nThe sky is blue."}, {"from": "gpt", "value": "yes"}]},
        {"id": 7, "voice": ["v1.wav", "v2.wav"], "conversations": [
            {"from": "human", "value": "<audio> <audio>"}, {"from": "gpt", "value": "two clips"}]},
    ]
    (tmp_path / "l.json").write_text(json.dumps(recs, indent=2), encoding="utf-8")
    jsonl(tmp_path / "l.jsonl", [dict(r, id=f"j{i}") for i, r in enumerate(recs)])
    s = write_shards([str(tmp_path / "l.json"), str(tmp_path / "l.jsonl")], str(tmp_path / "out"))
    assert (s.samples, s.num_bad) == (6, 0)
    got = {x["meta"]["key"]: x for x in samples(tmp_path / "out")}
    assert got["t"]["meta"]["modality"] == MODALITY_TEXT_AUDIO
    assert got["t"]["meta"]["instruction"] == "Transcribe this audio."
    assert got["u"]["meta"]["modality"] == MODALITY_AUDIO_TEXT and got["u"]["meta"]["task"] == "QA"
    assert got["7"]["meta"]["modality"] == MODALITY_PURE_AUDIO and got["7"]["meta"]["num_voices"] == 2
    assert "1.flac" in got["7"] and "1.flac" not in got["t"]
    assert decode_audio_bytes(got["7"]["1.flac"])[0].size == int(0.3 * 16000)
    assert got["t"]["meta"]["target"] == "hello" and got["t"]["meta"]["format"] == "llaso"
    # line numbers of a JSON list point at each record's start
    starts = [n for n, x in enumerate((tmp_path / "l.json").read_text().splitlines(), 1) if x == "  {"]
    assert [got[k]["meta"]["source"]["line"] for k in ("t", "u", "7")] == starts
    idx = json.loads((tmp_path / "out/index.json").read_text())
    assert idx["modalities"] == {MODALITY_TEXT_AUDIO: 2, MODALITY_AUDIO_TEXT: 2, MODALITY_PURE_AUDIO: 2}


def test_plain_text_and_text_jsonl(tmp_path):
    (tmp_path / "t.txt").write_text("the cat sat\n\n  a   dog ran  \n", encoding="utf-8")
    jsonl(tmp_path / "t.jsonl", [{"text": "guten tag", "task": "EN2DE", "target": "good day", "key": "g"},
                                 {"text": "hello there"}])
    s = write_shards([str(tmp_path / "t.txt"), str(tmp_path / "t.jsonl")], str(tmp_path / "out"),
                     ShardOptions(num_shards=2, task="ASR"))
    assert (s.samples, s.num_bad, len(s.shards)) == (4, 0, 2)
    got = {x["meta"]["key"]: x for x in samples(tmp_path / "out")}
    assert set(got) == {"t-1", "t-3", "g", "t-2"}
    assert got["t-3"]["meta"] | {} == got["t-3"]["meta"]
    assert (got["t-3"]["meta"]["GT"], got["t-3"]["meta"]["kind"]) == ("a dog ran", "text")
    assert (got["g"]["meta"]["GT"], got["g"]["meta"]["target"], got["g"]["meta"]["task"]) == ("guten tag", "good day",
                                                                                             "EN2DE")
    assert all("flac" not in x for x in got.values())
    idx = read_index(tmp_path / "out/index.json")
    assert idx.kind == "text" and idx.sample_rate is None and [x.samples for x in idx.shards] == [2, 2]


BAD_CASES = {
    "invalid_json": '{"key": "x", "task": ',
    "not_an_object": "[1, 2]",
    "missing_field": {"key": "m", "task": "ASR", "target": "a", "GT": "a"},
    "bad_field_type": {"key": "t", "task": "ASR", "target": 5, "path": "ok.wav", "GT": "a"},
    "empty_text": {"key": "e", "task": "ASR", "target": "  ", "path": "ok.wav", "GT": "a"},
    "duplicate_key": {"key": "ok", "task": "ASR", "target": "again", "path": "ok.wav", "GT": "again"},
    "unreadable_audio": {"key": "u", "task": "ASR", "target": "a", "path": "nowhere.wav", "GT": "a"},
    "corrupt_audio": {"key": "c", "task": "ASR", "target": "a", "path": "garbage.wav", "GT": "a"},
    "empty_audio": {"key": "z", "task": "ASR", "target": "a", "path": "empty.wav", "GT": "a"},
    "wrong_sample_rate": {"key": "r", "task": "ASR", "target": "a", "path": "r8k.wav", "GT": "a"},
    "invalid_text": '{"key": "s", "task": "ASR", "target": "a\\ud800", "path": "ok.wav", "GT": "a"}',
    "bad_conversation": {"id": "bc", "voice": ["ok.wav"], "conversations": [{"from": "human", "value": "hi"}]},
    "audio_count_mismatch": {"id": "am", "voice": ["ok.wav", "ok.wav"], "conversations": [
        {"from": "human", "value": "<audio>"}, {"from": "gpt", "value": "x"}]},
}


def _bad_inputs(tmp_path: Path) -> Path:
    wav(tmp_path / "ok.wav"), wav(tmp_path / "r8k.wav", rate=8000)
    (tmp_path / "garbage.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" * 4)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    good = {"key": "ok", "task": "ASR", "target": "fine", "path": "ok.wav", "GT": "fine"}
    return jsonl(tmp_path / "m.jsonl", [good, *BAD_CASES.values()])


def test_every_bad_record_kind_is_reported_and_counted(tmp_path, capsys):
    man = _bad_inputs(tmp_path)
    (tmp_path / "bin.jsonl").write_bytes(b'{"key": "b\xff"}\n')
    rc = shard_main([str(man), str(tmp_path / "bin.jsonl"), str(tmp_path / "out")])
    err = capsys.readouterr()
    assert rc == 0 and "wrote 1 samples" in err.out
    for line, (reason, rec) in enumerate(BAD_CASES.items(), start=2):
        obj = rec if isinstance(rec, dict) else (json.loads(rec) if reason == "invalid_text" else None)
        key = obj.get("key", obj.get("id")) if isinstance(obj, dict) else None
        expect = f"bad record {man}:{line}:" + (f" key={key!r}" if key else "") + f" {reason}:"
        assert expect in err.err, expect
    assert f"bad record {tmp_path / 'bin.jsonl'}:1: invalid_utf8:" in err.err
    counts = {r: 1 for r in BAD_CASES} | {"invalid_utf8": 1}
    assert json.loads((tmp_path / "out/index.json").read_text())["bad_records"] == counts
    assert all(f"{r}: 1" in err.out for r in counts)
    rows = [json.loads(x) for x in (tmp_path / "out/bad_records.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rows] == [*BAD_CASES, "invalid_utf8"] and rows[0]["line"] == 2


def test_resample_option_and_native_rates(tmp_path):
    wav(tmp_path / "r8k.wav", 0.3, rate=8000)
    man = jsonl(tmp_path / "m.jsonl", [psslm("r", "r8k.wav")])
    s = write_shards([str(man)], str(tmp_path / "a"), ShardOptions(resample=True))
    (x,) = samples(tmp_path / "a")
    assert s.samples == 1 and x["rate"] == 16000 and x["audio"].size == int(0.3 * 16000)
    write_shards([str(man)], str(tmp_path / "b"), ShardOptions(sample_rate=0))
    (y,) = samples(tmp_path / "b")
    assert y["rate"] == 8000 and y["meta"]["num_samples"] == int(0.3 * 8000)


def test_fail_mode_stops_with_the_message_and_writes_nothing(tmp_path, capsys):
    man = _bad_inputs(tmp_path)
    rc = shard_main([str(man), str(tmp_path / "out"), "--on-error", "fail"])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"tasu shard: error: {man}:2: invalid_json:" in err
    assert not (tmp_path / "out").exists()  # a failed run leaves no trace
    (tmp_path / "out").mkdir()
    (tmp_path / "out/keep.txt").write_text("x")
    assert shard_main([str(man), str(tmp_path / "out"), "--on-error", "fail"]) == 1
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    with pytest.raises(ShardError, match="no good record"):
        write_shards([str(jsonl(tmp_path / "bad.jsonl", ["{"]))], str(tmp_path / "o2"))


def test_rerun_replaces_the_shard_set_without_duplicates(tmp_path):
    (tmp_path / "t.txt").write_text("".join(f"sentence number {i}\n" for i in range(10)), encoding="utf-8")
    out = tmp_path / "out"
    write_shards([str(tmp_path / "t.txt")], str(out), ShardOptions(shard_size=2))
    assert len(list(out.glob("*.tar"))) == 5
    s = write_shards([str(tmp_path / "t.txt")], str(out), ShardOptions(num_shards=3))
    tars = sorted(p.name for p in out.glob("*.tar"))
    assert tars == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"] == s.shards
    keys = [x["meta"]["key"] for x in samples(out)]
    assert sorted(keys) == sorted(f"t-{i}" for i in range(1, 11))  # each once
    assert [x.samples for x in read_index(out / "index.json").shards] == [4, 3, 3]
    write_shards([str(tmp_path / "t.txt")], str(out), ShardOptions(num_shards=3))
    assert sorted(p.name for p in out.glob("*")) == ["bad_records.jsonl", "index.json", *tars]


def test_cli_arguments():
    assert shard_main(["--help"]) == 0
    assert shard_main(["only_one_arg"]) == 2
    assert shard_main(["a.jsonl", "out", "--shard-size", "3", "--num-shards", "2"]) == 2
    assert shard_main(["a.jsonl", "out", "--shard-size", "0"]) == 2


def test_member_names_are_tar_safe_and_unique(tmp_path):
    jsonl(tmp_path / "t.jsonl", [{"key": "a.b/c", "text": "one"}, {"key": "a_b_c", "text": "two"},
                                 {"key": "ü ñ", "text": "three"}])
    write_shards([str(tmp_path / "t.jsonl")], str(tmp_path / "out"))
    with tarfile.open(tmp_path / "out/shard-000000.tar") as t:
        names = t.getnames()
    assert names == ["a_b_c.json", "a_b_c_1.json", "___.json"]
    assert [x["meta"]["key"] for x in samples(tmp_path / "out")] == ["a.b/c", "a_b_c", "ü ñ"]


# --- garbage manifests -------------------------------------------------------------------------------------

_json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                            max_leaves=8)
_field_values = st.one_of(st.text(max_size=12), st.integers(), st.none(), st.just("ok.wav"), st.just("garbage.wav"),
                          st.lists(st.just("ok.wav"), max_size=2), _json_values)
_records = st.fixed_dictionaries({}, optional={f: _field_values for f in (
    "key", "task", "target", "path", "GT", "text", "voice", "conversations", "id")})
_lines = st.one_of(
    _records.map(json.dumps),
    _json_values.map(json.dumps),
    st.text(alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=30),
    st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")),
    st.sampled_from(['{"key": "s\\ud800", "text": "x"}', '{"text": "\\udfff"}', "\ufeff", '{"text": "\\u0000"}']),
    st.builds(lambda k, t: json.dumps({"key": k, "task": "ASR", "target": t, "path": "ok.wav", "GT": t}),
              st.text(max_size=6), st.text(max_size=6)),
)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_lines, min_size=1, max_size=12))
def test_garbage_manifests_never_crash_and_every_record_is_accounted_for(tmp_path, lines):
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    wav(work / "ok.wav", 0.05)
    (work / "garbage.wav").write_bytes(b"not audio at all")
    raw = [x if isinstance(x, bytes) else x.encode("utf-8") for x in lines]
    (work / "m.jsonl").write_bytes(b"\n".join(raw) + b"\n")
    reported = []
    try:
        s = write_shards([str(work / "m.jsonl")], str(work / "out"), report=reported.append)
    except ShardError:
        s = None
    good_lines = [x["meta"]["source"]["line"] for x in samples(work / "out")] if s is not None else []
    bad_lines = [b.line for b in reported]
    records = nonblank_lines(raw)
    assert sorted(good_lines + bad_lines) == records  # each non-blank line: one sample or one report
    assert all(b.reason and b.file.endswith("m.jsonl") for b in reported)
    if s is not None:
        assert s.samples == len(good_lines) and s.num_bad == len(bad_lines)


def test_relative_audio_paths_manifest_folder_first_then_working_directory(tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    wav(tmp_path / "m/near.wav", 0.1)
    (tmp_path / "audio").mkdir()
    wav(tmp_path / "audio/far.wav", 0.2)
    man = jsonl(tmp_path / "m/x.jsonl", [psslm("near", "near.wav"), psslm("far", "audio/far.wav")])
    monkeypatch.chdir(tmp_path)
    s = write_shards([str(man)], str(tmp_path / "out"))
    assert s.samples == 2 and s.num_bad == 0
    assert [x["meta"]["num_samples"] for x in samples(tmp_path / "out")] == [1600, 3200]
