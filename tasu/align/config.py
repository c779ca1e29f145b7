"""Config of the CTC posterior simulator (CPS) and of PSD."""

from __future__ import annotations

from dataclasses import dataclass

from tasu.config.fields import check, doc_field


@dataclass
class SimulationConfig:
    """CPS: how plain text becomes simulated CTC posteriors. Defaults equal the reference TASU code."""

    alpha_min: float = doc_field(0.0, "lower bound of the per-sentence label-smoothing mass alpha ~ U(min, max)")
    alpha_max: float = doc_field(0.1, "upper bound of the per-sentence label-smoothing mass")
    drop_rate: float = doc_field(0.05, "probability of dropping each token frame")
    repeat_rate: float = doc_field(0.0, "probability of duplicating a token frame (repeats collapse in CTC)")
    blank_rate: float = doc_field(0.0, "probability of inserting a blank frame after each token frame")
    blank_mass_min: float = doc_field(0.9, "lower bound of the blank probability of an inserted blank frame")
    blank_mass_max: float = doc_field(1.0, "upper bound of the blank probability of an inserted blank frame")
    substitute_rate: float = doc_field(0.0, "probability of replacing a token by a random non-blank token")
    separate_repeats: bool = doc_field(False, "blank between identical adjacent tokens so CTC keeps both "
                                                "(off in the reference)")
    target_cer: float | None = doc_field(None, "if set, choose drop/substitution rates so greedy CTC CER ~ this")
    seed: int = doc_field(0, "base seed; each sample's noise is a function of (seed, sample key)")

    def __post_init__(self) -> None:
        for name in ("alpha_min", "alpha_max", "drop_rate", "repeat_rate", "blank_rate", "blank_mass_min",
                     "blank_mass_max", "substitute_rate"):
            v = getattr(self, name)
            check(0.0 <= v <= 1.0, f"simulation.{name}", f"must be in [0, 1], got {v}")
        check(self.alpha_min <= self.alpha_max, "simulation.alpha_min", "must be <= simulation.alpha_max")
        check(self.blank_mass_min <= self.blank_mass_max, "simulation.blank_mass_min",
              "must be <= simulation.blank_mass_max")
        check(self.drop_rate < 1.0, "simulation.drop_rate", "must be < 1 (every token would be dropped)")
        if self.target_cer is not None:
            check(0.0 <= self.target_cer < 0.9, "simulation.target_cer", f"must be in [0, 0.9), got {self.target_cer}")


@dataclass
class PSDConfig:
    """PSD: compression of real encoder posteriors before the projector."""

    enabled: bool = doc_field(True, "apply PSD to real posteriors (posterior / lego / features modes)")
    blank_threshold: float = doc_field(0.9, "drop frames whose (mean) blank probability is >= this")

    def __post_init__(self) -> None:
        check(0.0 < self.blank_threshold <= 1.0, "psd.blank_threshold",
              f"must be in (0, 1], got {self.blank_threshold}")
