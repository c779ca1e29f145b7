"""LLaSO metrics: hand-computed PER / WER (reference order), exclusive-label accuracy and abstention, MAE with
ranges and unparsable answers, pronunciation-score match, the task registry."""

from __future__ import annotations

import math

import pytest

from tasu.eval.llaso_metrics import (
    KINDS,
    TASK_ALIASES,
    TASK_METRICS,
    BadReference,
    LabelMatcher,
    MetricSpec,
    abstention_rate,
    exclusive_accuracy,
    get_spec,
    label_set,
    numeric_stats,
    parse_number,
    per,
    score_task,
)


def test_per_reference_first():
    # 2 deletions over 4 reference phones; the swapped call (the LLaSO scripts' bug) gives 2 insertions over 2
    assert per(["a b c d"], ["a b"]) == pytest.approx(0.5)
    assert per(["a b"], ["a b c d"]) == pytest.approx(1.0)
    # 1 substitution (ae -> ah) + 1 insertion (s) over 3 phones; corpus level over two pairs: (2 + 1) / (3 + 2)
    assert per(["k ae t"], ["k ah t s"]) == pytest.approx(2 / 3)
    assert per(["k ae t", "d ao"], ["k ah t s", "d"]) == pytest.approx(3 / 5)


def test_per_tokens_and_case():
    assert per(["k ae t"], ["k,  ae ,t"]) == 0.0  # commas and extra spaces separate phones
    assert per(["AH0 B"], ["ah0 b"]) == pytest.approx(1.0)  # case-sensitive by default (X-SAMPA needs it)
    assert per(["AH0 B"], ["ah0 b"], ignore_case=True) == 0.0
    assert per(["a ː b"], ["a b"]) == pytest.approx(1 / 3)  # phone symbols are not stripped as punctuation


def test_asr_wer_reference_first_and_chinese():
    out = score_task("ASR", ["a b c d"], ["a b"])
    assert (out["task"], out["metric"], out["value"], out["higher_is_better"]) == ("asr", "wer", 0.5, False)
    out = score_task("asr", ["今天天气很好"], ["今天天气"])  # CJK references -> CER: 2 deletions / 6 chars
    assert out["metric"] == "cer" and out["value"] == pytest.approx(2 / 6)


def test_label_matching_whole_words_longest_first():
    m = LabelMatcher(["Male", "female", "north american", "american"])
    assert m.find("The speaker is FEMALE.") == ["female"]  # "female" does not also count as "male"
    assert m.find("She sounds North-American") == ["north american"]  # not also "american"
    assert m.find("male, definitely male") == ["male"]  # a repeated label is one label
    assert m.find("male or female?") == ["male", "female"]
    assert m.find("I cannot tell") == []
    assert m.find("maleness") == []  # whole words only


def test_exclusive_accuracy_and_abstention_zero_one_two_labels():
    refs = ["male", "female", "male", "female"]
    hyps = ["Male.", "I can't tell.", "male or female", "The speaker is male"]
    # answer 1: one label, right; 2: no label; 3: two labels; 4: one label, wrong
    assert exclusive_accuracy(refs, hyps) == pytest.approx(1 / 4)
    assert abstention_rate(hyps, ["male", "female"]) == pytest.approx(2 / 4)
    out = score_task("gender", refs, hyps)
    assert out["task"] == "speaker_gender_classification"
    assert out["value"] == pytest.approx(1 / 4)
    assert out["abstention"] == pytest.approx(2 / 4)
    assert out["accuracy_answered"] == pytest.approx(1 / 2)
    assert (out["n"], out["n_labels"], out["label_source"]) == (4, 2, "spec")


def test_label_set_from_references():
    refs = ["Happy", "sad", "happy!", "angry"]
    assert label_set(refs) == ("angry", "happy", "sad")
    out = score_task("emotion", refs, ["happy", "angry", "I think happy", "neutral"])
    # "neutral" is not among the references' labels -> abstention, not a wrong label
    assert out["value"] == pytest.approx(2 / 4)
    assert out["abstention"] == pytest.approx(1 / 4)
    assert (out["n_labels"], out["label_source"]) == (3, "references")
    given = score_task("emotion", refs, ["happy", "angry", "I think happy", "neutral"],
                       labels=["happy", "sad", "angry", "neutral"])
    assert given["abstention"] == 0.0 and given["label_source"] == "given"


def test_reference_outside_label_set_is_an_error():
    with pytest.raises(BadReference, match="reference 1") as e:
        exclusive_accuracy(["male", "robot"], ["male", "male"], labels=["male", "female"])
    assert e.value.index == 1


def test_parse_number():
    assert parse_number("about 25 years old") == 25.0
    assert parse_number("20-30") == 25.0
    assert parse_number("between 20 and 30") == 25.0
    assert parse_number("20 to 30 years") == 25.0
    assert parse_number("from 20 – 30") == 25.0
    assert parse_number("in their 20s") == 20.0
    assert parse_number("a 5-year-old") == 5.0  # a dash not followed by a number is no range
    assert parse_number("-3 dB") == -3.0
    assert parse_number("7.5/10") == 7.5
    assert parse_number("８") == 8.0  # full-width
    assert parse_number("twenty") is None


def test_mae_with_ranges_and_unparsable():
    refs = ["20-30", "40", "between 60 and 70", "8"]
    hyps = ["30", "about 35 years old", "I don't know", "5 to 7"]
    # |30 - 25| = 5, |35 - 40| = 5, unparsable, |6 - 8| = 2 -> MAE 12 / 3 over the 3 parsed answers
    st = numeric_stats(refs, hyps)
    assert st.mae == pytest.approx(4.0)
    assert (st.n, st.n_unparsable, st.exact) == (4, 1, 0.0)
    out = score_task("age", refs, hyps)
    assert (out["task"], out["metric"], out["higher_is_better"]) == ("speaker_age", "mae", False)
    assert out["value"] == pytest.approx(4.0)
    assert (out["n_unparsable"], out["unparsable_rate"]) == (1, 0.25)
    assert math.isnan(numeric_stats(["3"], ["no idea"]).mae)
    with pytest.raises(BadReference, match="reference 0"):
        numeric_stats(["unknown"], ["3"])


def test_pronunciation_score_match():
    refs = ["8", "6", "7", "9"]
    hyps = ["8", "Score: 7", "n/a", "9.0"]
    out = score_task("pronunciation scoring", refs, hyps)
    assert (out["metric"], out["higher_is_better"]) == ("accuracy", True)
    assert out["value"] == pytest.approx(2 / 4)  # exact matches over all answers; "n/a" counts as a miss
    assert out["mae"] == pytest.approx(1 / 3)  # (0 + 1 + 0) / 3 parsed
    assert out["n_unparsable"] == 1


def test_exact_kind():
    out = score_task("entity_extraction", ["New York", "Paris"], ["new york.", "London"])
    assert out["value"] == pytest.approx(0.5)


def test_registry_and_specs():
    assert set(KINDS) == {"wer", "cer", "per", "label", "numeric", "score", "exact"}
    for name, spec in TASK_METRICS.items():
        assert get_spec(name) == (name, spec)
        assert spec.metric == KINDS[spec.kind][0]
        assert spec.higher_is_better == KINDS[spec.kind][1]
    for alias, target in TASK_ALIASES.items():
        assert target in TASK_METRICS and alias not in TASK_METRICS
    assert get_spec("Speaker-Gender")[0] == "speaker_gender_classification"
    assert not TASK_METRICS["asr"].higher_is_better and TASK_METRICS["accent_classification"].higher_is_better
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        get_spec("nope")
    with pytest.raises(ValueError, match="unknown metric kind"):
        MetricSpec("bleu")
    with pytest.raises(ValueError, match="only applies to kind 'label'"):
        MetricSpec("wer", ("a",))
    with pytest.raises(ValueError, match="collide"):
        MetricSpec("label", ("Male", "male!"))
    with pytest.raises(ValueError, match="labels only apply"):
        score_task("asr", ["a"], ["a"], labels=["a"])
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        score_task("asr", ["a", "b"], ["a"])
