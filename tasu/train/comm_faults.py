"""Lost ranks: a collective that fails because a peer died becomes a `RankLostError` naming the lost rank(s).

When a rank dies (kill -9, OOM killer, a lost node) its sockets close, and the next collective on the other ranks
fails inside the communication backend, e.g. gloo:

    RuntimeError: [.../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:28071
    RuntimeError: [.../pair.cc:537] Read error [10.77.0.2]:41321: Connection reset by peer

A peer that hangs instead of dying makes the collective time out after `train.timeout_minutes`. The address in
such a message does not identify the dead rank: with more than two ranks the failure cascades (a survivor that
gives up closes its own connections, and its neighbours report *it*). So each rank of a multi-rank run keeps a
heartbeat in the rendezvous store (the TCPStore at MASTER_ADDR:MASTER_PORT; a daemon thread adds 1 to
`tasu/beat/<rank>` every HEARTBEAT_S, on its own connection, so it beats on while the main thread is blocked in a
collective), and a rank that gives up writes `tasu/gave_up/<rank>` before it exits. A survivor reads the beats
twice, STALE_S apart: the ranks whose beat stood still and that did not give up are the lost ones (counters, not
clocks: no skew between nodes). With two ranks the lost one is simply the other rank; when the store itself no
longer answers, its host (rank 0) is lost.

The training CLI turns a RankLostError into a one-line message and exit code EXIT_RANK_LOST, without the
interpreter's normal teardown: destroying a process group whose peer is gone can abort (SIGABRT) or block.
"""

from __future__ import annotations

import os
import re
import threading
import time
from datetime import timedelta

EXIT_RANK_LOST = 3
HEARTBEAT_S = 1.0  # beat period
STALE_S = 3.0  # a rank whose beat does not move for this long is lost

# what a collective raises when a peer is gone (gloo; NCCL / HCCL watchdogs time out; the TCPStore of a dead
# rank 0 refuses connections), and the words that say the error comes from the communication layer at all (so
# an unrelated "timed out" or "broken pipe", e.g. from a data pipe, is never mistaken for a lost rank)
_LOST = re.compile(r"connection (closed|reset) by peer|broken pipe|connection refused", re.IGNORECASE)
_TIMEOUT = re.compile(r"timed out|timeout", re.IGNORECASE)
_COMM = re.compile(r"gloo|nccl|hccl|c10d|processgroup|pair\.cc|tcpstore|collective", re.IGNORECASE)
_ADDR = re.compile(r"\[([0-9a-fA-F.:]+)\]:(\d+)")


class RankLostError(RuntimeError):
    """A peer rank died or stopped answering; `lost` holds the rank(s) when known."""

    def __init__(self, message: str, lost: list[int] | None = None):
        super().__init__(message)
        self.lost = lost


def _store(timeout_s: float):
    import torch.distributed as dist

    return dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                         timeout=timedelta(seconds=timeout_s))


_heartbeat: threading.Thread | None = None


def start_heartbeat(rank: int, world: int) -> None:
    """Start this rank's heartbeat thread (multi-rank runs; idempotent; best effort: a store that cannot be
    reached only means a lost rank is named less precisely)."""
    global _heartbeat
    if world < 2 or (_heartbeat is not None and _heartbeat.is_alive()):
        return

    def beat() -> None:
        try:
            store = _store(30.0)
            while True:
                store.add(f"tasu/beat/{rank}", 1)
                time.sleep(HEARTBEAT_S)
        except Exception:  # the store is gone (its host died, or the run ended): nothing left to tell
            return

    _heartbeat = threading.Thread(target=beat, name="tasu-heartbeat", daemon=True)
    _heartbeat.start()


def lost_by_heartbeat(rank: int, world: int) -> list[int] | None:
    """Ranks whose heartbeat stood still for STALE_S and that did not give up; None when the store is gone.
    Marks this rank as given up first (it is about to exit)."""
    try:
        store = _store(STALE_S)
        store.set(f"tasu/gave_up/{rank}", "1")
        keys = [f"tasu/beat/{r}" for r in range(world)]
        before = [store.add(k, 0) for k in keys]
        time.sleep(STALE_S)
        after = [store.add(k, 0) for k in keys]
        gave_up = {r for r in range(world) if store.check([f"tasu/gave_up/{r}"])}
        if rank == 0:
            time.sleep(HEARTBEAT_S)  # this process hosts the store: keep it up a little for the other survivors
    except Exception:  # connection refused / reset / timed out
        return None
    return [r for r in range(world) if after[r] == before[r] and r not in gave_up and r != rank]


def classify(exc: BaseException, world: int) -> str | None:
    """"lost" (a peer closed its connections), "timeout" (a peer stopped answering) or None (not a lost rank)."""
    if world < 2:
        return None
    chain, e = [], exc
    while e is not None and len(chain) < 8:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = " | ".join(f"{type(x).__name__}: {x}" for x in chain)
    from_comm = any(type(x).__name__.startswith("Dist") for x in chain) or bool(_COMM.search(text))
    if not from_comm or not isinstance(exc, (RuntimeError, OSError)):
        return None
    if _LOST.search(text):
        return "lost"
    if _TIMEOUT.search(text):
        return "timeout"
    return None


def rank_lost_error(exc: BaseException, rank: int, world: int, timeout_minutes: int | None = None,
                    find_lost=lost_by_heartbeat) -> RankLostError | None:
    """A RankLostError describing `exc` when it is a collective failing because of a lost peer; None otherwise.
    `find_lost(rank, world)` reads the heartbeats (see the module docstring); it is skipped for two ranks."""
    if isinstance(exc, RankLostError):
        return exc
    kind = classify(exc, world)
    if kind is None:
        return None
    if world == 2:
        lost, how = [1 - rank], ""
    else:
        found = find_lost(rank, world)
        if found is None:
            lost, how = [0], " (the rendezvous store it hosts no longer answers)"
        else:
            lost, how = (found or None), ""
    who = (f"rank {lost[0]}" if len(lost) == 1 else f"ranks {', '.join(map(str, lost))}") if lost else \
        f"rank(s) of the {world}"
    m = _ADDR.search(str(exc))
    peer = f"; backend peer {m.group(0)}" if m else ""
    if kind == "lost":
        why = f"lost contact with {who}{how}: it died or its node went away{peer}"
    else:
        limit = f"train.timeout_minutes={timeout_minutes}" if timeout_minutes is not None else "the timeout"
        why = f"no answer from {who}{how} within {limit}: it hung or died{peer}"
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return RankLostError(f"rank {rank} of {world}: {why}. The run stops here; restart it (train.resume=auto "
                         f"continues from the last complete checkpoint). Backend error: {first}", lost)
