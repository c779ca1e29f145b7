"""Fuzzing the manifest readers (.jsonl, .txt, .json): never a crash, every bad record reported with its line,
and records + bad records = non-blank lines (JSON lines / text) or list elements (.json)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import strategies as st

from tasu.data.manifests import BadRecord, Record, read_manifest

from .fuzz_strategies import as_bytes, json_values, manifest_lines, records
from .fuzz_utils import fuzz_tests, nonblank_lines, tally, write_tally

REASONS = {"bad_field_type", "missing_field", "empty_text", "not_an_object", "invalid_text", "bad_conversation",
           "audio_count_mismatch", "unreadable_file", "invalid_utf8", "invalid_json"}


@pytest.fixture(scope="module", autouse=True)
def _tally():
    yield
    write_tally(__name__)


def _check_item(item, file: str) -> None:
    assert isinstance(item, (Record, BadRecord)), item
    if isinstance(item, BadRecord):
        assert item.reason in REASONS, item
        assert item.line >= 1 and item.file == file
        assert f"{file}:{item.line}:" in item.message()
        return
    assert isinstance(item.key, str) and item.key and item.task
    assert item.target and item.target == item.target.strip()
    for v in (item.key, item.task, item.target, item.gt, *item.audio):
        v.encode("utf-8")  # valid text: no lone surrogates


def _lines_body(lines: list[str | bytes], suffix: str) -> None:
    raw = [as_bytes(x).replace(b"\n", b" ") for x in lines]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"m{suffix}"
        path.write_bytes(b"\n".join(raw) + b"\n")
        items = list(read_manifest(path))
    for it in items:
        _check_item(it, str(path))
    assert [it.line for it in items] == nonblank_lines(raw)  # one item per record line, in order
    bad = sum(isinstance(it, BadRecord) for it in items)
    tally(f"manifest{suffix}", inputs=1, lines=len(raw), records=len(items) - bad, bad=bad)


test_jsonl_lines, test_jsonl_lines_slow = fuzz_tests(
    120, 4000, lines=st.lists(manifest_lines, min_size=1, max_size=10))(lambda lines: _lines_body(lines, ".jsonl"))
test_txt_lines, test_txt_lines_slow = fuzz_tests(
    30, 1000, lines=st.lists(manifest_lines, min_size=1, max_size=10))(lambda lines: _lines_body(lines, ".txt"))


def _json_body(doc: str | bytes) -> None:
    data = as_bytes(doc)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.json"
        path.write_bytes(data)
        items = list(read_manifest(path))
    for it in items:
        _check_item(it, str(path))
    assert [it.line for it in items] == sorted(it.line for it in items)
    try:
        oracle = json.loads(data.decode("utf-8-sig"))
    except (ValueError, RecursionError):  # the reader must say so with a bad record, after any good prefix
        oracle = None
        if data.decode("utf-8-sig", "replace").strip():
            assert items and items[-1].reason in ("invalid_json", "invalid_utf8", "not_an_object"), items[-1:]
    if isinstance(oracle, list):
        assert len(items) == len(oracle)
    elif oracle is not None:
        assert len(items) == 1
    bad = sum(isinstance(it, BadRecord) for it in items)
    tally("manifest.json", inputs=1, records=len(items) - bad, bad=bad)


_json_docs = st.one_of(
    st.lists(st.one_of(records, json_values), max_size=6).map(lambda v: json.dumps(v, indent=1)),
    records.map(json.dumps),
    st.lists(manifest_lines, max_size=4).map(lambda x: "[" + ",\n".join(
        y if isinstance(y, str) else y.decode("latin-1") for y in x) + "]"),
    manifest_lines,
    st.binary(max_size=40),
)
test_json_documents, test_json_documents_slow = fuzz_tests(80, 2000, doc=_json_docs)(_json_body)


def test_regression_huge_int_and_deep_nesting_are_bad_records_not_crashes(tmp_path):
    """json.loads raises ValueError (int over 4300 digits) and RecursionError (deep nesting), not
    JSONDecodeError: both used to escape read_manifest."""
    (tmp_path / "a.jsonl").write_text('{"key": ' + "1" * 5000 + '}\n{"text": "fine"}\n' + "[" * 100000 + "\n")
    items = list(read_manifest(tmp_path / "a.jsonl"))
    assert [(type(i).__name__, i.line) for i in items] == [("BadRecord", 1), ("Record", 2), ("BadRecord", 3)]
    assert items[0].reason == items[2].reason == "invalid_json"
    (tmp_path / "b.json").write_text('[{"text": "ok"},\n' + "[" * 100000)
    items = list(read_manifest(tmp_path / "b.json"))
    assert isinstance(items[0], Record) and items[1].reason == "invalid_json" and items[1].line == 2


def test_regression_invalid_utf8_in_json_file_names_its_line(tmp_path):
    (tmp_path / "c.json").write_bytes(b'[{"text": "ok"},\n{"text": "b\xffd"}]')
    (item,) = read_manifest(tmp_path / "c.json")
    assert item.reason == "invalid_utf8" and item.line == 2


def test_regression_json_file_trailing_data_and_bad_separators_are_reported(tmp_path):
    """The element-wise list parser used to skip doubled commas and ignore anything after the first value."""
    cases = {'{"text": "a"} {"text": "b"}': ["Record", "invalid_json"],
             '[{"text": "a"},, {"text": "b"}]': ["Record", "invalid_json"],
             '[{"text": "a"} {"text": "b"}]': ["Record", "invalid_json"],
             '[{"text": "a"}] junk': ["Record", "invalid_json"],
             '[{"text": "a"},\n {"text": "b"}]': ["Record", "Record"], "[ ]": []}
    for doc, want in cases.items():
        (tmp_path / "d.json").write_text(doc)
        got = [i.reason if isinstance(i, BadRecord) else "Record" for i in read_manifest(tmp_path / "d.json")]
        assert got == want, (doc, got)
