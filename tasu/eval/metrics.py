"""Scoring: text normalisation, WER / CER (jiwer), BLEU (sacrebleu), exact-match accuracy.

Argument order is always (references, hypotheses). Error rates are corpus-level:
    (substitutions + deletions + insertions) / number of reference units, summed over all pairs,
so they are asymmetric: hypothesis words missing from a long reference cost deletions, extra words cost
insertions, and the denominator is always the reference length.

Empty references (after normalisation) do not crash: such a pair adds 0 reference units and one insertion per
hypothesis unit. If every reference is empty the rate is 0.0 when every hypothesis is empty too, else inf.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import jiwer
import sacrebleu

# Scripts written without spaces between words, scored by characters: CJK ideographs (+ ext. A, compatibility)
# and Japanese kana.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RE = re.compile(f"[{_CJK}]")
_CJK_GAP_RE = re.compile(f"(?<=[{_CJK}])\\s+(?=[{_CJK}])")
_APOSTROPHES = "'\u2019\u02bc"


def is_chinese(texts: Sequence[str], lang: str = "en") -> bool:
    """True when `lang` starts with "zh" or any text holds a CJK character (then CER, not WER, is reported)."""
    return lang.lower().startswith("zh") or any(_CJK_RE.search(t) for t in texts)


def normalize_text(s: str, lang: str = "en") -> str:
    """The reference normalisation: NFKC, lower-case, strip punctuation, collapse spaces; CJK chars are kept.

    Apostrophes are removed without a gap ("don't" -> "dont"); other punctuation (Unicode category P*) becomes
    a space ("well-known" -> "well known"). Spaces between two CJK characters are removed (CJK text is scored by
    characters, and models often space them out); other scripts and symbols are kept as they are. `lang` is
    accepted for symmetry with the scorers: the rule is the same for every language.
    """
    del lang  # one rule for all languages (CJK handling depends on the characters themselves)
    s = unicodedata.normalize("NFKC", s).lower()
    s = "".join("" if c in _APOSTROPHES else (" " if unicodedata.category(c).startswith("P") else c) for c in s)
    s = " ".join(s.split())
    return _CJK_GAP_RE.sub("", s)


def _check_pairs(refs: Sequence[str], hyps: Sequence[str], name: str) -> None:
    if isinstance(refs, str) or isinstance(hyps, str):
        raise TypeError(f"{name}: refs and hyps must be lists of strings, not a single string")
    if len(refs) == 0:
        raise ValueError(f"{name}: empty reference list")
    if len(refs) != len(hyps):
        raise ValueError(f"{name}: {len(refs)} references but {len(hyps)} hypotheses")


def _rate(errors: int, n_ref: int) -> float:
    if n_ref == 0:
        return 0.0 if errors == 0 else float("inf")
    return errors / n_ref


def _corpus_rate(refs: Sequence[str], hyps: Sequence[str], name: str, normalize: bool, chars: bool) -> float:
    _check_pairs(refs, hyps, name)
    if normalize:
        refs = [normalize_text(r) for r in refs]
        hyps = [normalize_text(h) for h in hyps]
    process = jiwer.process_characters if chars else jiwer.process_words
    out = process(list(refs), list(hyps))
    errors = out.substitutions + out.deletions + out.insertions
    return _rate(errors, out.substitutions + out.deletions + out.hits)


def wer(refs: Sequence[str], hyps: Sequence[str], normalize: bool = True) -> float:
    """Corpus word error rate of hypotheses against references (normalised with `normalize_text` first)."""
    return _corpus_rate(refs, hyps, "wer", normalize, chars=False)


def cer(refs: Sequence[str], hyps: Sequence[str], normalize: bool = True) -> float:
    """Corpus character error rate (spaces count as characters, as in jiwer), after `normalize_text`."""
    return _corpus_rate(refs, hyps, "cer", normalize, chars=True)


def error_rate(refs: Sequence[str], hyps: Sequence[str], lang: str = "en") -> float:
    """CER for Chinese (lang "zh*" or CJK in the references), WER otherwise."""
    _check_pairs(refs, hyps, "error_rate")
    return cer(refs, hyps) if is_chinese(refs, lang) else wer(refs, hyps)


def bleu(refs: Sequence[str], hyps: Sequence[str], lang: str = "en") -> float:
    """Corpus BLEU in [0, 100] (sacrebleu, one reference per hypothesis; tokenize="zh" for Chinese, else
    "13a"). Text is scored as given (BLEU is case- and punctuation-sensitive by convention)."""
    _check_pairs(refs, hyps, "bleu")
    tok = "zh" if is_chinese(refs, lang) else "13a"
    return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)], tokenize=tok).score)


def accuracy(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Fraction of hypotheses equal to their reference after `normalize_text`."""
    _check_pairs(refs, hyps, "accuracy")
    return sum(normalize_text(r) == normalize_text(h) for r, h in zip(refs, hyps)) / len(refs)
