"""kill -9 of a training run, then `train.resume=auto`: the losses of the finished run equal an uninterrupted run's,
bit for bit, and every step is logged exactly once.

- default suite: one kill inside a checkpoint save (TASU_INJECT=kill_in_save, a real SIGKILL while tmp-* holds
  DeepSpeed's files): the run resumes from the previous complete checkpoint;
- slow tier: every kill point of the save (kill_in_save, kill_before_rename, kill_before_prune), and a run
  killed with SIGKILL from outside at random steps several times in a row (seeded; TASU_CRASH_SEED overrides),
  each kill followed by a resume, until it finishes.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from tasu.train import checkpoint as ckpt

from .fuzz_utils import tally, write_tally
from .proc_utils import FAST, finish, kill9, logged_steps, start_tasu, wait_for_step
from .train_utils import losses, read_metrics, run_tasu

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def _tally():
    yield
    write_tally(__name__)


def _args(out, steps: int, save_every: int, *extra: str) -> list[str]:
    return ["train", "tiny", f"output_dir={out}", f"train.max_steps={steps}", f"train.save_every={save_every}",
            "train.keep_last=2", *FAST, *extra]


@pytest.fixture(scope="module")
def reference_12(tmp_path_factory):
    """Losses of an uninterrupted 12-step run (checkpoints every 3 steps, as in the killed runs)."""
    out = tmp_path_factory.mktemp("ref12")
    run_tasu(_args(out, 12, 3))
    return losses(out)


def _assert_finished_like(out, reference: list[float], save_every: int) -> None:
    steps = [r["step"] for r in read_metrics(out)]
    assert steps == list(range(1, len(reference) + 1)), steps  # every step logged exactly once
    assert losses(out) == reference  # bit-identical floats
    found = ckpt.complete_checkpoints(out / "checkpoints")
    n = len(reference)
    assert [c.step for c in found] == [n - save_every, n]  # keep_last=2
    assert not [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("tmp-")]  # leftovers cleared


def test_kill_while_writing_a_checkpoint_resumes_from_the_previous_one(tmp_path, reference_12):
    out = tmp_path / "run"
    r = run_tasu(_args(out, 12, 3), check=False, env={"TASU_INJECT": "kill_in_save@9"})
    assert r.returncode == -9, r.stderr[-3000:]
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["step-00-00000003", "step-00-00000006", "tmp-step-00-00000009"], names
    assert not (out / "checkpoints" / "tmp-step-00-00000009" / "COMPLETE").exists()
    assert logged_steps(out) == 9  # steps 7-9 were logged, then lost with the save
    assert ckpt.find_resume("auto", out / "checkpoints").step == 6
    run_tasu(_args(out, 12, 3, "train.resume=auto"))
    _assert_finished_like(out, reference_12, 3)
    tally("kill -9 inside a save", runs=1, kills=1)


@pytest.mark.slow
@pytest.mark.parametrize("point, resumed_from", [("kill_in_save", 6), ("kill_before_rename", 6),
                                                 ("kill_before_prune", 9)])
def test_every_kill_point_of_a_save(tmp_path, reference_12, point, resumed_from):
    out = tmp_path / "run"
    r = run_tasu(_args(out, 12, 3), check=False, env={"TASU_INJECT": f"{point}@9"})
    assert r.returncode == -9, r.stderr[-3000:]
    assert ckpt.find_resume("auto", out / "checkpoints").step == resumed_from
    run_tasu(_args(out, 12, 3, "train.resume=auto"))
    _assert_finished_like(out, reference_12, 3)
    tally(f"kill -9 at {point}", runs=1, kills=1)


@pytest.mark.slow
def test_repeated_kill9_at_random_steps_then_resume_gives_the_uninterrupted_losses(tmp_path):
    """Each kill lands at a random step, or (every other kill, at random) the moment a checkpoint's tmp-* folder
    appears, i.e. while the save is being written."""
    steps, save_every, kills = 80, 4, 8
    seed = int(os.environ.get("TASU_CRASH_SEED", "11"))
    rng = random.Random(seed)
    ref = tmp_path / "ref"
    run_tasu(_args(ref, steps, save_every))
    out = tmp_path / "run"
    ckpts = out / "checkpoints"
    log = []
    for k in range(kills):
        before = logged_steps(out)  # lines already there (the new process first cuts them back to its checkpoint)
        resumed = ckpt.find_resume("auto", ckpts)
        t0 = time.time()
        p = start_tasu(_args(out, steps, save_every, "train.resume=auto"))
        # a step past everything logged so far, leaving room for the later kills
        span = max(1, (steps - 1 - before) // (kills - k + 1))
        target = rng.randint(before + 1, before + span)
        wait_for_step(out, target, [p])
        aim = rng.choice(["step", "save"])
        if aim == "save":
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and p.poll() is None and not _tmp_since(ckpts, t0):
                time.sleep(0.001)
        else:
            time.sleep(rng.uniform(0.0, 0.12))  # anywhere inside a step
        kill9(p)
        log.append({"kill": k + 1, "aim": aim, "resumed_from": resumed.step if resumed else 0,
                    "killed_at_step": logged_steps(out), "mid_save": _tmp_since(ckpts, t0)})
    rc, output, _ = finish(start_tasu(_args(out, steps, save_every, "train.resume=auto")), timeout=600)
    assert rc == 0, output[-4000:]
    print(json.dumps({"seed": seed, "kills": log}))
    _assert_finished_like(out, losses(ref), save_every)
    tally("kill -9 at random steps + resume", runs=1, kills=kills, mid_save=sum(x["mid_save"] for x in log))


def _tmp_since(ckpts: Path, t0: float) -> bool:
    """A checkpoint being written (a tmp-* folder) by the process started at t0."""
    try:
        return any(d.name.startswith("tmp-step") and d.stat().st_mtime >= t0 for d in ckpts.iterdir())
    except FileNotFoundError:  # no checkpoints yet, or the folder vanished between listing and stat
        return False


def test_regression_torn_metrics_line_is_dropped_on_resume(tmp_path):
    """A kill -9 in the middle of a metrics.jsonl write leaves a torn last line; json.loads of it used to crash the
    resume. The rewrite itself is atomic (temp file + rename)."""
    from tasu.train.metrics_log import MetricsLogger

    rows = [{"step": s, "stage": "a", "stage_index": 0, "loss": 1.0 / s} for s in range(1, 6)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "metrics.jsonl").write_text(text + '{"step": 6, "stage": "a", "stage_in')
    MetricsLogger(tmp_path, 0, 10, False, False, 10, resume_from=(0, 4)).close()
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert not (tmp_path / "metrics.jsonl.tmp").exists()


def test_regression_checkpoints_are_hidden_before_they_are_deleted(tmp_path, monkeypatch):
    """Pruning and replacing a checkpoint first renames it to tmp-* (invisible to resume), so a kill in the middle
    of the delete can never leave a half-deleted folder that still carries COMPLETE under a step-* name."""
    import shutil

    root = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        d = root / ckpt.tmp_tag(ckpt.tag_for(0, step))
        d.mkdir(parents=True)
        (d / "weights.pt").write_bytes(b"x")
        seen = []
        # a delete that dies half way: it removes the first file it meets, then the process is gone
        monkeypatch.setattr(shutil, "rmtree", lambda p, ignore_errors=False, seen=seen: seen.append(Path(p).name))
        ckpt.publish(root, ckpt.tag_for(0, step), keep_last=1)
        monkeypatch.undo()
        assert all(n.startswith("tmp-") for n in seen), seen  # only hidden folders are ever deleted
        visible = [c.step for c in ckpt.complete_checkpoints(root)]
        assert visible == [step], visible
