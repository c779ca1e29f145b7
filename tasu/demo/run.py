"""`tasu demo [--quick] [--workdir DIR]`: TASU end to end on a CPU with real, registry-shipped models.

    assets  -> Whisper tiny.en, SmolLM2-135M-Instruct, Botchan, TTS voices, 10 real test utterances (assets.py)
    data    -> TTS speech: training voices read training sentences, held-out voices read held-out sentences;
               audio shards; text-only shards from sentences never synthesised
    ctc     -> CTC units = SmolLM2 tokens (tasu.text.llm_units); a BiGRU CTC head on the frozen encoder's cached
               states (ctc_head.py)
    systems -> `tasu train demo` per system (text-only TASU, audio, curriculum; systems.py), all from the same
               CTC head and the projector initialised onto SmolLM2's embeddings
    eval    -> zero-shot ASR on the held-out voices and the 10 real utterances; the report (report.py)

Every step writes WORKDIR/steps/<step>.json when it finishes; a rerun skips finished steps (and the TTS clips,
encoder states and finished training stages inside a step are cached too), so an interrupted demo resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tasu.demo.assets import MissingAsset
from tasu.demo.plan import PLANS, DemoPlan

log = logging.getLogger("tasu.demo")

STEPS = ("assets", "data", "ctc", "systems", "eval", "report")


class Workdir:
    """The demo's folder: step results (steps/*.json) and everything the steps build."""

    def __init__(self, root: Path, plan: DemoPlan):
        self.root = root
        self.plan = plan
        root.mkdir(parents=True, exist_ok=True)
        (root / "steps").mkdir(exist_ok=True)
        self._check_plan()

    def _check_plan(self) -> None:
        # a workdir belongs to one preset: mixing cached quick data with a default run would corrupt the report
        marker = self.root / "plan.json"
        mine = {"plan": self.plan.name}
        if marker.is_file():
            theirs = json.loads(marker.read_text(encoding="utf-8"))
            if theirs != mine:
                raise SystemExit(f"tasu demo: {self.root} holds a '{theirs.get('plan')}' demo, not "
                                 f"'{self.plan.name}': pass another --workdir")
        else:
            marker.write_text(json.dumps(mine) + "\n", encoding="utf-8")

    def _load(self, step: str) -> dict | None:
        p = self.root / "steps" / f"{step}.json"
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None

    def result(self, step: str) -> dict | None:
        out = self._load(step)
        if out is not None:
            out.pop("step_seconds", None)   # workdirs of earlier tasu versions kept the timing inside the result
        return out

    def seconds(self, step: str) -> float | None:
        """Wall time the finished `step` took (kept beside the results, in steps/timing.json)."""
        p = self.root / "steps" / "timing.json"
        timing = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}
        return timing.get(step, (self._load(step) or {}).get("step_seconds"))

    def save(self, step: str, result: dict, seconds: float | None = None) -> None:
        if seconds is not None:
            timing = self.root / "steps" / "timing.json"
            _write_json(timing, {**(json.loads(timing.read_text(encoding="utf-8")) if timing.is_file() else {}),
                                 step: seconds})
        _write_json(self.root / "steps" / f"{step}.json", result)


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def run_step(work: Workdir, step: str, fn: Callable[[], dict]) -> dict:
    done = work.result(step)
    if done is not None:
        log.info("[%s] done before (cached in %s)", step, work.root / "steps" / f"{step}.json")
        return done
    log.info("[%s] ...", step)
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    work.save(step, out, seconds)
    log.info("[%s] finished in %.0f s", step, seconds)
    return out


def split_sentences(sentences: list[str], plan: DemoPlan, seed: int) -> dict[str, list[str]]:
    """Disjoint sentence sets: train (TTS pool), dev (CTC model selection), heldout (test), text (text-only).
    Needs enough sentences for the first three; the text-only set takes what is left (capped by the plan)."""
    need = plan.train_sentences + plan.dev_sentences + plan.heldout_sentences
    if len(sentences) < need + 50:
        raise MissingAsset(f"only {len(sentences)} usable sentences in the text; the '{plan.name}' demo needs "
                           f"{need + 50}")
    s = list(sentences)
    random.Random(seed).shuffle(s)
    a, b, c = plan.heldout_sentences, plan.heldout_sentences + plan.dev_sentences, need
    rest = s[c:]
    return {"heldout": s[:a], "dev": s[a:b], "train": s[b:c],
            "text": rest[: plan.text_only_sentences] if plan.text_only_sentences else rest}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tasu demo", description=(
        "Real end-to-end TASU on this machine: TTS speech, Whisper tiny.en CTC head, frozen SmolLM2-135M, "
        "text-only alignment vs audio training vs curriculum, zero-shot ASR report."))
    p.add_argument("--quick", action="store_true", help="small numbers (<= 15 min on 2 CPU cores)")
    p.add_argument("--workdir", default=None,
                   help="where data, models and the report go (default: runs/demo or runs/demo-quick); reruns "
                        "resume from the last finished step")
    p.add_argument("--report-dir", default=None, help="also copy demo_report.{json,md,png} here")
    return p


def demo_main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan = PLANS["quick" if args.quick else "default"]
    workdir = Path(args.workdir or ("runs/demo-quick" if args.quick else "runs/demo")).resolve()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(name)s: %(message)s", datefmt="%H:%M:%S")
    # one thread per process: on 2 shared cores, 2 threads can be 10-20x slower (NOTES.md §5)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from tasu.demo import steps

    try:
        work = Workdir(workdir, plan)
        log.info("tasu demo (%s preset) in %s", plan.name, workdir)
        assets = run_step(work, "assets", lambda: steps.prepare_assets(work))
        data = run_step(work, "data", lambda: steps.prepare_data(work, assets))
        ctc = run_step(work, "ctc", lambda: steps.train_ctc(work, assets, data))
        systems = run_step(work, "systems", lambda: steps.train_systems(work, assets, data, ctc))
        scores = run_step(work, "eval", lambda: steps.evaluate(work, assets, data, ctc, systems))
        report = steps.write_report(work, data, ctc, systems, scores, args.report_dir)
    except MissingAsset as e:
        print(f"tasu demo: {e}", file=sys.stderr)
        return 2
    print(report.read_text(encoding="utf-8"))
    return 0
