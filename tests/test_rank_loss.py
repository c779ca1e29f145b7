"""A rank killed (kill -9) or frozen in a multi-rank run: the others exit non-zero in bounded time with a message
naming the lost rank, and the launcher returns non-zero. No hang.

Default suite: 2 gloo ranks started like torchrun (env rendezvous), rank 1 killed. Slow tier: rank 0 killed
(it also hosts the TCPStore), 3-rank runs (the survivors name the dead rank from the heartbeats in the store), the
`deepspeed` launcher, and a rank frozen with SIGSTOP (the collective timeout, train.timeout_minutes=1, ends the
run).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from tasu.train.comm_faults import EXIT_RANK_LOST

from .fuzz_utils import tally, write_tally
from .proc_utils import FAST, finish, kill9, start_ranks, wait_for_step
from .train_utils import ROOT, base_env, free_port

pytestmark = pytest.mark.integration

LIMIT_S = 60  # the survivors must be gone within this many seconds of the kill


@pytest.fixture(scope="module", autouse=True)
def _tally():
    yield
    write_tally(__name__)


def _args(out, *extra: str) -> list[str]:
    return ["train", "tiny", f"output_dir={out}", "train.max_steps=100000", *FAST, *extra]


def _kill_and_check(procs, victim: int, out, world: int) -> list[float]:
    wait_for_step(out, 5, procs)
    t0 = time.monotonic()
    kill9(procs[victim])
    waited = []
    for r, p in enumerate(procs):
        if r == victim:
            continue
        rc, output, _ = finish(p, timeout=LIMIT_S + 30)
        dt = time.monotonic() - t0
        waited.append(dt)
        assert rc == EXIT_RANK_LOST, (rc, output[-4000:])
        assert dt < LIMIT_S, dt
        assert f"rank {r} of {world}: lost contact with rank {victim}" in output, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
    return waited


@pytest.mark.parametrize("victim", [1, pytest.param(0, marks=pytest.mark.slow)])
def test_killed_rank_survivor_exits_nonzero_naming_it(tmp_path, victim):
    procs = start_ranks(_args(tmp_path / "run"), world=2)
    waited = _kill_and_check(procs, victim, tmp_path / "run", 2)
    tally(f"2 ranks, rank {victim} killed", runs=1, survivors_exited=len(waited))
    print(f"survivor exited {max(waited):.2f} s after the kill")


@pytest.mark.slow
@pytest.mark.parametrize("victim", [0, 2])
def test_three_ranks_name_the_dead_one(tmp_path, victim):
    """The backend's message names whichever connection broke first (often a survivor that already gave up); the
    heartbeats name the rank that really died (rank 0: the store host, whose loss every survivor sees)."""
    procs = start_ranks(_args(tmp_path / "run"), world=3)
    waited = _kill_and_check(procs, victim, tmp_path / "run", 3)
    tally(f"3 ranks, rank {victim} killed", runs=1, survivors_exited=len(waited))
    print(f"survivors exited {', '.join(f'{w:.1f}' for w in waited)} s after the kill")


@pytest.mark.slow
def test_frozen_rank_ends_the_run_at_the_collective_timeout(tmp_path):
    """SIGSTOP: the peer neither answers nor closes its sockets; train.timeout_minutes=1 bounds the wait."""
    out = tmp_path / "run"
    procs = start_ranks(_args(out, "train.timeout_minutes=1"), world=2)
    wait_for_step(out, 5, procs)
    t0 = time.monotonic()
    os.kill(procs[1].pid, signal.SIGSTOP)
    try:
        rc, output, _ = finish(procs[0], timeout=180)
    finally:
        os.kill(procs[1].pid, signal.SIGCONT)
        kill9(procs[1])
    dt = time.monotonic() - t0
    assert rc == EXIT_RANK_LOST, output[-4000:]
    assert "rank 0 of 2: no answer from rank 1" in output and "train.timeout_minutes=1" in output, output[-3000:]
    assert dt < 150, dt
    tally("2 ranks, rank 1 frozen (SIGSTOP)", runs=1, survivors_exited=1)


def _children(pid: int) -> list:
    import psutil

    return psutil.Process(pid).children(recursive=True)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("deepspeed") is None, reason="the deepspeed launcher is not on PATH")
def test_deepspeed_launcher_returns_nonzero_when_a_rank_is_killed(tmp_path):
    out = tmp_path / "run"
    cmd = ["deepspeed", "--num_gpus", "2", "--master_port", str(free_port()), "--module", "tasu", *_args(out)]
    launcher = subprocess.Popen(cmd, env=base_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    wait_for_step(out, 5, [launcher])
    ranks = [c for c in _children(launcher.pid) if "--local_rank=1" in " ".join(c.cmdline())]
    assert len(ranks) == 1, [c.cmdline() for c in _children(launcher.pid)]
    t0 = time.monotonic()
    ranks[0].kill()
    rc, output, _ = finish(launcher, timeout=LIMIT_S + 30)
    dt = time.monotonic() - t0
    assert rc != 0 and dt < LIMIT_S, (rc, dt, output[-4000:])
    tally("deepspeed launcher, rank 1 killed", runs=1, launcher_nonzero=1)


def test_unrelated_errors_are_not_mistaken_for_lost_ranks():
    from tasu.train.comm_faults import rank_lost_error

    never = lambda r, w: pytest.fail("no roll call expected")  # noqa: E731
    assert rank_lost_error(ValueError("Connection reset by peer"), 0, 2, find_lost=never) is None  # not comm
    assert rank_lost_error(RuntimeError("pipe: command timed out"), 0, 2, find_lost=never) is None
    assert rank_lost_error(RuntimeError("[gloo/pair.cc:553] Connection closed by peer [1.2.3.4]:5"), 0, 1,
                           find_lost=never) is None
    e = rank_lost_error(RuntimeError("[gloo/pair.cc:537] Read error [127.0.0.1]:26285: Connection reset by peer"),
                        1, 2, find_lost=never)
    assert e.lost == [0] and "rank 1 of 2: lost contact with rank 0" in str(e)


def test_the_heartbeats_name_the_lost_rank_not_the_peer_in_the_message():
    """With 4 ranks the backend names whichever connection broke first (often a survivor that already gave up);
    the heartbeats in the store name the rank that stopped beating and did not give up."""
    from tasu.train.comm_faults import rank_lost_error

    err = RuntimeError("[../gloo/transport/tcp/pair.cc:553] Connection closed by peer [10.0.0.2]:28071")
    e = rank_lost_error(err, 1, 4, find_lost=lambda r, w: [2])
    assert e.lost == [2] and "rank 1 of 4: lost contact with rank 2: it died" in str(e)
    e = rank_lost_error(err, 1, 4, find_lost=lambda r, w: None)  # the store is gone with its host
    assert e.lost == [0] and "lost contact with rank 0 (the rendezvous store it hosts" in str(e)
    e = rank_lost_error(RuntimeError("[gloo] Timed out waiting 60000ms for recv operation"), 3, 4, 1,
                        find_lost=lambda r, w: [0, 1, 2])
    assert e.lost == [0, 1, 2] and "no answer from ranks 0, 1, 2 within train.timeout_minutes=1" in str(e)
