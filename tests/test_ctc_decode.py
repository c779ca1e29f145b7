"""CTC decoding: greedy best path and prefix beam search, checked against brute-force alignment sums."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tasu.eval.ctc_decode import greedy_decode, prefix_beam_search, prefix_beam_search_nbest


def collapse(path, blank=0) -> tuple[int, ...]:
    out, prev = [], None
    for c in path:
        if c != prev and c != blank:
            out.append(c)
        prev = c
    return tuple(out)


def brute_force(log_probs: torch.Tensor, blank: int = 0) -> dict[tuple[int, ...], float]:
    """log P(labels) for every label sequence: enumerate all V^T alignments of [T, V] and sum per collapse."""
    t, v = log_probs.shape
    probs: dict[tuple[int, ...], float] = {}
    lp = log_probs.double()
    for path in itertools.product(range(v), repeat=t):
        p = math.exp(sum(float(lp[i, c]) for i, c in enumerate(path)))
        key = collapse(path, blank)
        probs[key] = probs.get(key, 0.0) + p
    return {k: math.log(p) if p > 0 else float("-inf") for k, p in probs.items()}


def frames(*rows) -> torch.Tensor:
    """Probabilities per frame -> log-probs [T, V]."""
    return torch.tensor(rows, dtype=torch.float64).log()


def test_greedy_hand_example():
    # frames argmax: 1 1 0 1 2 2 0 2 | padding  ->  1 1 2 2
    ids = torch.tensor([[1, 1, 0, 1, 2, 2, 0, 2, 1, 1], [0, 3, 3, 3, 0, 0, 3, 1, 1, 2]])
    lp = torch.nn.functional.one_hot(ids, 4).double().mul(5).log_softmax(-1)
    assert greedy_decode(lp, torch.tensor([8, 10])) == [[1, 1, 2, 2], [3, 3, 1, 2]]
    # length 0 and a non-zero blank id
    assert greedy_decode(lp, torch.tensor([0, 4]), blank_id=3) == [[], [0]]


def test_beam_beats_greedy_when_alignments_add_up():
    # greedy takes blank-blank ("", P=0.36); "a" collects a-a, a-blank, blank-a: 0.16 + 0.24 + 0.24 = 0.64
    lp = frames([0.6, 0.4], [0.6, 0.4])
    assert greedy_decode(lp[None], torch.tensor([2])) == [[]]
    assert prefix_beam_search(lp[None], torch.tensor([2]), beam=4) == [[1]]
    exact = brute_force(lp)
    assert exact[(1,)] > exact[()]
    best, score = prefix_beam_search_nbest(lp, beam=4)[0]
    assert best == [1] and score == pytest.approx(math.log(0.64))


def test_repeat_needs_a_blank():
    # "a a" only through a blank between the two a's; "a" merges the repeats
    lp = frames([0.1, 0.9], [0.8, 0.2], [0.1, 0.9])
    nbest = dict((tuple(k), s) for k, s in prefix_beam_search_nbest(lp, beam=16))
    exact = brute_force(lp)
    assert set(nbest) == set(exact)
    for k, s in nbest.items():
        assert s == pytest.approx(exact[k]), k


@pytest.mark.parametrize("seed", range(6))
def test_nbest_scores_match_brute_force(seed):
    # T=5, V=3: 243 alignments, 31 label sequences: a beam of 64 holds them all, so the search is exact
    g = torch.Generator().manual_seed(seed)
    lp = (torch.randn(5, 3, generator=g, dtype=torch.float64) * 2).log_softmax(-1)
    exact = brute_force(lp)
    nbest = prefix_beam_search_nbest(lp, beam=64)
    assert len(nbest) == len([k for k, s in exact.items() if s > float("-inf")])
    for labels, score in nbest:
        assert score == pytest.approx(exact[tuple(labels)], rel=1e-9, abs=1e-12)
    assert tuple(nbest[0][0]) == max(exact, key=exact.get)
    # total probability over all label sequences is 1
    assert math.fsum(math.exp(s) for _, s in nbest) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(4))
def test_small_beam_is_a_lower_bound(seed):
    g = torch.Generator().manual_seed(100 + seed)
    lp = (torch.randn(6, 4, generator=g, dtype=torch.float64) * 3).log_softmax(-1)
    exact = brute_force(lp)
    for labels, score in prefix_beam_search_nbest(lp, beam=3):
        # a pruned search only misses alignments: never more than the exact sum
        assert score <= exact[tuple(labels)] + 1e-9


def test_beam_one_on_peaked_posteriors_equals_greedy():
    # when each frame's argmax holds > 90 % of the mass, the best path carries its label sequence
    g = torch.Generator().manual_seed(7)
    b, t, v = 8, 30, 6
    ids = torch.randint(0, v, (b, t), generator=g)
    logits = torch.randn(b, t, v, generator=g).clamp(-2, 2) + 7 * torch.nn.functional.one_hot(ids, v)
    lp = logits.log_softmax(-1)
    assert (lp.max(-1).values.exp() > 0.9).all()
    lengths = torch.randint(10, t + 1, (b,), generator=g)
    assert prefix_beam_search(lp, lengths, beam=1) == greedy_decode(lp, lengths)
    assert prefix_beam_search(lp, lengths, beam=1, prune_top_k=1) == greedy_decode(lp, lengths)


def test_batch_lengths_and_pruning():
    g = torch.Generator().manual_seed(3)
    lp = (torch.randn(3, 5, 3, generator=g) * 2).log_softmax(-1)
    lengths = torch.tensor([5, 3, 0])
    out = prefix_beam_search(lp, lengths, beam=64)
    for i in range(3):
        exact = brute_force(lp[i, : lengths[i]]) if lengths[i] else {(): 0.0}
        assert tuple(out[i]) == max(exact, key=exact.get)
    # padding frames must not matter
    padded = lp.clone()
    padded[1, 3:] = torch.tensor([-30.0, 0.0, -30.0])
    assert prefix_beam_search(padded, lengths, beam=64) == out
    assert greedy_decode(padded, lengths) == greedy_decode(lp, lengths)
    # top-k pruning with k = V-1 changes nothing; with k=1 each step extends by the frame's best label only
    assert prefix_beam_search(lp, lengths, beam=64, prune_top_k=2) == out
    assert all(len(x) <= 5 for x in prefix_beam_search(lp, lengths, beam=4, prune_top_k=1))


def test_bad_input_is_named():
    lp = torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match=r"\[B, T, V\]"):
        greedy_decode(lp[0], torch.tensor([4]))
    with pytest.raises(ValueError, match="lengths has 1 entries for a batch of 2"):
        prefix_beam_search(lp, torch.tensor([4]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 4\]"):
        greedy_decode(lp, torch.tensor([4, 5]))
    with pytest.raises(ValueError, match="blank_id 3 is outside"):
        prefix_beam_search(lp, torch.tensor([4, 4]), blank_id=3)
    with pytest.raises(ValueError, match="beam must be >= 1"):
        prefix_beam_search(lp, torch.tensor([4, 4]), beam=0)
