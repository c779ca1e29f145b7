"""`tasu eval run MODEL --data FILE --out results.jsonl`: decode evaluation records with a trained SpeechLLM.

MODEL is a run dir (its config.yaml rebuilt, then the last finished stage's weights) or a `tasu export` folder.
The records of FILE (any source `data.eval` accepts: LLaSO JSON / JSONL, ps-slm JSON lines, shards) go through the
evaluation pipeline of the model's input mode (prompts without answers, samples in order, each once; bad samples
skipped and counted as in training), answers are generated with `SpeechLLM.generate` (greedy or beam search), and
each sample becomes one JSON line {"key", "task", "reference", "hypothesis"}: the results format of
`tasu eval report`, which scores it per task.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from tasu import backend
from tasu.config.fields import ConfigError

log = logging.getLogger("tasu.eval")


def load_for_eval(path: str | Path):
    """(SpeechLLM in eval mode, its Config) from a run dir or an export folder."""
    from tasu.config.loader import load_config
    from tasu.train.export import from_pretrained, load_trained_weights

    p = Path(path)
    if (p / "tasu_config.yaml").is_file():
        return from_pretrained(p), load_config(str(p / "tasu_config.yaml"))
    if (p / "config.yaml").is_file():
        from tasu.model.build import build_speech_llm

        cfg = load_config(str(p / "config.yaml"))
        model = build_speech_llm(cfg)
        load_trained_weights(model, p, cfg)
        return model.eval(), cfg
    raise FileNotFoundError(f"{path}: neither a run dir (config.yaml) nor a tasu export (tasu_config.yaml)")


def default_mode(cfg) -> str:
    """The input mode of the run's last SpeechLLM stage (ctc stages have no LLM to decode with)."""
    modes = [s.mode for s in cfg.stages if s.mode != "ctc"]
    if not modes:
        raise ConfigError("config key 'stages': the run has no SpeechLLM stage (only ctc stages): use `tasu ctc eval`")
    return modes[-1]


@torch.no_grad()
def decode_records(model, cfg, data, mode: str, batch_size: int, max_new_tokens: int, beam: int,
                   max_samples: int = 0, task: str = "ASR", repetition_penalty: float = 1.0,
                   no_repeat_ngram_size: int = 0) -> list[dict]:
    """Generate an answer for every sample of `data` (a path, or a data.eval SourceConfig whose own task wins);
    returns [{key, task, reference, hypothesis}] in order."""
    from tasu.data.config import SourceConfig
    from tasu.data.expansion import speech_expansion
    from tasu.data.loader import eval_batches
    from tasu.text.prompts import PromptBuilder

    dev = backend.device()
    model = model.to(dev).eval()
    builder = PromptBuilder.from_config(cfg.prompts, model.llm_tokenizer)
    source = data if isinstance(data, SourceConfig) else SourceConfig(path=str(data), task=task)
    batches = eval_batches(cfg.data, [source], mode, model.ctc_tokenizer, builder,
                           batch_size, cfg.simulation, expansion=speech_expansion(model, mode, cfg.data))
    out: list[dict] = []
    for batch in batches:
        batch_mode = "simulated" if batch.is_text_only else mode
        hyps = model.generate(batch.to(dev), batch_mode, max_new_tokens=max_new_tokens, num_beams=beam,
                              repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
        for key, t, ref, hyp in zip(batch.keys, batch.tasks, batch.references, hyps):
            out.append({"key": key, "task": t, "reference": ref, "hypothesis": hyp})
        if max_samples and len(out) >= max_samples:
            return out[:max_samples]
    return out


def write_results(path: Path, records: list[dict]) -> None:
    """Results as JSON lines ({key, task, reference, hypothesis, ...}), written atomically (tmp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tasu eval run", description=(
        "Decode evaluation records with a trained SpeechLLM and write {key, task, reference, hypothesis} JSON "
        "lines for `tasu eval report`."))
    p.add_argument("model", metavar="RUN_DIR_OR_EXPORT", help="a tasu run dir or a `tasu export` folder")
    p.add_argument("--data", required=True, help="evaluation records: .jsonl / .json manifest or shards")
    p.add_argument("--out", required=True, help="results file to write (JSON lines)")
    p.add_argument("--mode", default=None, help="input mode (default: the run's last SpeechLLM stage's)")
    p.add_argument("--batch-size", type=int, default=None, help="default: eval.batch_size of the run's config")
    p.add_argument("--beam", type=int, default=None, help="beam size (default: eval.beam)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: eval.max_new_tokens")
    p.add_argument("--max-samples", type=int, default=None, help="decode at most N samples (default: "
                                                                 "eval.max_samples; 0 = all)")
    p.add_argument("--task", default="ASR", help="task of records that carry none")
    p.add_argument("--repetition-penalty", type=float, default=None,
                   help="penalty on tokens already generated (default: eval.repetition_penalty; 1.0 = off)")
    p.add_argument("--no-repeat-ngram-size", type=int, default=None,
                   help="forbid repeated n-grams of this size (default: eval.no_repeat_ngram_size; 0 = off)")
    return p


def run_main(argv: Sequence[str]) -> int:
    """Entry point of `tasu eval run`; returns the exit code."""
    args = _parser().parse_args(list(argv))
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in ("batch_size", "beam", "max_new_tokens"):
        v = getattr(args, name)
        if v is not None and v < 1:
            print(f"tasu eval run: error: --{name.replace('_', '-')} must be >= 1, got {v}", file=sys.stderr)
            return 2
    try:
        model, cfg = load_for_eval(args.model)
        mode = args.mode or default_mode(cfg)
        flags = {k: getattr(args, k) for k in ("repetition_penalty", "no_repeat_ngram_size")}
        ev = dataclasses.replace(cfg.eval, **{k: v for k, v in flags.items() if v is not None})   # checks them
        results = decode_records(model, cfg, args.data, mode, args.batch_size or ev.batch_size,
                                 args.max_new_tokens or ev.max_new_tokens, args.beam or ev.beam,
                                 ev.max_samples if args.max_samples is None else args.max_samples, args.task,
                                 repetition_penalty=ev.repetition_penalty, no_repeat_ngram_size=ev.no_repeat_ngram_size)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"tasu eval run: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    write_results(out, results)
    print(f"wrote {len(results)} results to {out} (mode {mode})")
    return 0
