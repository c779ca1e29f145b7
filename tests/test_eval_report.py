"""`tasu eval report`: per-task scores, the hand-computed normalised overall score over three fake systems,
single system, missing tasks, the markdown table, and bad input named by file and line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tasu.eval.report import (
    ResultsError,
    build_report,
    load_results,
    normalize_scores,
    render_markdown,
    report_main,
)

WORDS = [f"w{i}" for i in range(10)]


def _asr(n_wrong: int) -> list[dict]:
    """One 10-word utterance with `n_wrong` substitutions -> WER n_wrong / 10."""
    hyp = ["x"] * n_wrong + WORDS[n_wrong:]
    return [{"key": "u0", "task": "asr", "reference": " ".join(WORDS), "hypothesis": " ".join(hyp)}]


def _gender(n_right: int) -> list[dict]:
    """Four answers, the first `n_right` right, the rest wrong -> accuracy n_right / 4."""
    refs = ["male", "female", "male", "female"]
    flip = {"male": "female", "female": "male"}
    return [{"key": f"g{i}", "task": "gender", "reference": r, "hypothesis": r if i < n_right else flip[r]}
            for i, r in enumerate(refs)]


def _age(err_a: float, err_b: float) -> list[dict]:
    """Two answers off by err_a and err_b years -> MAE (err_a + err_b) / 2."""
    return [{"key": "a0", "task": "age", "reference": "20-30", "hypothesis": f"{25 + err_a} years"},
            {"key": "a1", "task": "age", "reference": "40", "hypothesis": f"about {40 - err_b}"}]


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def three_systems(tmp_path):
    # A: WER 0.1, acc 0.5, MAE 10;  B: WER 0.3, acc 1.0, MAE 4;  C: WER 0.2, acc 0.75, no age task
    a = _write(tmp_path / "sysA.jsonl", _asr(1) + _gender(2) + _age(8, 12))
    b = _write(tmp_path / "sysB.jsonl", _asr(3) + _gender(4) + _age(4, 4))
    c = _write(tmp_path / "sysC.jsonl", _asr(2) + _gender(3))
    return a, b, c


def test_normalised_overall_three_systems_by_hand(three_systems):
    rep = build_report([load_results(p) for p in three_systems])
    assert rep.systems == ["sysA", "sysB", "sysC"]
    assert rep.tasks == ["asr", "speaker_age", "speaker_gender_classification"]
    raw = {s: {t: v["value"] for t, v in rep.scores[s].items()} for s in rep.systems}
    assert raw["sysA"] == pytest.approx({"asr": 0.1, "speaker_gender_classification": 0.5, "speaker_age": 10.0})
    assert raw["sysB"] == pytest.approx({"asr": 0.3, "speaker_gender_classification": 1.0, "speaker_age": 4.0})
    assert raw["sysC"] == pytest.approx({"asr": 0.2, "speaker_gender_classification": 0.75})
    # asr (lower better, min .1 max .3): A (.3-.1)/.2 = 1, B 0, C (.3-.2)/.2 = .5
    # gender (higher better, min .5 max 1): A 0, B 1, C .5;  age (lower better, A and B only, 4..10): A 0, B 1
    n = rep.normalized
    assert n["sysA"] == pytest.approx({"asr": 1.0, "speaker_gender_classification": 0.0, "speaker_age": 0.0})
    assert n["sysB"] == pytest.approx({"asr": 0.0, "speaker_gender_classification": 1.0, "speaker_age": 1.0})
    assert n["sysC"] == pytest.approx({"asr": 0.5, "speaker_gender_classification": 0.5})
    o = rep.overall
    assert (o["sysA"]["overall"], o["sysA"]["overall_all"]) == pytest.approx((1 / 3, 1 / 3))
    assert (o["sysB"]["overall"], o["sysB"]["overall_all"]) == pytest.approx((2 / 3, 2 / 3))
    # C misses age: mean over its 2 scored tasks, or over all 3 with the missing one counted 0
    assert (o["sysC"]["overall"], o["sysC"]["overall_all"], o["sysC"]["tasks"]) == pytest.approx((0.5, 1 / 3, 2))


def test_markdown_table_lists_every_task_and_system(three_systems):
    md = render_markdown(build_report([load_results(p) for p in three_systems]))
    for name in ("sysA", "sysB", "sysC", "asr", "speaker_age", "speaker_gender_classification", "wer ↓",
                 "accuracy ↑", "mae ↓"):
        assert name in md
    age_row = next(line for line in md.splitlines() if line.startswith("| speaker_age | mae"))
    assert age_row == "| speaker_age | mae ↓ | 10.0000 (n=2) | 4.0000 (n=2) | — |"  # C has no age task
    assert "| tasks scored | 3/3 | 3/3 | 2/3 |" in md
    assert "**0.5000**" in md  # C's overall over its scored tasks


def test_single_system_and_non_finite():
    scores = {"only": {"asr": {"value": 0.4, "higher_is_better": False}}}
    assert normalize_scores(scores, ["asr"]) == {"only": {"asr": 1.0}}  # no spread -> 1.0
    scores = {"a": {"age": {"value": math.nan, "higher_is_better": False}},
              "b": {"age": {"value": 3.0, "higher_is_better": False}},
              "c": {"age": {"value": 5.0, "higher_is_better": False}}}
    assert normalize_scores(scores, ["age"]) == {"a": {"age": 0.0}, "b": {"age": 1.0}, "c": {"age": 0.0}}


def test_shared_label_set_across_systems(tmp_path):
    # A's references only hold "happy"; with B's "sad" in the shared set, A's "sad" is a wrong label, not abstention
    a = _write(tmp_path / "a.jsonl", [{"key": 1, "task": "emotion", "reference": "happy", "hypothesis": "sad"}])
    b = _write(tmp_path / "b.jsonl", [{"key": 1, "task": "emotion", "reference": "sad", "hypothesis": "sad"}])
    rep = build_report([load_results(a), load_results(b)])
    sa = rep.scores["a"]["emotion_recognition"]
    assert (sa["value"], sa["abstention"], sa["n_labels"], sa["label_source"]) == (0.0, 0.0, 2, "references")


def test_report_main_writes_markdown_and_json(three_systems, tmp_path, capsys):
    a, b, c = three_systems
    out, js = tmp_path / "report.md", tmp_path / "report.json"
    rc = report_main([str(a), f"Bee={b}", str(c), "--out", str(out), "--json", str(js)])
    assert rc == 0
    assert "Bee" in out.read_text() and "sysB" not in out.read_text()
    data = json.loads(js.read_text())
    assert data["systems"] == ["sysA", "Bee", "sysC"]
    assert data["overall"]["Bee"]["overall"] == pytest.approx(2 / 3)
    assert data["scores"]["sysA"]["asr"]["value"] == pytest.approx(0.1)
    assert "best overall" in capsys.readouterr().out
    rc = report_main([str(a)])  # no --out: markdown on stdout; one system -> 1.0 everywhere
    assert rc == 0 and "| **overall** (scored tasks) | **1.0000** |" in capsys.readouterr().out


def test_task_kind_override(tmp_path, capsys):
    p = _write(tmp_path / "s.jsonl", [{"key": 1, "task": "speaker verification", "reference": "yes",
                                       "hypothesis": "Yes."}])
    assert report_main([str(p)]) == 2
    err = capsys.readouterr().err
    assert f"{p}:1" in err and "unknown task" in err and "--task-kind" in err
    assert report_main([str(p), "--task-kind", "speaker verification=label"]) == 0
    assert "speaker_verification" in capsys.readouterr().out
    assert report_main([str(p), "--task-kind", "x=bleu"]) == 2
    assert "NAME=KIND" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("lines", "where", "message"),
    [
        (['{"key": 1, "task": "asr", "reference": "a"}'], ":1", "missing field(s) hypothesis"),
        (['{"key": 1, "task": "asr", "reference": "a", "hypothesis": "a"}', "", "{oops"], ":3", "bad JSON"),
        (['["a"]'], ":1", "expected a JSON object"),
        (['{"key": 1, "task": "asr", "reference": "a", "hypothesis": null}'], ":1", "'hypothesis' must be a string"),
        (['{"key": 1, "task": "asr", "reference": "a", "hypothesis": "a"}',
          '{"key": "1", "task": "ASR", "reference": "b", "hypothesis": "b"}'], ":2", "duplicate key '1'"),
        (['{"key": 1, "task": "age", "reference": "30", "hypothesis": "3"}',
          '{"key": 2, "task": "age", "reference": "unknown", "hypothesis": "3"}'], ":2", "holds no number"),
        (['{"key": 1, "task": "gender", "reference": "robot", "hypothesis": "male"}'], ":1", "not in the label set"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, lines, where, message):
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ResultsError) as e:
        build_report([load_results(p)])
    assert f"{p}{where}" in str(e.value) and message in str(e.value)


def test_bad_files(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(ResultsError, match="no records"):
        load_results(empty)
    assert report_main([str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    d1, d2 = tmp_path / "x", tmp_path / "y"
    d1.mkdir()
    d2.mkdir()
    rec = [{"key": 1, "task": "asr", "reference": "a", "hypothesis": "a"}]
    assert report_main([str(_write(d1 / "run.jsonl", rec)), str(_write(d2 / "run.jsonl", rec))]) == 2
    assert "same system name" in capsys.readouterr().err
