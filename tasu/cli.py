"""`tasu` command line.

    tasu train CONFIG [key=value ...]         train (CONFIG: a preset name such as `tiny`, or a YAML path)
    tasu export RUN_DIR OUT_DIR               HF-style export of a run
    tasu shard MANIFEST... OUT_DIR [...]      write WebDataset shards
    tasu tokenizer train TEXT... --vocab N    train a sentencepiece CTC vocabulary
    tasu eval report RESULTS... [--out F]     per-task metric table + normalised score across systems
    tasu eval run MODEL --data F --out R      decode records with a trained SpeechLLM -> results for eval report
    tasu ctc eval RUN DATA... [--beam N]      CER / WER of a trained CTC model (greedy / prefix beam search)
    tasu ctc export-posteriors RUN DATA OUT   CTC posteriors to shards (dense fp16 or --top-k K)
    tasu units fit CONFIG --out U.safetensors  k-means speech units over encoder frames (TASTE)
    tasu units assign CONFIG --units U --out F.jsonl   the units of every utterance
    tasu config CONFIG [key=value ...]        print the effective config (validated)
    tasu presets                              list shipped configs
    tasu demo [--quick] [--workdir DIR]       real end-to-end TASU on this CPU (registry-shipped models) + report
    tasu bench step|kernels|loader|scaling [...]   the benchmarks of benchmarks/ (a source checkout)

The deepspeed launcher inserts `--local_rank=N` before the subcommand; it is accepted and ignored (LOCAL_RANK is
also in the environment).
"""

from __future__ import annotations

import argparse
import os
import sys

from tasu.config.fields import ConfigError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tasu", description="Speech LLM training (CTC encoder -> projector -> LLM)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a config (preset name or YAML path) with key=value overrides")
    t.add_argument("config")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=40 output_dir=runs/x")
    c = sub.add_parser("config", help="print the effective, validated config")
    c.add_argument("config")
    c.add_argument("overrides", nargs="*")
    e = sub.add_parser("export", help="export a run dir to an HF-style folder")
    e.add_argument("run_dir")
    e.add_argument("out_dir")
    sub.add_parser("presets", help="list the shipped configs")
    sub.add_parser("shard", help="write WebDataset shards (see `tasu shard --help`)", add_help=False)
    sub.add_parser("tokenizer", help="train a CTC tokenizer (see `tasu tokenizer --help`)", add_help=False)
    sub.add_parser("eval", help="`tasu eval report RESULTS...`: score result files; `tasu eval run MODEL --data F "
                                "--out R`: decode with a trained model", add_help=False)
    sub.add_parser("ctc", help="`tasu ctc eval|export-posteriors ...`: a trained CTC model", add_help=False)
    sub.add_parser("bench", help="`tasu bench step|kernels|loader|scaling [...]`: run a benchmark of benchmarks/",
                   add_help=False)
    sub.add_parser("demo", help="`tasu demo [--quick] [--workdir DIR]`: real end-to-end TASU + report",
                   add_help=False)
    sub.add_parser("units", help="`tasu units fit|assign CONFIG ...`: k-means speech units (TASTE)", add_help=False)
    return p


BENCHMARKS = ("step", "kernels", "loader", "scaling")


def _bench(argv: list[str]) -> int:
    """`tasu bench NAME ARGS`: benchmarks/bench_NAME.py of the source checkout tasu runs from (benchmarks are not
    part of the installed package: they carry the reference-style baselines)."""
    import runpy

    from tasu.provenance import REPO_ROOT

    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: tasu bench {{{'|'.join(BENCHMARKS)}}} [ARGS...]", file=sys.stderr)
        return 2
    script = REPO_ROOT / "benchmarks" / f"bench_{argv[0]}.py"
    if not script.is_file():
        print(f"tasu bench: {script} not found: benchmarks run from a source checkout (pip install -e .)",
              file=sys.stderr)
        return 2
    saved, sys.argv = sys.argv, [str(script), *argv[1:]]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved
    return 0


def _reporting_errors(name: str, fn, argv: list[str]) -> int:
    """Run a subcommand; a bad input (config, missing file, bad value) is one line on stderr and exit 2."""
    try:
        return fn(argv)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"tasu {name}: {e}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # subcommands that own their argument parsing
    rest = [a for a in argv if not a.startswith("--local_rank") and not a.startswith("--local-rank")]
    if rest and rest[0] == "shard":
        from tasu.data.shard import shard_main

        return shard_main(rest[1:])
    if rest[:2] == ["eval", "report"]:
        from tasu.eval.report import report_main

        return report_main(rest[2:])
    if rest[:2] == ["eval", "run"]:
        from tasu.eval.run import run_main

        return run_main(rest[2:])
    if rest and rest[0] == "ctc":
        from tasu.eval.ctc_eval import ctc_main

        return _reporting_errors("ctc", ctc_main, rest[1:])
    if rest and rest[0] == "units":
        from tasu.taste.unit_discovery import units_main

        return _reporting_errors("units", units_main, rest[1:])
    if rest and rest[0] == "bench":
        return _bench(rest[1:])
    if rest and rest[0] == "demo":
        from tasu.demo.run import demo_main

        return demo_main(rest[1:])
    if rest and rest[0] == "tokenizer":
        from tasu.text.spm_train import tokenizer_main

        return tokenizer_main(rest[1:])
    args = _parser().parse_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    try:
        if args.cmd == "presets":
            from tasu.config.loader import preset_names

            print("\n".join(preset_names()))
            return 0
        if args.cmd == "config":
            import yaml

            from tasu.config.loader import load_config, to_dict

            print(yaml.safe_dump(to_dict(load_config(args.config, args.overrides)), sort_keys=False))
            return 0
        if args.cmd == "train":
            from tasu.config.loader import load_config

            cfg = load_config(args.config, args.overrides)  # fails before any compute
            from tasu.train.recipe import run_from_cli

            return run_from_cli(cfg)
        if args.cmd == "export":
            from tasu.train.export import export_run

            export_run(args.run_dir, args.out_dir)
            return 0
    except ConfigError as e:
        print(f"tasu: config error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"tasu: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
