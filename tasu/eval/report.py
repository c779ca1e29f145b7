"""`tasu eval report`: score several systems' LLaSO-style results per task and compare them.

Input: one JSONL file per system, one record per line: {"key", "task", "reference", "hypothesis"} (key: string or
integer, unique per task in a file; other fields are ignored). The system name is the file stem, or NAME in a
NAME=PATH argument. Task names go through `llaso_metrics.get_spec` (aliases and spelling variants land on one
canonical task); `--task-kind NAME=KIND` adds or overrides a task's metric kind.

Closed-set tasks without a fixed label set are scored against the union of the normalised references of that
task over all systems, so every system sees the same label set.

Normalised overall score. For task t, let v_s be system s's primary metric and m, M the min and max of v over the
systems that have t with a finite value. Then
    norm_s(t) = (v_s - m) / (M - m)   if higher is better,     (M - v_s) / (M - m)   if lower is better,
so 1 = best and 0 = worst among the compared systems. When M == m (a single system, or all tied) there is no
spread and every such system gets 1.0. A non-finite value (WER inf on empty references, MAE NaN when no answer
parsed) gets 0.0 and does not enter m, M. Per system:
    overall      = mean of norm_s(t) over the tasks s was scored on ("tasks" says how many);
    overall_all  = mean over all tasks in the report, a task missing for s counting 0.
The scores are relative to the systems compared: adding a system can change every other system's score.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tasu.eval.llaso_metrics import (
    KINDS,
    TASK_METRICS,
    BadReference,
    MetricSpec,
    get_spec,
    label_set,
    score_task,
    task_key,
)

FIELDS = ("key", "task", "reference", "hypothesis")
Score = dict[str, float | int | str | bool]


class ResultsError(ValueError):
    """Bad results input; the message names the file (and line)."""


@dataclass(frozen=True)
class ResultRecord:
    key: str
    task: str  # canonical task name
    reference: str
    hypothesis: str
    line: int  # 1-based line in the results file


@dataclass
class SystemResults:
    name: str
    path: str
    tasks: dict[str, list[ResultRecord]] = field(default_factory=dict)  # canonical task -> records in file order


@dataclass
class Report:
    systems: list[str]
    tasks: list[str]  # canonical names, sorted
    scores: dict[str, dict[str, Score]]  # system -> task -> score_task output
    normalized: dict[str, dict[str, float]]  # system -> task -> norm in [0, 1]
    overall: dict[str, dict[str, float]]  # system -> {"overall", "overall_all", "tasks"}


def load_results(path: str | Path, name: str | None = None, registry: Mapping[str, MetricSpec] | None = None
                 ) -> SystemResults:
    """Read one system's JSONL results; every problem raises `ResultsError` naming the file and line."""
    path = Path(path)
    sys_res = SystemResults(name=name or path.stem, path=str(path))
    seen: dict[tuple[str, str], int] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: cannot read results: {e}") from e
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ResultsError(f"{where}: bad JSON ({e.msg} at column {e.colno})") from e
        if not isinstance(rec, dict):
            raise ResultsError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        missing = [f for f in FIELDS if f not in rec]
        if missing:
            need = ", ".join(FIELDS)
            raise ResultsError(f"{where}: missing field(s) {', '.join(missing)} (each record needs {need})")
        for f in ("task", "reference", "hypothesis"):
            if not isinstance(rec[f], str):
                raise ResultsError(f"{where}: field {f!r} must be a string, got {type(rec[f]).__name__}")
        if isinstance(rec["key"], bool) or not isinstance(rec["key"], str | int):
            raise ResultsError(f"{where}: field 'key' must be a string or an integer, got {rec['key']!r}")
        try:
            task, _ = get_spec(rec["task"], registry)
        except ValueError as e:
            raise ResultsError(f"{where}: {e}; add it with --task-kind {rec['task']}=KIND "
                               f"(KIND: {', '.join(KINDS)})") from e
        key = str(rec["key"])
        if (task, key) in seen:
            raise ResultsError(f"{where}: duplicate key {key!r} for task {task} (first on line {seen[task, key]})")
        seen[task, key] = lineno
        sys_res.tasks.setdefault(task, []).append(ResultRecord(key, task, rec["reference"], rec["hypothesis"], lineno))
    if not sys_res.tasks:
        raise ResultsError(f"{path}: no records")
    return sys_res


def normalize_scores(scores: Mapping[str, Mapping[str, Score]], tasks: Sequence[str]) -> dict[str, dict[str, float]]:
    """Min-max normalise each task's primary metric across systems (1 = best; see the module docstring)."""
    norm: dict[str, dict[str, float]] = {s: {} for s in scores}
    for t in tasks:
        have = {s: sc[t] for s, sc in scores.items() if t in sc}
        finite = [float(v["value"]) for v in have.values() if math.isfinite(float(v["value"]))]
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
        for s, v in have.items():
            x = float(v["value"])
            if not math.isfinite(x):
                norm[s][t] = 0.0
            elif hi == lo:
                norm[s][t] = 1.0
            else:
                norm[s][t] = (x - lo) / (hi - lo) if v["higher_is_better"] else (hi - x) / (hi - lo)
    return norm


def overall_scores(normalized: Mapping[str, Mapping[str, float]], tasks: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per system: "overall" (mean over its scored tasks), "overall_all" (missing tasks count 0), "tasks"."""
    out = {}
    for s, per_task in normalized.items():
        vals = [per_task[t] for t in tasks if t in per_task]
        out[s] = {
            "overall": sum(vals) / len(vals) if vals else math.nan,
            "overall_all": sum(vals) / len(tasks) if tasks else math.nan,
            "tasks": len(vals),
        }
    return out


def _spec_for(task: str, registry: Mapping[str, MetricSpec], systems: Sequence[SystemResults]) -> MetricSpec:
    try:
        return get_spec(task, registry)[1]
    except ValueError as e:  # results loaded with another registry than this one
        where = ", ".join(s.path for s in systems if task in s.tasks)
        raise ResultsError(f"{where}: {e}") from e


def build_report(systems: Sequence[SystemResults], registry: Mapping[str, MetricSpec] | None = None) -> Report:
    """Score every (system, task) and normalise across systems."""
    registry = TASK_METRICS if registry is None else registry
    names = [s.name for s in systems]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ResultsError(f"two results files give the same system name {dup}: name them with NAME=PATH")
    tasks = sorted({t for s in systems for t in s.tasks})
    # closed-set tasks without a fixed label set: one label set per task from every system's references
    shared_labels: dict[str, tuple[str, ...]] = {}
    specs = {t: _spec_for(t, registry, systems) for t in tasks}
    for t, spec in specs.items():
        if spec.kind == "label" and spec.labels is None:
            shared_labels[t] = label_set([r.reference for s in systems for r in s.tasks.get(t, [])])
    scores: dict[str, dict[str, Score]] = {s.name: {} for s in systems}
    for s in systems:
        for t, recs in s.tasks.items():
            try:
                scores[s.name][t] = score_task(t, [r.reference for r in recs], [r.hypothesis for r in recs],
                                               labels=shared_labels.get(t), spec=specs[t])
            except BadReference as e:
                raise ResultsError(f"{s.path}:{recs[e.index].line}: task {t}: {e}") from e
            except ValueError as e:
                raise ResultsError(f"{s.path}: task {t}: {e}") from e
            if t in shared_labels:
                scores[s.name][t]["label_source"] = "references"  # the union over systems, not only this file
    normalized = normalize_scores(scores, tasks)
    return Report(names, tasks, scores, normalized, overall_scores(normalized, tasks))


# ---------------------------------------------------------------- rendering


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    return f"{x:.4f}" if abs(x) < 100 else f"{x:.1f}"


def _cell(sc: Score) -> str:
    extra = [f"n={sc['n']}"]
    if "abstention" in sc:
        extra.append(f"abst={_fmt(float(sc['abstention']))}")
    if sc.get("n_unparsable"):
        extra.append(f"unparsed={sc['n_unparsable']}")
    return f"{_fmt(float(sc['value']))} ({', '.join(extra)})"


def _esc(s: str) -> str:
    return s.replace("|", "\\|")


def render_markdown(rep: Report) -> str:
    """Two tables: raw primary metric per task and system, then normalised scores with the overall rows."""
    head = "| task | metric | " + " | ".join(_esc(s) for s in rep.systems) + " |"
    rule = "|---|---|" + "---|" * len(rep.systems)
    lines = ["## Per-task results", "", head, rule]
    for t in rep.tasks:
        first = next(rep.scores[s][t] for s in rep.systems if t in rep.scores[s])
        metric = f"{first['metric']} {'↑' if first['higher_is_better'] else '↓'}"
        cells = [_cell(rep.scores[s][t]) if t in rep.scores[s] else "—" for s in rep.systems]
        lines.append(f"| {_esc(t)} | {metric} | " + " | ".join(cells) + " |")
    lines += ["", "abst: answers without exactly one valid label (counted wrong); unparsed: answers without a "
              "number (left out of the MAE); —: task missing for that system.", ""]
    lines += ["## Normalised scores (min-max across systems, 1 = best)", "",
              "| task | " + " | ".join(_esc(s) for s in rep.systems) + " |", "|---|" + "---|" * len(rep.systems)]
    for t in rep.tasks:
        cells = [_fmt(rep.normalized[s][t]) if t in rep.normalized[s] else "—" for s in rep.systems]
        lines.append(f"| {_esc(t)} | " + " | ".join(cells) + " |")
    ov = rep.overall
    lines.append("| **overall** (scored tasks) | " + " | ".join(f"**{_fmt(ov[s]['overall'])}**" for s in rep.systems)
                 + " |")
    lines.append("| overall (missing = 0) | " + " | ".join(_fmt(ov[s]["overall_all"]) for s in rep.systems) + " |")
    lines.append("| tasks scored | " + " | ".join(f"{int(ov[s]['tasks'])}/{len(rep.tasks)}" for s in rep.systems)
                 + " |")
    lines += ["", "norm = (v - min) / (max - min), flipped for lower-is-better metrics; 1.0 where all compared "
              "systems tie (or only one has the task); 0.0 for a non-finite value.", ""]
    return "\n".join(lines)


def _json_safe(x: object) -> object:
    """Non-finite floats -> None (strict JSON has no NaN / Infinity)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def report_to_json(rep: Report) -> dict:
    return _json_safe({"systems": rep.systems, "tasks": rep.tasks, "scores": rep.scores,
                       "normalized": rep.normalized, "overall": rep.overall})  # type: ignore[return-value]


# ---------------------------------------------------------------- CLI


def write_report(rep: Report, md_path: str | Path | None, json_path: str | Path | None) -> None:
    """The report as Markdown and / or JSON (strict JSON: a non-finite score is written as null)."""
    if md_path:
        Path(md_path).write_text(render_markdown(rep), encoding="utf-8")
    if json_path:
        Path(json_path).write_text(json.dumps(report_to_json(rep), indent=2, allow_nan=False) + "\n",
                                   encoding="utf-8")


def _parse_system_arg(arg: str) -> tuple[str | None, str]:
    """PATH or NAME=PATH -> (name or None, path). An existing file wins over the NAME=PATH reading."""
    if Path(arg).exists() or "=" not in arg:
        return None, arg
    name, path = arg.split("=", 1)
    if not name:
        raise ResultsError(f"{arg!r}: empty system name before '='")
    return name, path


def _registry_with(overrides: Sequence[str]) -> dict[str, MetricSpec]:
    registry = dict(TASK_METRICS)
    for ov in overrides:
        name, sep, kind = ov.partition("=")
        if not sep or not name.strip() or kind not in KINDS:
            raise ResultsError(f"--task-kind {ov!r}: expected NAME=KIND with KIND one of {', '.join(KINDS)}")
        try:
            key, _ = get_spec(name, registry)  # an existing task (or alias) is overridden in place
        except ValueError:
            key = task_key(name)
        registry[key] = MetricSpec(kind)
    return registry


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tasu eval report", description="Score LLaSO-style results per task and system.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Record format and the normalised score: see tasu/eval/report.py.")
    p.add_argument("results", nargs="+", metavar="RESULTS", help="a system's JSONL results: PATH or NAME=PATH")
    p.add_argument("--out", help="write the markdown report here (default: print it)")
    p.add_argument("--json", dest="json_out", help="also write all scores as JSON here")
    p.add_argument("--task-kind", action="append", default=[], metavar="NAME=KIND",
                   help=f"score task NAME with metric KIND ({', '.join(KINDS)}); repeatable")
    return p


def report_main(argv: Sequence[str]) -> int:
    """`tasu eval report RESULTS... [--out report.md] [--json out.json] [--task-kind NAME=KIND]` -> exit code."""
    args = _parser().parse_args(list(argv))
    try:
        registry = _registry_with(args.task_kind)
        systems = []
        for arg in args.results:
            name, path = _parse_system_arg(arg)
            systems.append(load_results(path, name, registry))
        rep = build_report(systems, registry)
        if not args.out:
            print(render_markdown(rep))
        write_report(rep, args.out, args.json_out)
    except (ResultsError, OSError) as e:
        print(f"tasu eval report: error: {e}", file=sys.stderr)
        return 2
    if args.out:
        best = max(rep.systems, key=lambda s: rep.overall[s]["overall_all"])
        print(f"wrote {args.out}: {len(rep.systems)} systems, {len(rep.tasks)} tasks, best overall (missing = 0): "
              f"{best} {_fmt(rep.overall[best]['overall_all'])}")
    return 0
