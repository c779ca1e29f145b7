"""`eval.at_end`: after training, decode `data.eval` with the trained run and score it.

Writes OUTPUT_DIR/eval/results.jsonl ({key, task, reference, hypothesis, source}: what `tasu eval run` writes) and
the scores from `tasu eval report` (report.json, report.md: WER / CER for ASR, the LLaSO metrics for other tasks),
using the decoding settings of the `eval` section. With several sources, keys are prefixed "<source index>:" so
that they stay unique per task.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("tasu.eval")


def evaluate_at_end(run_dir: Path) -> dict:
    """Decode and score data.eval for the run in `run_dir` (its config.yaml and trained weights); returns the
    report as JSON."""
    from tasu.eval.report import build_report, load_results, render_markdown, report_to_json
    from tasu.eval.run import decode_records, default_mode, load_for_eval

    model, cfg = load_for_eval(run_dir)
    mode, ev = default_mode(cfg), cfg.eval
    out = Path(run_dir) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, source in enumerate(cfg.data.eval):
        recs = decode_records(model, cfg, source, mode, ev.batch_size, ev.max_new_tokens, ev.beam, ev.max_samples,
                              repetition_penalty=ev.repetition_penalty, no_repeat_ngram_size=ev.no_repeat_ngram_size)
        for r in recs:
            key = f"{i}:{r['key']}" if len(cfg.data.eval) > 1 else r["key"]
            lines.append(json.dumps({**r, "key": key, "source": source.name or source.path}, ensure_ascii=False))
    results = out / "results.jsonl"
    results.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    report = build_report([load_results(results, name=Path(run_dir).name)])
    as_json = report_to_json(report)
    (out / "report.json").write_text(json.dumps(as_json, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    log.info("eval.at_end: %d records (mode %s) -> %s", len(lines), mode, out / "report.md")
    return as_json
