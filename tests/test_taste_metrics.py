"""TASTE metrics: bitrate, token rate, unit accuracy, next-speech selection accuracy."""

import math

import pytest
import torch

from tasu.taste.metrics import bitrate, next_speech_selection_accuracy, tokens_per_second, unit_accuracy


def test_bitrate_of_known_configurations():
    assert bitrate([512] * 4, 3.0) == 108.0                               # 3 tokens/s x 4 x log2(512) = 3 x 36
    assert bitrate([1024, 256], 2.0) == 36.0                              # 2 x (10 + 8)
    assert math.isclose(bitrate([3], 1.0), math.log2(3))
    with pytest.raises(ValueError, match="codebook_sizes"):
        bitrate([], 3.0)


def test_tokens_per_second_is_a_corpus_rate():
    # 30 tokens over 10 s: 3.0 tokens/s (the mean of the per-utterance rates would be 2.5 / 3.33...)
    tps = tokens_per_second([10, 20], [4.0, 6.0])
    assert tps == 3.0
    assert bitrate([512] * 4, tps) == 108.0
    assert tokens_per_second(torch.tensor([5, 7]), torch.tensor([1.0, 3.0])) == 3.0
    with pytest.raises(ValueError, match="durations"):
        tokens_per_second([1], [0.0])


def test_unit_accuracy_masked():
    pred = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    tgt = torch.tensor([[1, 0, 3, 0], [5, 6, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]).bool()
    assert unit_accuracy(pred, tgt, mask) == 4 / 5
    assert unit_accuracy(pred, tgt) == 4 / 8
    with pytest.raises(ValueError, match="no position"):
        unit_accuracy(pred, tgt, torch.zeros_like(mask))


def test_next_speech_selection_accuracy_with_ties():
    scores = torch.tensor([[-1.0, -2.0, -3.0],                             # right (true 0)
                           [-1.0, -0.5, -3.0],                             # wrong (true 0)
                           [-1.0, -1.0, -3.0]])                            # tie of 2 incl. true: 1/2
    assert next_speech_selection_accuracy(scores, torch.tensor([0, 0, 1])) == pytest.approx(1.5 / 3)
    # a constant scorer gets exactly chance
    assert next_speech_selection_accuracy(torch.zeros(5, 4), torch.randint(0, 4, (5,))) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="true_index"):
        next_speech_selection_accuracy(scores, torch.tensor([0, 3, 1]))
