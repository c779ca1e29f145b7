"""CTC posterior simulation (CPS): turn a transcript's CTC token ids into simulated CTC frames.

One frame per kept token, each a smoothed one-hot (the sparse layout of `tasu.types.Posteriors`):
    p = (1 - smooth) * onehot(id) + smooth / V
Noise model (all rates from `SimulationConfig`, defaults = the reference TASU code: alpha ~ U(0, 0.1), drop 0.05):
    * alpha ~ U(alpha_min, alpha_max) once per sentence; every token frame has smooth = alpha.
    * each transcript token is dropped with drop_rate; a kept token is replaced with substitute_rate by a
      uniformly drawn non-blank id != the original (so substitute_rate is a rate among *kept* tokens).
      If every token is dropped, the first token is kept anyway (unchanged), so a sample always has >= 1 frame.
    * after a token frame, with repeat_rate, one identical extra frame (collapses under greedy CTC);
      then, with blank_rate, one blank frame with blank probability m ~ U(blank_mass_min, blank_mass_max).
      The blank comes after the repeat, never between a token and its own repeat.
    * separate_repeats: whenever two consecutive *kept* tokens have the same id (a transcript "ll", or one
      made by a drop / substitution) and no blank frame lies between them, a blank frame (m drawn as above)
      is inserted, so greedy CTC decoding returns exactly the kept tokens. Hence with separate_repeats the
      greedy-decoded sequence is the noisy token sequence: only drops and substitutions change it.

Blank-frame maths: the blank entry is (1 - s) + s / V = m  <=>  s = (1 - m) * V / (V - 1). For m >= 1/V this
is in [0, 1]; for m < 1/V it exceeds 1 slightly (up to V / (V - 1)) and the frame is still a valid
distribution (entries >= 0, sum 1), just with the blank no longer the argmax.

Determinism: each sample's noise is a pure function of (cfg.seed, epoch, key). Two local `random.Random`
streams are seeded from a blake2b hash of those (never the global RNG, never Python's salted hash()):
    * the error stream draws exactly one uniform u per transcript token: drop if u < d, else substitute if
      u < d + s (1 - d); the substitute id is taken from where u falls inside the substitution interval.
      One draw per token keeps the error pattern of every token aligned across rates (common random
      numbers): the set of corrupted tokens only grows with the rates, so CER is (near-)monotone in them
      and `resolve_rates` can bisect on it.
    * the frame stream draws alpha, the repeat / blank decisions and the blank masses.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from rapidfuzz.distance import Levenshtein

from tasu.align.config import SimulationConfig
from tasu.config.fields import ConfigError
from tasu.types import Posteriors

# resolve_rates: bisection on a shared drop = substitute rate r in [0, _R_MAX] (drop_rate must stay < 1).
_R_MAX = 0.95
_BISECT_STEPS = 16  # r to within 0.95 / 2**17 ~ 7e-6
_CALIB_MAX_SENTENCES = 2000


@dataclass
class SimulatedFrames:
    """One simulated sample: frame t is (1 - smooth[t]) * onehot(ids[t]) + smooth[t] / V."""

    ids: list[int]
    smooth: list[float]

    def __len__(self) -> int:
        return len(self.ids)


def _rngs(seed: int, key: str, epoch: int) -> tuple[random.Random, random.Random]:
    """(error stream, frame stream), a stable function of (seed, epoch, key)."""
    digest = hashlib.blake2b(f"{seed}\x1f{epoch}\x1f{key}".encode(), digest_size=32).digest()
    return random.Random(int.from_bytes(digest[:16], "little")), random.Random(int.from_bytes(digest[16:], "little"))


def _check_tokens(token_ids: Sequence[int], vocab_size: int, key: str, blank_id: int) -> None:
    if len(token_ids) == 0:
        raise ValueError(f"CPS: sample '{key}' has an empty transcript (no CTC tokens)")
    lo, hi = min(token_ids), max(token_ids)
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"CPS: sample '{key}' has token id {lo if lo < 0 else hi} outside [0, {vocab_size})")
    if blank_id in token_ids:
        raise ValueError(f"CPS: sample '{key}' contains the blank id {blank_id} in its transcript")


def simulate(token_ids: Sequence[int], cfg: SimulationConfig, vocab_size: int, key: str,
             epoch: int = 0, blank_id: int = 0) -> SimulatedFrames:
    """Simulated CTC frames for one transcript (CTC-tokenizer ids, no blanks); see the module docstring."""
    if not 0 <= blank_id < vocab_size or vocab_size < 2:
        raise ValueError(f"CPS: need vocab_size >= 2 and 0 <= blank_id < vocab_size, got {vocab_size}, {blank_id}")
    _check_tokens(token_ids, vocab_size, key, blank_id)
    d, s = cfg.drop_rate, cfg.substitute_rate
    if s > 0.0 and vocab_size < 3:
        raise ValueError("CPS: simulation.substitute_rate > 0 needs at least two non-blank ids (vocab_size >= 3)")
    err, frm = _rngs(cfg.seed, key, epoch)

    # --- errors: one uniform per transcript token (see module docstring) ---
    sub_hi = d + s * (1.0 - d)  # u in [d, sub_hi) -> substitute
    n_alt = vocab_size - 2  # non-blank ids other than the original
    if d == 0.0 and s == 0.0:
        kept = list(token_ids)
    else:
        rand = err.random
        kept = []
        for tok in token_ids:
            u = rand()
            if u < d:
                continue
            if u < sub_hi:
                # position of u inside the substitution interval -> index among the V-2 alternatives
                k = min(int((u - d) / (sub_hi - d) * n_alt), n_alt - 1)
                a, b = (blank_id, tok) if blank_id < tok else (tok, blank_id)
                k += k >= a
                k += k >= b
                tok = k
            kept.append(tok)
        if not kept:  # every token dropped: keep the first one unchanged (its u < d, so it had no substitution)
            kept = [token_ids[0]]

    # --- frames ---
    alpha = frm.uniform(cfg.alpha_min, cfg.alpha_max)
    rep, blk, sep = cfg.repeat_rate, cfg.blank_rate, cfg.separate_repeats
    m_lo, m_hi = cfg.blank_mass_min, cfg.blank_mass_max
    scale = vocab_size / (vocab_size - 1)  # blank smooth s = (1 - m) * V / (V - 1)
    ids: list[int] = []
    smooth: list[float] = []
    prev = None  # last emitted frame id
    for tok in kept:
        if sep and tok == prev:
            ids.append(blank_id)
            smooth.append((1.0 - frm.uniform(m_lo, m_hi)) * scale)
        ids.append(tok)
        smooth.append(alpha)
        if rep > 0.0 and frm.random() < rep:
            ids.append(tok)
            smooth.append(alpha)
        if blk > 0.0 and frm.random() < blk:
            ids.append(blank_id)
            smooth.append((1.0 - frm.uniform(m_lo, m_hi)) * scale)
        prev = ids[-1]
    return SimulatedFrames(ids=ids, smooth=smooth)


def collate_simulated(frames: list[SimulatedFrames], vocab_size: int, blank_id: int = 0) -> Posteriors:
    """Batch samples into sparse `Posteriors`: ids [B, T] long, smooth [B, T] float32, right-padded.

    Padding frames carry id = blank_id and smooth = 0 (they are outside `lengths` and must be ignored).
    """
    if not frames:
        raise ValueError("collate_simulated: empty batch")
    lengths = [len(f.ids) for f in frames]
    for i, f in enumerate(frames):
        if len(f.ids) != len(f.smooth) or len(f.ids) == 0:
            raise ValueError(f"collate_simulated: sample {i} has {len(f.ids)} ids and {len(f.smooth)} smooth values")
    t_max = max(lengths)
    ids = torch.full((len(frames), t_max), blank_id, dtype=torch.long)
    smooth = torch.zeros((len(frames), t_max), dtype=torch.float32)
    for i, f in enumerate(frames):
        ids[i, : lengths[i]] = torch.tensor(f.ids, dtype=torch.long)
        smooth[i, : lengths[i]] = torch.tensor(f.smooth, dtype=torch.float32)
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise ValueError(f"collate_simulated: ids outside [0, {vocab_size})")
    return Posteriors(lengths=torch.tensor(lengths, dtype=torch.long), vocab_size=vocab_size, ids=ids,
                      smooth=smooth, blank_id=blank_id)


def _frame_argmax(tok: int, s: float) -> int:
    """argmax of (1 - s) onehot(tok) + s / V with torch's first-index tie-break (no V needed)."""
    if s < 1.0:
        return tok
    if s == 1.0:  # uniform frame
        return 0
    return 0 if tok != 0 else 1  # s > 1: every id but tok ties for the maximum


def greedy_ctc_decode_frames(frames: SimulatedFrames, blank_id: int = 0) -> list[int]:
    """Greedy CTC on simulated frames: argmax per frame, merge runs of one id, drop blanks."""
    out: list[int] = []
    prev = None
    for tok, s in zip(frames.ids, frames.smooth):
        a = _frame_argmax(tok, s)
        if a != prev and a != blank_id:
            out.append(a)
        prev = a
    return out


def unit_error_rate(refs: Sequence[Sequence[int]], hyps: Sequence[Sequence[int]]) -> float:
    """Corpus error rate over unit sequences: sum of edit distances / sum of reference lengths."""
    if len(refs) != len(hyps) or not refs:
        raise ValueError(f"unit_error_rate: need equal non-empty lists, got {len(refs)} refs, {len(hyps)} hyps")
    n = sum(len(r) for r in refs)
    if n == 0:
        raise ValueError("unit_error_rate: all references are empty")
    return sum(Levenshtein.distance(r, h) for r, h in zip(refs, hyps)) / n


def _calibration_cer(cfg: SimulationConfig, sentences: list[list[int]], vocab_size: int, blank_id: int) -> float:
    hyps = [greedy_ctc_decode_frames(simulate(s, cfg, vocab_size, f"calib/{i}", 0, blank_id), blank_id)
            for i, s in enumerate(sentences)]
    return unit_error_rate(sentences, hyps)


def resolve_rates(cfg: SimulationConfig, sentences: list[list[int]], vocab_size: int,
                  blank_id: int = 0) -> SimulationConfig:
    """A copy of `cfg` whose drop_rate = substitute_rate = r is chosen so greedy-CTC CER ~= cfg.target_cer.

    Rule: equal drop and substitution rates (no insertion model; CER ~= r + r (1 - r)). r is found by bisection
    on a fixed calibration sample: the non-empty `sentences` (at most 2,000, taken at an even stride), simulated
    with keys "calib/<i>", epoch 0 and the rest of `cfg` (repeats / blanks included, although with
    separate_repeats they cannot change the greedy result). Deterministic; target_cer is kept in the copy, so
    calling it again gives the same rates. Turns separate_repeats on (otherwise doubled units such as "ll"
    collapse and add errors the rates do not control). Returns `cfg` unchanged when target_cer is None.
    """
    if cfg.target_cer is None:
        return cfg
    # with target_cer the noise model must be the only error source: separators stop CTC's merge of doubled units
    cfg = replace(cfg, separate_repeats=True)
    sents = [list(s) for s in sentences if len(s) > 0]
    if not sents:
        raise ValueError("resolve_rates: no non-empty calibration sentence")
    if len(sents) > _CALIB_MAX_SENTENCES:
        stride = len(sents) / _CALIB_MAX_SENTENCES
        sents = [sents[int(i * stride)] for i in range(_CALIB_MAX_SENTENCES)]
    target = cfg.target_cer
    if target == 0.0:
        return replace(cfg, drop_rate=0.0, substitute_rate=0.0)

    def cer_at(r: float) -> float:
        return _calibration_cer(replace(cfg, drop_rate=r, substitute_rate=r), sents, vocab_size, blank_id)

    lo, hi = 0.0, _R_MAX
    if cer_at(hi) < target:
        raise ConfigError(f"config key 'simulation.target_cer': {target} is out of reach on the calibration "
                          f"sentences (CER {cer_at(hi):.3f} at drop = substitute = {_R_MAX})")
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        if cer_at(mid) < target:
            lo = mid
        else:
            hi = mid
    r = 0.5 * (lo + hi)
    return replace(cfg, drop_rate=r, substitute_rate=r)
