"""Running `tasu train` in subprocesses (single process or spawned ranks) and reading metrics."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def run_tasu(args: list[str], timeout: int = 600, check: bool = True,
             env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m tasu ARGS` in a fresh single process (`env`: extra environment variables)."""
    r = subprocess.run([sys.executable, "-m", "tasu", *args], env={**base_env(), **(env or {})}, capture_output=True,
                       text=True, timeout=timeout, cwd=ROOT)
    if check and r.returncode != 0:
        raise AssertionError(f"tasu {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}")
    return r


def run_ranks(args: list[str], world: int = 2, timeout: int = 900, check: bool = True) -> list[subprocess.Popen]:
    """`python -m tasu ARGS` as `world` gloo ranks on this machine (env-var rendezvous, like torchrun)."""
    port = free_port()
    procs = []
    for r in range(world):
        env = base_env()
        env.update(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, "-m", "tasu", *args], env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        outs.append(out)
    if check:
        for r, (p, out) in enumerate(zip(procs, outs)):
            if p.returncode != 0:
                raise AssertionError(f"rank {r} failed ({p.returncode}):\n{out[-8000:]}")
    return outs


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if ln.strip()]


def losses(run_dir: Path, stage: str | None = None) -> list[float]:
    return [m["loss"] for m in read_metrics(run_dir) if stage is None or m["stage"] == stage]
