"""Scoring: hand-computed WER / CER, reference-vs-hypothesis order, Chinese CER, BLEU and accuracy."""

from __future__ import annotations

import math

import pytest

from tasu.eval.metrics import accuracy, bleu, cer, error_rate, is_chinese, normalize_text, wer


def test_normalize_text():
    assert normalize_text("  Hello,   WORLD!  ") == "hello world"
    assert normalize_text("Don't stop — it's well-known.") == "dont stop its well known"
    assert normalize_text("今天， 天气 很好。 OK") == "今天天气很好 ok"
    assert normalize_text("ＡＢＣ ５") == "abc 5"  # full-width -> ASCII (NFKC)


def test_wer_hand_computed():
    # 2 hits, 1 substitution (sat -> sit), 1 insertion (on) over 3 reference words
    assert wer(["the cat sat"], ["the cat sit on"]) == pytest.approx(2 / 3)
    # corpus level: (1 + 2) errors / (3 + 2) reference words, not the mean of per-sentence rates
    assert wer(["the cat sat", "a dog"], ["the cat sit", "the big dog"]) == pytest.approx(3 / 5)
    assert wer(["Hello, World!"], ["hello world"]) == 0.0  # normalised first


def test_reference_hypothesis_order():
    # swapped arguments turn the insertion into a deletion and change the denominator: 1/3 vs 1/4
    ref, hyp = "the cat sat", "the cat sat down"
    assert wer([ref], [hyp]) == pytest.approx(1 / 3)
    assert wer([hyp], [ref]) == pytest.approx(1 / 4)
    assert cer(["ab"], ["abcd"]) == pytest.approx(1.0)
    assert cer(["abcd"], ["ab"]) == pytest.approx(0.5)


def test_empty_reference_strings():
    # an empty reference adds no reference words and one insertion per hypothesis word
    assert wer(["", "a b"], ["x y", "a b"]) == pytest.approx(2 / 2)
    assert wer(["..."], [""]) == 0.0
    assert math.isinf(wer([""], ["something"]))
    with pytest.raises(ValueError, match="empty reference list"):
        wer([], [])
    with pytest.raises(ValueError, match="2 references but 1"):
        cer(["a", "b"], ["a"])


def test_chinese_cer():
    # 6 reference characters, 1 substitution; spaces and punctuation in the hypothesis do not count
    assert cer(["今天天气很好"], ["今天 天气 不好。"]) == pytest.approx(1 / 6)
    assert is_chinese(["今天天气很好"]) and is_chinese(["hello"], "zh-CN") and not is_chinese(["hello"], "en")
    assert error_rate(["今天天气很好"], ["今天天气不好"]) == pytest.approx(1 / 6)  # CJK detected -> CER
    assert error_rate(["the cat sat"], ["the cat sit"], "en") == pytest.approx(1 / 3)  # WER
    assert error_rate(["ab cd"], ["ab ce"], "zh") == pytest.approx(1 / 5)  # lang zh -> CER over characters


def test_bleu_sanity():
    refs = ["the quick brown fox jumps over the lazy dog", "a man is walking in the park"]
    assert bleu(refs, refs) == pytest.approx(100.0)
    assert bleu(refs, ["completely unrelated words here", "nothing matches"]) < 5.0
    partial = bleu(refs, ["the quick brown fox jumps over a sleepy dog", "a man walks in the park"])
    assert 10.0 < partial < 90.0
    zh = ["今天天气很好", "我们去公园散步"]
    assert bleu(zh, zh, "zh") == pytest.approx(100.0)
    # without the zh tokenizer each sentence would be a single "word" and a one-character change scores ~0
    assert bleu(zh, ["今天天气不好", "我们去公园散步"], "zh") > 40.0


def test_accuracy():
    assert accuracy(["Yes.", "no", "Maybe"], ["yes", "No!", "perhaps"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        accuracy([], [])
