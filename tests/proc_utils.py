"""Training runs as killable child processes: start, wait for a step, kill -9, collect output (reliability tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .train_utils import ROOT, base_env, free_port

FAST = ["train.export_at_end=false", "train.progress_bar=false", "train.tensorboard=false"]


def start_tasu(args: list[str], env: dict | None = None, **popen) -> subprocess.Popen:
    """`python -m tasu ARGS` in its own process group (so a kill reaches everything it started)."""
    e = base_env()
    e.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "tasu", *args], env=e, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **popen)


def start_ranks(args: list[str], world: int = 2, env: dict | None = None) -> list[subprocess.Popen]:
    """`world` gloo ranks of `python -m tasu ARGS` (env-var rendezvous, like tests.train_utils.run_ranks)."""
    port = free_port()
    procs = []
    for r in range(world):
        e = {"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
             "MASTER_PORT": str(port), **(env or {})}
        procs.append(start_tasu(args, e))
    return procs


def logged_steps(run_dir: Path) -> int:
    """Complete lines in metrics.jsonl (a line being written does not count)."""
    try:
        return (Path(run_dir) / "metrics.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_for_step(run_dir: Path, step: int, procs: list[subprocess.Popen], timeout: float = 300) -> int:
    """Poll until metrics.jsonl holds `step` lines; returns the count. Fails if a process exits first."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        n = logged_steps(run_dir)
        if n >= step:
            return n
        for p in procs:
            if p.poll() is not None:
                out = p.stdout.read() if p.stdout else ""
                raise AssertionError(f"process exited ({p.returncode}) before step {step}:\n{out[-4000:]}")
        time.sleep(0.01)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def kill9(p: subprocess.Popen) -> None:
    """SIGKILL the process, as `kill -9 PID` does, and reap it; then SIGKILL whatever it left in its process
    group (DataLoader workers) so that nothing outlives the test."""
    if p.poll() is None:
        p.kill()
    p.communicate(timeout=60)
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def finish(p: subprocess.Popen, timeout: float) -> tuple[int, str, float]:
    """(return code, output, seconds waited); on timeout the process group is killed and the test fails."""
    t0 = time.monotonic()
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        raise AssertionError(f"no exit within {timeout} s (hang):\n{out[-4000:]}") from None
    return p.returncode, out, time.monotonic() - t0
