"""Evaluation of a trained CTC model: decoding (greedy / prefix beam search) scored by CER / WER.

    tasu ctc eval RUN_OR_EXPORT DATA... [--beam N] [--prune-top-k K] [--out results.json]

RUN_OR_EXPORT is a run dir of a ctc run (or its `export/` folder); DATA are data sources as in `data.eval`
(manifest .jsonl, shard folder / index.json, ...), read with the run's feature settings, every sample once,
in order. Posterior export (`tasu ctc export-posteriors`) lives in `tasu.eval.posterior_shards`.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from tasu.types import SpeechBatch

log = logging.getLogger("tasu.eval")


def ctc_batches(cfg, model, sources: list[str], batch_size: int | None = None) -> Iterator[SpeechBatch]:
    """Evaluation batches in ctc mode (features as configured in `cfg.data`; each sample once, in order)."""
    from tasu.data.loader import eval_batches

    return eval_batches(cfg.data, list(sources), "ctc", model.ctc_tokenizer, None,
                        batch_size or cfg.eval.batch_size)


def evaluate_ctc(model, batches: Iterable[SpeechBatch], beam: int = 1, prune_top_k: int | None = None) -> dict:
    """Decode every batch and score it. Returns {cer, wer, samples, audio_seconds, decode_seconds, beam,
    results: [{key, reference, hypothesis}]}; CER / WER are corpus-level on normalised text (tasu.eval.metrics).
    """
    from tasu.eval.metrics import cer, wer

    model.eval()
    results: list[dict] = []
    audio_s, t0 = 0.0, time.perf_counter()
    for batch in batches:
        hyps = model.decode(batch, beam=beam, prune_top_k=prune_top_k)
        audio_s += batch.audio_seconds
        results += [{"key": k, "reference": r, "hypothesis": h} for k, r, h in zip(batch.keys, batch.references, hyps)]
    if not results:
        raise ValueError("evaluate_ctc: no sample to evaluate (empty or fully filtered data)")
    refs = [r["reference"] for r in results]
    hyps = [r["hypothesis"] for r in results]
    return {"cer": cer(refs, hyps), "wer": wer(refs, hyps), "samples": len(results), "audio_seconds": audio_s,
            "decode_seconds": time.perf_counter() - t0, "beam": beam, "results": results}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tasu ctc", description="evaluate a CTC model / export its posteriors")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval", help="CER / WER of greedy or beam-search decoding")
    e.add_argument("model", help="run dir of a ctc run, or its export folder")
    e.add_argument("data", nargs="+", help="data sources (manifest .jsonl, shard folder, index.json, ...)")
    e.add_argument("--beam", type=int, default=1, help="1 = greedy, > 1 = CTC prefix beam search")
    e.add_argument("--prune-top-k", type=int, default=None, help="beam search: only the frame's k best labels")
    e.add_argument("--batch-size", type=int, default=None, help="default: the run's eval.batch_size")
    e.add_argument("--out", default=None, help="write the metrics and per-sample results as JSON here")
    x = sub.add_parser("export-posteriors", help="write the model's CTC posteriors as shards (data_shards/FORMAT.md)")
    x.add_argument("model", help="run dir of a ctc run, or its export folder")
    x.add_argument("data", help="data source (manifest .jsonl, shard folder, index.json, ...)")
    x.add_argument("out_dir")
    layout = x.add_mutually_exclusive_group()
    layout.add_argument("--top-k", type=int, default=None, help="sparse: the k most likely classes per frame")
    layout.add_argument("--dense", action="store_true", help="dense fp16 log-probs [T, V] per sample (default)")
    x.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    x.add_argument("--batch-size", type=int, default=None, help="default: the run's eval.batch_size")
    return p


@torch.no_grad()
def ctc_main(argv: list[str]) -> int:
    """`tasu ctc eval ...` / `tasu ctc export-posteriors ...` (no autograd; scoped, not process-wide)."""
    from tasu.train.export import load_ctc_model

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    model, cfg = load_ctc_model(args.model)
    if args.cmd == "eval":
        if args.beam < 1:
            raise SystemExit("tasu ctc eval: --beam must be >= 1")
        out = evaluate_ctc(model, ctc_batches(cfg, model, args.data, args.batch_size), args.beam, args.prune_top_k)
        out.update(model=str(args.model), data=list(args.data))
        print(json.dumps({k: v for k, v in out.items() if k != "results"}, indent=2))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        return 0
    from tasu.eval.posterior_shards import export_posteriors

    index = export_posteriors(model, ctc_batches(cfg, model, [args.data], args.batch_size), args.out_dir,
                              top_k=args.top_k, shard_size=args.shard_size,
                              meta={"model": str(args.model), "data": args.data})
    print(f"wrote {index}")
    return 0
