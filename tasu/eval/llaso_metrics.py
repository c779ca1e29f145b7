"""LLaSO-Eval metrics: score a speech LLM's free-text answers per task.

Argument order is always (references, hypotheses), as in `tasu.eval.metrics`. The LLaSO reference scripts call
their WER and PER helpers with hypothesis and reference swapped, which divides by the hypothesis length and turns
deletions into insertions (ref "a b c d", hyp "a b": right 2/4 = 0.5, swapped 2/2 = 1.0). Here the reference is
the denominator, as in every ASR toolkit.

Metric kinds (`MetricSpec.kind`) and their primary metric:
    wer      word error rate (CER when the references are Chinese, via `metrics.error_rate`)  lower is better
    cer      character error rate                                                           lower is better
    per      phoneme error rate over phone tokens                                           lower is better
    label    exclusive-label accuracy over a closed label set (+ abstention rate)           higher is better
    numeric  mean absolute error of the first number / range in the answer                  lower is better
    score    exact match of a parsed score, e.g. pronunciation 0-10 (+ MAE)                 higher is better
    exact    exact match after `normalize_text` (open answers with one right string)        higher is better

Closed-set answers ("label"): an answer follows the instruction when it states exactly one valid label; labels
are matched as whole words after `normalize_text`, longest label first, so "north american" is one label, not
also "american", and "female" never matches "male". Accuracy counts an answer right only when its one label is
the reference; abstention is the fraction of answers with zero or several distinct labels ("male or female",
"I cannot tell"). Both are over all n answers.

Numbers ("numeric", "score"): the first number in the text, or the midpoint of the first range written
"20-30", "20 to 30", "20~30" or "between 20 and 30" (so "20s" -> 20; number words are not read). References must
parse (else `BadReference`); an unparsable hypothesis is counted in `n_unparsable` and left out of the MAE, which
is then over the parsed answers only — report both. When no hypothesis parses, the MAE is NaN.

Task names: the LLaSO README names the task families (ASR, speaker gender and age, accent, emotion, pronunciation
scoring; 20 tasks in all) but not the 20 task identifiers or their label sets. `TASK_METRICS` uses the names of
those families plus the remaining LLaSO task families (phoneme recognition, intent, entity, vocal sound,
instrument, pitch, velocity, speed); names are matched after lower-casing and mapping punctuation/spaces to "_",
and common spellings are aliases (`TASK_ALIASES`). Unless a spec fixes the label set, the label set of a closed-set
task is taken from the references of the evaluated data (`label_set`), so a valid label that never occurs as a
reference counts as an abstention, not as a wrong answer.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tasu.eval.metrics import accuracy, cer, error_rate, is_chinese, normalize_text, wer

# kind -> (primary metric name, higher is better)
KINDS: dict[str, tuple[str, bool]] = {
    "wer": ("wer", False),
    "cer": ("cer", False),
    "per": ("per", False),
    "label": ("accuracy", True),
    "numeric": ("mae", False),
    "score": ("accuracy", True),
    "exact": ("accuracy", True),
}


class BadReference(ValueError):
    """A reference that cannot be scored; `index` is its position in the reference list."""

    def __init__(self, index: int, message: str):
        super().__init__(f"reference {index}: {message}")
        self.index = index


def _normalized_labels(labels: Sequence[str]) -> tuple[str, ...]:
    if isinstance(labels, str):
        raise TypeError("labels must be a list of strings, not a single string")
    out = []
    for lab in labels:
        n = normalize_text(lab)
        if not n:
            raise ValueError(f"label {lab!r} is empty after normalisation")
        out.append(n)
    if not out:
        raise ValueError("empty label set")
    if len(set(out)) != len(out):
        dup = sorted({x for x in out if out.count(x) > 1})
        raise ValueError(f"labels collide after normalisation: {dup}")
    return tuple(out)


@dataclass(frozen=True)
class MetricSpec:
    """How one task is scored: the metric kind (see the module docstring) and, for closed-set tasks, an optional
    fixed label set (None: the labels come from the evaluated references)."""

    kind: str
    labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown metric kind {self.kind!r} (known: {', '.join(KINDS)})")
        if self.labels is not None:
            if self.kind != "label":
                raise ValueError(f"a label set only applies to kind 'label', not {self.kind!r}")
            _normalized_labels(self.labels)  # validates: non-empty, distinct after normalisation

    @property
    def metric(self) -> str:
        """Name of the primary metric (kind "wer" reports "cer" instead on Chinese references)."""
        return KINDS[self.kind][0]

    @property
    def higher_is_better(self) -> bool:
        return KINDS[self.kind][1]


TASK_METRICS: dict[str, MetricSpec] = {
    "asr": MetricSpec("wer"),
    "phoneme_recognition": MetricSpec("per"),
    "speaker_gender_classification": MetricSpec("label", ("female", "male")),
    "speaker_age": MetricSpec("numeric"),
    "accent_classification": MetricSpec("label"),
    "emotion_recognition": MetricSpec("label"),
    "intent_prediction": MetricSpec("label"),
    "entity_extraction": MetricSpec("exact"),
    "vocal_sound_classification": MetricSpec("label"),
    "instrument_classification": MetricSpec("label"),
    # NSynth's three instrument sources
    "instrument_source_classification": MetricSpec("label", ("acoustic", "electronic", "synthetic")),
    "pitch": MetricSpec("numeric"),
    "velocity": MetricSpec("numeric"),
    "speed": MetricSpec("label"),
    "pronunciation_scoring": MetricSpec("score"),
    "pronunciation_scoring_sentence": MetricSpec("score"),
    "pronunciation_scoring_word": MetricSpec("score"),
}

# alias (already in `task_key` form) -> canonical name in TASK_METRICS; no alias joins two distinct tasks
TASK_ALIASES: dict[str, str] = {
    "automatic_speech_recognition": "asr",
    "speech_recognition": "asr",
    "transcription": "asr",
    "phoneme": "phoneme_recognition",
    "phone_recognition": "phoneme_recognition",
    "phoneme_transcription": "phoneme_recognition",
    "gender": "speaker_gender_classification",
    "speaker_gender": "speaker_gender_classification",
    "gender_classification": "speaker_gender_classification",
    "gender_recognition": "speaker_gender_classification",
    "age": "speaker_age",
    "age_classification": "speaker_age",
    "age_prediction": "speaker_age",
    "age_estimation": "speaker_age",
    "speaker_age_classification": "speaker_age",
    "accent": "accent_classification",
    "accent_recognition": "accent_classification",
    "emotion": "emotion_recognition",
    "emotion_classification": "emotion_recognition",
    "speech_emotion_recognition": "emotion_recognition",
    "intent": "intent_prediction",
    "intent_classification": "intent_prediction",
    "intent_recognition": "intent_prediction",
    "entity": "entity_extraction",
    "entity_recognition": "entity_extraction",
    "vocal_sound": "vocal_sound_classification",
    "instrument": "instrument_classification",
    "instrument_source": "instrument_source_classification",
    "pitch_classification": "pitch",
    "pitch_prediction": "pitch",
    "pitch_estimation": "pitch",
    "velocity_classification": "velocity",
    "velocity_prediction": "velocity",
    "speed_classification": "speed",
    "speaking_speed": "speed",
    "speech_rate": "speed",
    "speaking_rate": "speed",
    "pronunciation": "pronunciation_scoring",
    "pronunciation_assessment": "pronunciation_scoring",
    "sentence_pronunciation_scoring": "pronunciation_scoring_sentence",
    "word_pronunciation_scoring": "pronunciation_scoring_word",
}


def task_key(name: str) -> str:
    """Canonical spelling of a task name: lower case, runs of non-alphanumerics -> "_" ("Speaker Gender" ->
    "speaker_gender")."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def get_spec(task: str, registry: Mapping[str, MetricSpec] | None = None) -> tuple[str, MetricSpec]:
    """(canonical task name, spec) for a task name or alias; `registry` defaults to TASK_METRICS."""
    registry = TASK_METRICS if registry is None else registry
    key = task_key(task)
    key = key if key in registry else TASK_ALIASES.get(key, key)
    if key not in registry:
        raise ValueError(f"unknown task {task!r} (known: {', '.join(sorted(registry))})")
    return key, registry[key]


def _check_pairs(refs: Sequence[str], hyps: Sequence[str], name: str) -> None:
    if isinstance(refs, str) or isinstance(hyps, str):
        raise TypeError(f"{name}: refs and hyps must be lists of strings, not a single string")
    if len(refs) == 0:
        raise ValueError(f"{name}: empty reference list")
    if len(refs) != len(hyps):
        raise ValueError(f"{name}: {len(refs)} references but {len(hyps)} hypotheses")


# ---------------------------------------------------------------- phonemes

_PHONE_SEP = re.compile(r"[\s,，]+")


def _phones(s: str, ignore_case: bool) -> str:
    s = unicodedata.normalize("NFC", s)
    return " ".join(t for t in _PHONE_SEP.split(s.lower() if ignore_case else s) if t)


def per(refs: Sequence[str], hyps: Sequence[str], ignore_case: bool = False) -> float:
    """Corpus phoneme error rate: (S + D + I) / number of reference phones, over phone tokens separated by spaces
    (commas too). Phones are compared as written — no punctuation stripping, since phone sets use symbols such as
    "ː" or "." — and case-sensitively unless `ignore_case` (X-SAMPA is case-sensitive)."""
    _check_pairs(refs, hyps, "per")
    return wer([_phones(r, ignore_case) for r in refs], [_phones(h, ignore_case) for h in hyps], normalize=False)


# ---------------------------------------------------------------- closed-set labels


def label_set(refs: Sequence[str]) -> tuple[str, ...]:
    """The label set of a closed-set task taken from its references: the distinct normalised references, sorted."""
    return tuple(sorted({normalize_text(r) for r in refs} - {""}))


class LabelMatcher:
    """Finds the distinct valid labels an answer states (whole words after `normalize_text`).

    One regex alternation, longest label first: at each position the longest label wins and matches never
    overlap, so "north american" is read once, not also as "american". Labels holding CJK characters are matched
    as substrings (normalised CJK text has no spaces between words).
    """

    def __init__(self, labels: Sequence[str]):
        self.labels = _normalized_labels(labels)
        ordered = sorted(self.labels, key=len, reverse=True)
        alts = [re.escape(lab) if is_chinese([lab]) else rf"(?<!\S){re.escape(lab)}(?!\S)" for lab in ordered]
        self._re = re.compile("|".join(alts))

    def find(self, answer: str) -> list[str]:
        """Distinct labels stated in `answer`, in order of first mention."""
        found = [m.group(0) for m in self._re.finditer(normalize_text(answer))]
        return list(dict.fromkeys(found))


def _label_counts(refs: Sequence[str], hyps: Sequence[str], labels: Sequence[str] | None) -> tuple[int, int, int]:
    """(n_correct, n_abstained, n_labels); references must be valid labels."""
    _check_pairs(refs, hyps, "label accuracy")
    matcher = LabelMatcher(label_set(refs) if labels is None else labels)
    valid = set(matcher.labels)
    correct = abstained = 0
    for i, (r, h) in enumerate(zip(refs, hyps)):
        ref = normalize_text(r)
        if ref not in valid:
            raise BadReference(i, f"{r!r} is not in the label set {sorted(valid)}")
        found = matcher.find(h)
        if len(found) != 1:
            abstained += 1
        elif found[0] == ref:
            correct += 1
    return correct, abstained, len(valid)


def exclusive_accuracy(refs: Sequence[str], hyps: Sequence[str], labels: Sequence[str] | None = None) -> float:
    """Fraction of answers that state exactly one valid label and it is the reference (labels: the closed label
    set; None -> `label_set(refs)`)."""
    return _label_counts(refs, hyps, labels)[0] / len(refs)


def abstention_rate(hyps: Sequence[str], labels: Sequence[str]) -> float:
    """Fraction of answers that do not state exactly one valid label (did not follow the instruction)."""
    if isinstance(hyps, str) or len(hyps) == 0:
        raise ValueError("abstention_rate: hyps must be a non-empty list of strings")
    matcher = LabelMatcher(labels)
    return sum(len(matcher.find(h)) != 1 for h in hyps) / len(hyps)


# ---------------------------------------------------------------- numbers

# a number; a leading "-" is a sign only where it cannot be a range dash ("20-30")
_N = r"(?:(?<![\w.])-)?\d+(?:\.\d+)?"
_NUMBER_RE = re.compile(
    rf"\bbetween\s+(?P<a1>{_N})\s+and\s+(?P<b1>{_N})"
    rf"|(?P<a2>{_N})(?:\s*[-\u2013\u2014~]\s*|\s+to\s+)(?P<b2>\d+(?:\.\d+)?)"
    rf"|(?P<x>{_N})",
    re.IGNORECASE,
)


def parse_number(text: str) -> float | None:
    """The first number in `text`, or the midpoint of the first range ("20-30", "20 to 30", "20~30",
    "between 20 and 30" -> 25.0); None when the text holds no digits. Full-width digits are read (NFKC)."""
    m = _NUMBER_RE.search(unicodedata.normalize("NFKC", text))
    if m is None:
        return None
    if m.group("x") is not None:
        return float(m.group("x"))
    a, b = (m.group("a1"), m.group("b1")) if m.group("a1") is not None else (m.group("a2"), m.group("b2"))
    return (float(a) + float(b)) / 2


@dataclass(frozen=True)
class NumericStats:
    """MAE over the parsed hypotheses; `exact` = fraction of all n whose parsed value equals the reference."""

    mae: float
    exact: float
    n: int
    n_unparsable: int


def numeric_stats(refs: Sequence[str], hyps: Sequence[str]) -> NumericStats:
    """Parse references and hypotheses with `parse_number` (ranges -> midpoints) and compare them. A reference
    that does not parse raises `BadReference`; a hypothesis that does not parse is counted, not scored."""
    _check_pairs(refs, hyps, "numeric")
    errors: list[float] = []
    for i, (r, h) in enumerate(zip(refs, hyps)):
        ref = parse_number(r)
        if ref is None:
            raise BadReference(i, f"{r!r} holds no number")
        hyp = parse_number(h)
        if hyp is not None:
            errors.append(abs(hyp - ref))
    mae = sum(errors) / len(errors) if errors else math.nan
    exact = sum(e < 1e-9 for e in errors) / len(refs)
    return NumericStats(mae=mae, exact=exact, n=len(refs), n_unparsable=len(refs) - len(errors))


# ---------------------------------------------------------------- one task


def score_task(
    task: str,
    refs: Sequence[str],
    hyps: Sequence[str],
    labels: Sequence[str] | None = None,
    spec: MetricSpec | None = None,
) -> dict[str, float | int | str | bool]:
    """Score one task: {"task", "kind", "metric", "value" (the primary metric), "higher_is_better", "n", ...}.

    Secondary numbers by kind — label: "abstention", "accuracy_answered" (accuracy among the answers that stated
    one label; NaN if none did), "n_labels", "label_source" ("given" | "spec" | "references"); numeric:
    "n_unparsable", "unparsable_rate", "exact"; score: "mae", "n_unparsable", "unparsable_rate".
    `labels` overrides the spec's label set (closed-set tasks only); `spec` bypasses the registry lookup.
    """
    name, spec = (task_key(task), spec) if spec is not None else get_spec(task)
    _check_pairs(refs, hyps, name)
    if labels is not None and spec.kind != "label":
        raise ValueError(f"{name}: labels only apply to closed-set (kind 'label') tasks, not {spec.kind!r}")
    out: dict[str, float | int | str | bool] = {
        "task": name,
        "kind": spec.kind,
        "metric": spec.metric,
        "higher_is_better": spec.higher_is_better,
        "n": len(refs),
    }
    if spec.kind == "wer":
        out["metric"] = "cer" if is_chinese(refs) else "wer"
        out["value"] = error_rate(refs, hyps)
    elif spec.kind == "cer":
        out["value"] = cer(refs, hyps)
    elif spec.kind == "per":
        out["value"] = per(refs, hyps)
    elif spec.kind == "exact":
        out["value"] = accuracy(refs, hyps)
    elif spec.kind == "label":
        source = "given" if labels is not None else ("spec" if spec.labels is not None else "references")
        label_list = labels if labels is not None else spec.labels
        correct, abstained, n_labels = _label_counts(refs, hyps, label_list)
        answered = len(refs) - abstained
        out.update(
            value=correct / len(refs),
            abstention=abstained / len(refs),
            accuracy_answered=correct / answered if answered else math.nan,
            n_labels=n_labels,
            label_source=source,
        )
    else:  # numeric, score
        st = numeric_stats(refs, hyps)
        out.update(n_unparsable=st.n_unparsable, unparsable_rate=st.n_unparsable / st.n)
        if spec.kind == "numeric":
            out.update(value=st.mae, exact=st.exact)
        else:
            out.update(value=st.exact, mae=st.mae)
    return out
