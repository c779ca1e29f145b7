"""Rank scaling on CPU: the same training job with 1 and 2 gloo ranks (OMP_NUM_THREADS=1 each).

    python benchmarks/bench_scaling.py [--steps 40] -> benchmarks/results/scaling_cpu.json

Job: `tasu train tiny` (text-only TASU stage: frozen Llama, trainable projector) with a larger frozen LLM
(hidden 256, 4 layers) so each step carries real compute; data-parallel, ZeRO-2, micro-batch 16 per rank.
samples_per_s_N: median over steps after warm-up of the per-step samples/s that the recipe logs
(all ranks' samples / step wall time). ratio = samples_per_s_2 / samples_per_s_1 (ideal 2.0).
Needs both cores free: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasu.provenance import cpu_name, git_commit  # noqa: E402
from tests.train_utils import read_metrics, run_ranks  # noqa: E402

JOB = ["model.llm.hidden_size=256", "model.llm.num_layers=4", "model.llm.intermediate_size=1024",
       "model.llm.pretrain_steps=0", "data.batch_size=16", "train.zero_stage=2", "train.export_at_end=false",
       "train.progress_bar=false", "train.tensorboard=false", "train.save_every=0"]


def run(world: int, steps: int, warmup: int, out: Path) -> float:
    d = out / f"w{world}"
    run_ranks(["train", "tiny", f"output_dir={d}", f"train.max_steps={steps}", *JOB], world=world, timeout=1800)
    recs = read_metrics(d)
    return statistics.median(r["samples_per_s"] for r in recs[warmup:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaling_cpu.json"))
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench_scaling_"))
    s1 = run(1, args.steps, args.warmup, tmp)
    s2 = run(2, args.steps, args.warmup, tmp)
    result = {"samples_per_s_1": s1, "samples_per_s_2": s2, "ratio": s2 / s1, "device": f"cpu: {cpu_name()}",
              "threads_per_rank": 1, "commit": git_commit(), "date": time.strftime("%Y-%m-%d"),
              "config": {"preset": "tiny", "overrides": JOB, "steps": args.steps, "warmup_steps_dropped": args.warmup,
                         "backend": "gloo", "launcher": "env:// ranks (torchrun-style), one process per rank"}}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
