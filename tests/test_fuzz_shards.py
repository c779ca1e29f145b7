"""Fuzzing `tasu shard` and the shard reader.

- `tasu shard` on garbage manifests pointing at good, missing and corrupt audio: every non-blank line becomes one
  sample or one reported bad record (file, line, reason), the summary and bad_records.jsonl agree, and every
  written sample reads back; random command lines return an exit code, never raise.
- The shard reader on shards with corrupted bytes (headers, members, truncation) and with fuzzed JSON members:
  only samples and TarFaults come out, and samples read + samples reported lost = the range asked for, both
  with byte offsets (seeking) and without (streaming); a garbage index.json is a ValueError naming it.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import strategies as st

from tasu.config.fields import ConfigError
from tasu.data.audio_io import encode_flac
from tasu.data.config import SourceConfig
from tasu.data.shard import ShardError, shard_main, write_shards
from tasu.data.shard_index import read_index, resolve_shard_source
from tasu.data.sources import ResolvedSource, read_part
from tasu.data.tar_io import ShardTarWriter, TarFault, read_range

from .fuzz_strategies import as_bytes, json_values, manifest_lines, mutated
from .fuzz_utils import fuzz_tests, nonblank_lines, tally, write_tally


@pytest.fixture(scope="module", autouse=True)
def _tally():
    yield
    write_tally(__name__)


def _wav(seconds: float = 0.05) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, (0.2 * np.sin(np.arange(int(16000 * seconds)) / 3)).astype(np.float32), 16000, format="WAV",
             subtype="PCM_16")
    return buf.getvalue()


GOOD_WAV = _wav()

# --- tasu shard -----------------------------------------------------------------------------------------------


def _shard_body(lines: list, garbage_audio: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        (work / "ok.wav").write_bytes(GOOD_WAV)
        (work / "garbage.wav").write_bytes(garbage_audio)
        raw = [as_bytes(x).replace(b"\n", b" ") for x in lines]
        (work / "m.jsonl").write_bytes(b"\n".join(raw) + b"\n")
        reported = []
        try:
            s = write_shards([str(work / "m.jsonl")], str(work / "out"), report=reported.append)
        except ShardError:
            s = None
        good = []
        if s is not None:
            for sh in read_index(work / "out/index.json").shards:
                for x in read_range(sh.url, sh.offsets, 0, sh.samples):
                    assert isinstance(x, dict), x  # what tasu shard wrote always reads back
                    good.append(json.loads(x["json"])["source"]["line"])
            # split on \n only: str.splitlines() also splits at U+0085 / U+2028, which JSON strings may hold
            rows = [json.loads(r) for r in (work / "out/bad_records.jsonl").read_text().split("\n") if r]
            assert [(r["line"], r["reason"]) for r in rows] == [(b.line, b.reason) for b in reported]
            assert s.samples == len(good) and s.num_bad == len(reported)
        else:
            assert not (work / "out").exists()
        expected = nonblank_lines(raw)
        assert sorted(good + [b.line for b in reported]) == expected  # read + skipped == total
        assert all(b.reason and b.line >= 1 for b in reported)
    tally("tasu shard", inputs=1, lines=len(expected), written=len(good), bad=len(reported))


_audio_lines = st.builds(lambda k, p: json.dumps({"key": k, "task": "ASR", "target": "a b", "path": p, "GT": "a b"}),
                         st.text(max_size=4), st.sampled_from(["ok.wav", "garbage.wav", "missing.wav", "ok.wav"]))
test_shard_manifests, test_shard_manifests_slow = fuzz_tests(
    40, 1500, lines=st.lists(st.one_of(manifest_lines, _audio_lines), min_size=1, max_size=8),
    garbage_audio=st.one_of(mutated([GOOD_WAV]), st.binary(max_size=64)))(_shard_body)

_argv_tokens = st.sampled_from(["--shard-size", "--num-shards", "--on-error", "--sample-rate", "--resample", "--task",
                                "--prefix", "0", "-1", "3", "skip", "fail", "x/y", "..", "", "-", "--help", "a.jsonl",
                                "out"])


def _argv_body(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "a.jsonl").write_text('{"text": "hello"}\n')
        import contextlib
        import os

        cwd = os.getcwd()
        os.chdir(d)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                rc = shard_main(argv)
        finally:
            os.chdir(cwd)
    assert rc in (0, 1, 2)
    tally("tasu shard argv", inputs=1, **{f"rc{rc}": 1})


test_shard_argv, test_shard_argv_slow = fuzz_tests(30, 500, argv=st.lists(_argv_tokens, max_size=6))(_argv_body)

# --- the shard reader -------------------------------------------------------------------------------------------


def _shard_bytes(n: int) -> tuple[bytes, list[int]]:
    with tempfile.TemporaryDirectory() as d:
        w = ShardTarWriter(f"{d}/s.tar")
        flac = encode_flac((0.1 * np.sin(np.arange(400) / 4)).astype(np.float32), 16000)
        for i in range(n):
            meta = {"key": f"k{i}", "task": "ASR", "target": "a b", "GT": "a b", "kind": "audio" if i % 2 else "text"}
            w.write(f"k{i}", {"json": json.dumps(meta).encode(), **({"flac": flac} if i % 2 else {})})
        offsets = w.close()
        return Path(f"{d}/s.tar").read_bytes(), offsets


SHARD, OFFSETS = _shard_bytes(5)


@st.composite
def _corrupt_shard(draw) -> bytes:
    """The 5-sample shard with bytes overwritten in tar headers (first 512 bytes of a sample) or anywhere."""
    data = bytearray(SHARD)
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.booleans()):
            start = draw(st.sampled_from(OFFSETS[:-1]))
            pos = start + draw(st.integers(0, 511))
        else:
            pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    if draw(st.integers(0, 4)) == 0:
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


def _source(url: str, offsets: list[int] | None, n: int) -> ResolvedSource:
    from tasu.data.shard_index import ShardInfo

    return ResolvedSource(SourceConfig(path=url), 0, "fuzz", "mixed", shards=[ShardInfo(url, n, offsets)])


def _reader_body(data: bytes, start: int, span: int, seek: bool) -> None:
    n = len(OFFSETS) - 1
    start, stop = min(start, n), min(start + span, n)
    with tempfile.TemporaryDirectory() as d:
        url = f"{d}/s.tar"
        Path(url).write_bytes(data)
        items = list(read_range(url, OFFSETS if seek else None, start, stop))
        got = sum(1 for x in items if isinstance(x, dict))
        lost = sum(x.count for x in items if isinstance(x, TarFault))
        assert all(isinstance(x, (dict, TarFault)) for x in items)
        assert got + lost == stop - start, (got, lost, start, stop, items)  # read + skipped == total
        assert all(x.reason and x.where.startswith(url) for x in items if isinstance(x, TarFault))
        # one level up: the epoch part of a source built on this shard, as the loader reads it
        samples = list(read_part(_source(url, OFFSETS if seek else None, n), 0, 0, 1, 0, False, False))
        ok = sum(1 for x in samples if isinstance(x, dict))
        bad = sum(x.count for x in samples if isinstance(x, TarFault))
        assert ok + bad == n
        for x in samples:
            if isinstance(x, dict):
                assert isinstance(x["__key__"], str) and x["__input__"] in ("text", "audio")
    tally("shard reader", inputs=1, samples=stop - start + n, read=got + ok, lost=lost + bad)


test_corrupt_shard_reader, test_corrupt_shard_reader_slow = fuzz_tests(
    120, 3000, data=_corrupt_shard(), start=st.integers(0, 5), span=st.integers(0, 6), seek=st.booleans())(
    _reader_body)

_json_members = st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=30),
                          st.fixed_dictionaries({"key": st.one_of(st.text(max_size=4), st.integers()),
                                                 "task": st.just("ASR"), "target": st.just("a")},
                                                optional={"GT": json_values, "kind": st.sampled_from(["audio", "text",
                                                                                                      3]),
                                                          "num_voices": json_values}).map(
                              lambda m: json.dumps(m).encode()),
                          st.sampled_from([b"[" * 20000, b'{"key": ' + b"7" * 5000 + b"}"]))


def _members_body(members: list[bytes], flac: list[bool]) -> None:
    with tempfile.TemporaryDirectory() as d:
        w = ShardTarWriter(f"{d}/s.tar")
        for i, (m, f) in enumerate(zip(members, flac)):
            w.write(f"k{i}", {"json": m, **({"flac": encode_flac(np.zeros(10, np.float32), 16000)} if f else {})})
        offsets = w.close()
        n = len(members)
        for as_text in (False, True):
            items = list(read_part(_source(f"{d}/s.tar", offsets, n), 0, 0, 1, 0, False, as_text))
            ok = sum(1 for x in items if isinstance(x, dict))
            bad = sum(x.count for x in items if isinstance(x, TarFault))
            assert ok + bad == n
            for x in items:
                if isinstance(x, TarFault):
                    assert x.reason == "corrupt_member" and x.where.startswith(f"{d}/s.tar#")
                else:
                    assert all(isinstance(x["meta"][f], str) for f in ("key", "task", "target"))
    tally("shard JSON members", inputs=1, samples=n, read=ok, lost=bad)


test_fuzzed_json_members, test_fuzzed_json_members_slow = fuzz_tests(
    60, 1500, members=st.lists(_json_members, min_size=1, max_size=4),
    flac=st.lists(st.booleans(), min_size=4, max_size=4))(_members_body)


def _index_body(doc: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "index.json").write_bytes(doc)
        for call in (lambda: read_index(Path(d) / "index.json"), lambda: resolve_shard_source(d)):
            try:
                call()
                tally("index.json", inputs=1, accepted=1)
            except (ValueError, ConfigError) as e:
                assert "index.json" in str(e) or d in str(e), e
                tally("index.json", inputs=1, refused=1)


_index_docs = st.one_of(
    st.fixed_dictionaries({"format": st.just("tasu-webdataset"), "version": st.just(1)},
                          optional={"shards": json_values, "kind": json_values, "sample_rate": json_values}).map(
        lambda x: json.dumps(x).encode()),
    st.builds(lambda s: json.dumps({"format": "tasu-webdataset", "version": 1, "shards": s}).encode(),
              st.lists(st.fixed_dictionaries({}, optional={"url": json_values, "samples": json_values,
                                                           "offsets": json_values, "bytes": json_values}),
                       max_size=3)),
    json_values.map(lambda x: json.dumps(x).encode()), st.binary(max_size=30),
    st.just(b'{"format": "tasu-webdataset", "version": 1, "shards": ' + b"[" * 20000 + b"}"))
test_garbage_index, test_garbage_index_slow = fuzz_tests(80, 1500, doc=_index_docs)(_index_body)


def test_regression_output_folder_that_is_a_file_is_a_clean_error(tmp_path, capsys):
    """`tasu shard 0 a.jsonl`: OUT_DIR names an existing file; mkdir's FileExistsError used to escape."""
    (tmp_path / "a.jsonl").write_text('{"text": "hello"}\n')
    (tmp_path / "out").write_text("a file")
    assert shard_main([str(tmp_path / "a.jsonl"), str(tmp_path / "out")]) == 1
    assert "cannot create the output folder" in capsys.readouterr().err


@pytest.mark.parametrize("shards, match", [(5, "'shards' must be a list"), ([7], "entry 0 is malformed"),
                                           ([{"url": 3, "samples": 1}], "'url'"),
                                           ([{"url": "a.tar", "samples": "2"}], "'samples'"),
                                           ([{"url": "a.tar", "samples": 1, "offsets": 4}], "'offsets'"),
                                           ([{"url": "a.tar", "samples": 1, "offsets": [9, 3]}], "increasing")])
def test_regression_malformed_index_entries_are_value_errors(tmp_path, shards, match):
    """A damaged index.json used to raise TypeError (enumerate(5), len(4), 2 + 1 on a str) inside the loader."""
    (tmp_path / "index.json").write_text(json.dumps({"format": "tasu-webdataset", "version": 1, "shards": shards}))
    with pytest.raises(ValueError, match=match):
        read_index(tmp_path / "index.json")


def test_regression_deep_json_member_and_bad_num_voices_are_corrupt_members(tmp_path):
    """A JSON member nested past the recursion limit (RecursionError) or claiming num_voices=10**12 (a list of
    10**12 member names) used to escape or hang the reader."""
    w = ShardTarWriter(f"{tmp_path}/s.tar")
    flac = encode_flac(np.zeros(10, np.float32), 16000)
    w.write("a", {"json": b"[" * 50000})
    w.write("b", {"json": json.dumps({"key": "b", "task": "ASR", "target": "t", "kind": "audio",
                                      "num_voices": 10**12}).encode(), "flac": flac})
    offsets = w.close()
    items = list(read_part(_source(f"{tmp_path}/s.tar", offsets, 2), 0, 0, 1, 0, False, False))
    assert [(type(x).__name__, x.reason) for x in items] == [("TarFault", "corrupt_member")] * 2


# --- the whole read pipeline (reader -> pre stages -> batches -> audio decoding) on corrupted audio shards -------

AUDIO_SHARDS = Path(__file__).resolve().parent / "assets" / "shards" / "audio"
_AUDIO_TARS = sorted(AUDIO_SHARDS.glob("*.tar"))


class _Recorded(list):
    pass


def _pipeline_counts(mutations: list[tuple[int, int, int]], cut: int | None) -> tuple[int, int, int]:
    """Sample accounting of `eval_batches` over both audio shards with bytes overwritten: every sample is either
    in a batch, or skipped (counted by reason, logged with its place), or filtered; never both, never lost."""
    import tasu.data.loader as loader_mod
    from tasu.data.config import DataConfig
    from tasu.data.faults import FaultCounter
    from tasu.data.loader import eval_batches
    from tasu.text.ctc_tokenizer import CharCTCTokenizer

    counters = _Recorded()

    class Counting(FaultCounter):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            counters.append(self)

    with tempfile.TemporaryDirectory() as d:
        shutil.copy(AUDIO_SHARDS / "index.json", d)
        for i, tar in enumerate(_AUDIO_TARS):
            data = bytearray(tar.read_bytes())
            for which, pos, val in mutations:
                if which == i:
                    data[pos % len(data)] = val
            if cut is not None and cut % 2 == i:
                data = data[:cut % len(data)]
            (Path(d) / tar.name).write_bytes(bytes(data))
        cfg = DataConfig(batch_size=2, num_workers=0, min_sample_frames=1, max_skip_ratio=1.0, skip_check_after=1)
        old = loader_mod.FaultCounter
        loader_mod.FaultCounter = Counting
        try:
            batches = list(eval_batches(cfg, [d], "posterior", CharCTCTokenizer(), _prompts(), 2))
        finally:
            loader_mod.FaultCounter = old
    (faults,) = counters
    total = sum(s["samples"] for s in json.loads((AUDIO_SHARDS / "index.json").read_text())["shards"])
    batched = sum(len(b) for b in batches)
    skipped, filtered = sum(faults.skipped.values()), sum(faults.filtered.values())
    assert faults.read == total, (faults.read, total, faults.snapshot())  # each sample counted once
    assert batched + skipped + filtered == total, (batched, skipped, filtered)
    tally("read pipeline (eval_batches)", inputs=1, samples=total, batched=batched, skipped=skipped,
          filtered=filtered)
    return batched, skipped, filtered


def _pipeline_body(mutations: list[tuple[int, int, int]], cut: int | None) -> None:
    _pipeline_counts(mutations, cut)


_PB = []


def _prompts():
    if not _PB:
        from tasu.model.llm import build_tiny_tokenizer
        from tasu.text.prompts import PromptBuilder, load_prompts

        root = Path(__file__).resolve().parents[1]
        _PB.append(PromptBuilder(build_tiny_tokenizer(str(root / "tasu/assets/tiny_text.txt"), 160), load_prompts()))
    return _PB[0]


test_corrupt_audio_pipeline, test_corrupt_audio_pipeline_slow = fuzz_tests(
    25, 500, mutations=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 10000), st.integers(0, 255)),
                                max_size=12),
    cut=st.one_of(st.none(), st.integers(0, 20000)))(_pipeline_body)


def test_regression_sample_failing_after_batching_is_counted_once():
    """A sample whose audio fails to decode (a post-batching stage) was counted as read twice (ok() in the pre
    stages, then skip()): 7 read of 6. Found by the pipeline fuzz; this byte sits in a FLAC frame."""
    assert _pipeline_counts([(0, 6740, 2)], None) == (5, 1, 0)
