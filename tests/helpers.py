"""Shared builders for tests: a tiny config and hand-made SpeechBatches (no data pipeline involved)."""

from __future__ import annotations

from tasu.align.cps import collate_simulated, simulate
from tasu.config.loader import load_config
from tasu.text.prompts import PromptBuilder, load_prompts
from tasu.types import SpeechBatch


def tiny_config(tmp_path, *overrides):
    return load_config("tiny", [f"output_dir={tmp_path}/run", *overrides])


def text_batch(model, sentences: list[str], cfg, with_answer: bool = True, task: str = "ASR") -> SpeechBatch:
    """A simulated-mode batch built directly from sentences."""
    pb = PromptBuilder(model.llm_tokenizer, load_prompts())
    ctc = model.ctc_tokenizer
    frames = [simulate(ctc.encode(s), cfg.simulation, ctc.vocab_size, key=f"k{i}") for i, s in enumerate(sentences)]
    parts = [pb.build(task, s if with_answer else None) for s in sentences]
    return SpeechBatch(keys=[f"k{i}" for i in range(len(sentences))], tasks=[task] * len(sentences),
                       prompt_prefix=[p.prefix for p in parts], prompt_suffix=[p.suffix for p in parts],
                       answer=[p.answer for p in parts], references=list(sentences),
                       posteriors=collate_simulated(frames, ctc.vocab_size))
