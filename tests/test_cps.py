"""CPS: noise statistics, determinism, blank-frame maths, collation, greedy decoding and target-CER calibration."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from tasu.align.config import SimulationConfig
from tasu.align.cps import (
    SimulatedFrames,
    collate_simulated,
    greedy_ctc_decode_frames,
    resolve_rates,
    simulate,
    unit_error_rate,
)
from tasu.text.ctc_tokenizer import CharCTCTokenizer

WORDS = ("the a of and to in he was that it his her you as had with for she not at but be my on have him is said "
         "me which by so this all from they no were if would or when what there been one could very an who them "
         "will little well all bookkeeper balloon coffee committee successful aggressive llama sheep door "
         "mississippi address").split()
TOK = CharCTCTokenizer()
V_CHAR = TOK.vocab_size
V_BIG = 25055
OFF = SimulationConfig(alpha_min=0.0, alpha_max=0.0, drop_rate=0.0, repeat_rate=0.0, blank_rate=0.0,
                       substitute_rate=0.0, separate_repeats=True)


def char_sentences(n: int, seed: int) -> list[list[int]]:
    r = random.Random(seed)
    return [TOK.encode(" ".join(r.choice(WORDS) for _ in range(r.randint(4, 10)))) for _ in range(n)]


def big_sentences(n: int, seed: int) -> list[list[int]]:
    r = random.Random(seed)
    return [[r.randrange(1, V_BIG) for _ in range(r.randint(8, 40))] for _ in range(n)]


CASES = {"char": (char_sentences(1000, 1), V_CHAR), "big": (big_sentences(1000, 2), V_BIG)}


def run(cfg: SimulationConfig, case: str, prefix: str = "s") -> tuple[list[list[int]], list[SimulatedFrames], int]:
    sents, v = CASES[case]
    return sents, [simulate(s, cfg, v, f"{prefix}/{i}") for i, s in enumerate(sents)], v


@pytest.mark.parametrize("case", ["char", "big"])
def test_drop_rate(case):
    sents, out, _ = run(replace(OFF, drop_rate=0.12), case)
    # separate_repeats -> greedy decoding returns exactly the kept tokens
    kept = sum(len(greedy_ctc_decode_frames(f)) for f in out)
    assert abs((1 - kept / sum(map(len, sents))) - 0.12) < 0.015


@pytest.mark.parametrize("case", ["char", "big"])
def test_substitute_rate(case):
    sents, out, v = run(replace(OFF, substitute_rate=0.1), case)
    n_sub = n = 0
    seen = set()
    for s, f in zip(sents, out):
        dec = greedy_ctc_decode_frames(f)
        assert len(dec) == len(s)  # no drops: one decoded token per transcript token
        for a, b in zip(s, dec):
            n += 1
            if a != b:
                n_sub += 1
                assert 0 < b < v
                seen.add(b)
    assert abs(n_sub / n - 0.1) < 0.015
    if case == "char":  # uniform over the alternatives: every non-blank id gets used
        assert seen == set(range(1, v))


@pytest.mark.parametrize("case", ["char", "big"])
def test_repeat_rate(case):
    sents, out, _ = run(replace(OFF, repeat_rate=0.2), case)
    # transcript duplicates are split by separator blanks, so adjacent equal non-blank frames are repeats
    reps = sum(sum(1 for a, b in zip(f.ids, f.ids[1:]) if a == b and a != 0) for f in out)
    assert abs(reps / sum(map(len, sents)) - 0.2) < 0.015
    assert all(greedy_ctc_decode_frames(f) == s for s, f in zip(sents, out))


@pytest.mark.parametrize("case", ["char", "big"])
def test_blank_rate_and_mass(case):
    cfg = replace(OFF, blank_rate=0.15, blank_mass_min=0.8, blank_mass_max=0.95, separate_repeats=False)
    sents, out, v = run(cfg, case)
    blanks = sum(f.ids.count(0) for f in out)
    assert abs(blanks / sum(map(len, sents)) - 0.15) < 0.015
    post = collate_simulated(out[:40], v)  # dense [B, T, V] is big for V = 25055: a slice is enough
    dense = post.dense_probs()
    mask = post.frame_mask() & (post.ids == 0)
    m = dense[..., 0][mask]
    assert m.min() >= 0.8 - 1e-6 and m.max() <= 0.95 + 1e-6 and m.max() - m.min() > 0.1
    torch.testing.assert_close(dense[post.frame_mask()].sum(-1), torch.ones(int(post.lengths.sum())))


def test_blank_mass_exact_and_alpha_bounds():
    cfg = replace(OFF, alpha_min=0.02, alpha_max=0.07, blank_rate=0.5, blank_mass_min=0.93, blank_mass_max=0.93)
    sents, out, v = run(cfg, "char")
    alphas = []
    for f in out:
        tok_s = {s for i, s in zip(f.ids, f.smooth) if i != 0}
        assert len(tok_s) == 1  # one alpha per sentence
        alphas.append(tok_s.pop())
    assert 0.02 <= min(alphas) < 0.025 and 0.065 < max(alphas) <= 0.07
    post = collate_simulated(out[:50], v)
    dense = post.dense_probs().double()
    blank_frames = post.frame_mask() & (post.ids == 0)
    assert blank_frames.sum() > 20
    torch.testing.assert_close(dense[..., 0][blank_frames], torch.full((int(blank_frames.sum()),), 0.93,
                                                                        dtype=torch.float64), atol=1e-6, rtol=0)
    # token frames: (1 - alpha) + alpha / V on the token
    tok_frames = post.frame_mask() & (post.ids != 0)
    top = dense.gather(-1, post.ids.unsqueeze(-1)).squeeze(-1)[tok_frames]
    alpha = post.smooth.double()[tok_frames]
    torch.testing.assert_close(top, 1 - alpha + alpha / v)


def test_separate_repeats():
    ids = TOK.encode("bookkeeper balloon llama")
    with_sep = simulate(ids, replace(OFF, repeat_rate=1.0), V_CHAR, "k")
    assert greedy_ctc_decode_frames(with_sep) == ids
    # never a blank between a token and its own repeat: frames come in (tok, tok) pairs, blanks only between
    toks = [i for i in with_sep.ids if i != 0]
    assert toks[0::2] == toks[1::2] == ids
    assert with_sep.ids.count(0) == sum(a == b for a, b in zip(ids, ids[1:]))
    no_sep = simulate(ids, replace(OFF, separate_repeats=False), V_CHAR, "k")
    assert no_sep.ids == ids
    assert greedy_ctc_decode_frames(no_sep) == [a for j, a in enumerate(ids) if j == 0 or ids[j - 1] != a]


def test_combined_noise_greedy_is_kept_tokens():
    cfg = SimulationConfig(drop_rate=0.1, repeat_rate=0.2, blank_rate=0.3, substitute_rate=0.05, separate_repeats=True)
    sents, out, _ = run(cfg, "char")
    kept = sum(len(greedy_ctc_decode_frames(f)) for f in out)
    assert abs((1 - kept / sum(map(len, sents))) - 0.1) < 0.015


def test_defaults_match_reference():
    cfg = SimulationConfig()
    assert (cfg.alpha_min, cfg.alpha_max, cfg.drop_rate) == (0.0, 0.1, 0.05)
    assert cfg.repeat_rate == cfg.blank_rate == cfg.substitute_rate == 0.0
    sents, out, _ = run(cfg, "char")
    # no blank frames unless separate_repeats is on (off by default, as in the reference)
    for f in out:
        for j, i in enumerate(f.ids):
            assert i != 0 or (0 < j < len(f) - 1 and f.ids[j - 1] == f.ids[j + 1] != 0)
    kept = sum(len(f) - f.ids.count(0) for f in out)
    assert abs((1 - kept / sum(map(len, sents))) - 0.05) < 0.015


def test_determinism():
    cfg = SimulationConfig(drop_rate=0.2, repeat_rate=0.2, blank_rate=0.2, substitute_rate=0.2)
    ids = char_sentences(1, 5)[0]
    a = simulate(ids, cfg, V_CHAR, "utt-1")
    assert a == simulate(ids, cfg, V_CHAR, "utt-1")
    assert a != simulate(ids, cfg, V_CHAR, "utt-2")
    assert a != simulate(ids, cfg, V_CHAR, "utt-1", epoch=1)
    assert a != simulate(ids, replace(cfg, seed=1), V_CHAR, "utt-1")
    state = random.getstate()
    simulate(ids, cfg, V_CHAR, "utt-1")
    assert random.getstate() == state  # the global RNG is untouched
    # a fresh interpreter with another hash salt gives the same frames (no use of Python's hash())
    code = ("import json,sys; from tasu.align.config import SimulationConfig as C; from tasu.align.cps import "
            "simulate; f=simulate(json.loads(sys.argv[1]), C(drop_rate=0.2, repeat_rate=0.2, blank_rate=0.2, "
            f"substitute_rate=0.2), {V_CHAR}, 'utt-1'); print(json.dumps([f.ids, f.smooth]))")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    res = subprocess.run([sys.executable, "-c", code, json.dumps(ids)], capture_output=True, text=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(__file__)), check=True)
    assert json.loads(res.stdout) == [a.ids, a.smooth]


def test_all_dropped_keeps_first():
    cfg = replace(OFF, drop_rate=0.99)
    outs = [simulate([5, 6, 7], cfg, V_CHAR, f"k{i}") for i in range(300)]
    assert all(len(f) >= 1 for f in outs)
    assert sum(f.ids == [5] for f in outs) > 250  # P(all three dropped) = 0.97


def test_bad_input_names_key():
    cfg = SimulationConfig()
    with pytest.raises(ValueError, match="utt-empty"):
        simulate([], cfg, V_CHAR, "utt-empty")
    with pytest.raises(ValueError, match="utt-blank"):
        simulate([3, 0, 4], cfg, V_CHAR, "utt-blank")
    with pytest.raises(ValueError, match="utt-range"):
        simulate([3, V_CHAR], cfg, V_CHAR, "utt-range")
    with pytest.raises(ValueError, match="empty batch"):
        collate_simulated([], V_CHAR)


def test_collate_and_greedy_match_dense_argmax():
    # blank masses below 1/V and alpha up to 1 exercise the argmax tie rules of greedy_ctc_decode_frames
    cfg = SimulationConfig(alpha_min=0.0, alpha_max=1.0, drop_rate=0.1, repeat_rate=0.3, blank_rate=0.4,
                           blank_mass_min=0.0, blank_mass_max=1.0, substitute_rate=0.1)
    sents = char_sentences(60, 9)
    frames = [simulate(s, cfg, V_CHAR, f"c{i}") for i, s in enumerate(sents)]
    frames.append(SimulatedFrames(ids=[3, 0, 3, 4], smooth=[1.0, 0.5, 0.2, 1.02]))  # uniform / inverted frames
    post = collate_simulated(frames, V_CHAR)
    assert post.ids.shape == post.smooth.shape == (len(frames), max(len(f) for f in frames))
    assert post.lengths.tolist() == [len(f) for f in frames]
    am = post.to(dtype=torch.float64).dense_probs().argmax(-1)
    for b, f in enumerate(frames):
        assert post.ids[b, : len(f)].tolist() == f.ids
        assert TOK.ctc_collapse(am[b, : len(f)].tolist()) == greedy_ctc_decode_frames(f)


def _levenshtein(a: list[int], b: list[int]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def test_unit_error_rate_matches_plain_dp():
    r = random.Random(3)
    refs = [[r.randrange(1, 6) for _ in range(r.randint(1, 12))] for _ in range(100)]
    hyps = [[r.randrange(1, 6) for _ in range(r.randint(0, 12))] for _ in range(100)]
    expect = sum(map(_levenshtein, refs, hyps)) / sum(map(len, refs))
    assert unit_error_rate(refs, hyps) == pytest.approx(expect)


@pytest.mark.parametrize("target,case,extra", [
    (0.05, "char", {}),
    (0.1, "char", {"repeat_rate": 0.2, "blank_rate": 0.3}),
    (0.2, "char", {}),
    (0.1, "big", {}),
])
def test_target_cer(target, case, extra):
    calib, v = CASES[case][0][:500], CASES[case][1]  # calibration sample; scored on 1,000 fresh sentences
    cfg = resolve_rates(SimulationConfig(target_cer=target, **extra), calib, v)
    assert cfg.drop_rate == cfg.substitute_rate > 0
    if target == 0.05:
        assert resolve_rates(cfg, calib, v) == cfg  # deterministic and idempotent
    fresh = char_sentences(1000, 77) if case == "char" else big_sentences(1000, 78)
    hyps = [greedy_ctc_decode_frames(simulate(s, cfg, v, f"fresh/{i}", epoch=3)) for i, s in enumerate(fresh)]
    assert abs(unit_error_rate(fresh, hyps) - target) < 0.02


def test_resolve_rates_passthrough_and_zero():
    cfg = SimulationConfig(drop_rate=0.3)
    assert resolve_rates(cfg, CASES["char"][0], V_CHAR) is cfg
    z = resolve_rates(SimulationConfig(target_cer=0.0), CASES["char"][0], V_CHAR)
    assert z.drop_rate == z.substitute_rate == 0.0
    with pytest.raises(ValueError):
        resolve_rates(SimulationConfig(target_cer=0.1), [[], []], V_CHAR)
