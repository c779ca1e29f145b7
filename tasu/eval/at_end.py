"""`eval.at_end`: after training, decode `data.eval` with the trained run and score it.

Writes OUTPUT_DIR/eval/results.jsonl ({key, task, reference, hypothesis, source}: what `tasu eval run` writes) and
the scores from `tasu eval report` (report.json, report.md: WER / CER for ASR, the LLaSO metrics for other tasks),
using the decoding settings of the `eval` section. With several sources, keys are prefixed "<source index>:" so
that they stay unique per task.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("tasu.eval")


def evaluate_at_end(run_dir: Path) -> dict:
    """Decode and score data.eval for the run in `run_dir` (its config.yaml and trained weights); returns the
    report as JSON."""
    from tasu.eval.report import build_report, load_results, report_to_json, write_report
    from tasu.eval.run import decode_records, default_mode, load_for_eval, write_results

    model, cfg = load_for_eval(run_dir)
    mode, ev = default_mode(cfg), cfg.eval
    out = Path(run_dir) / "eval"
    records = []
    for i, source in enumerate(cfg.data.eval):
        recs = decode_records(model, cfg, source, mode, ev.batch_size, ev.max_new_tokens, ev.beam, ev.max_samples,
                              repetition_penalty=ev.repetition_penalty, no_repeat_ngram_size=ev.no_repeat_ngram_size)
        for r in recs:
            key = f"{i}:{r['key']}" if len(cfg.data.eval) > 1 else r["key"]
            records.append({**r, "key": key, "source": source.name or source.path})
    write_results(out / "results.jsonl", records)
    report = build_report([load_results(out / "results.jsonl", name=Path(run_dir).name)])
    write_report(report, out / "report.md", out / "report.json")
    log.info("eval.at_end: %d records (mode %s) -> %s", len(records), mode, out / "report.md")
    return report_to_json(report)
