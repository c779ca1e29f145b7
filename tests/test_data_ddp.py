"""2 gloo ranks x 2 DataLoader workers over 3, 4 and 7 shards: every sample exactly once per epoch, and both ranks
take the same number of steps in lockstep (one all_reduce per step, as training does)."""

from __future__ import annotations

import json
import os
import socket
from collections import Counter
from datetime import timedelta
from pathlib import Path

import torch.multiprocessing as mp

from tasu.data.shard import ShardOptions, write_shards

ROOT = Path(__file__).resolve().parents[1]
TINY_TEXT = ROOT / "tasu/assets/tiny_text.txt"
N = 61  # samples: not a multiple of ranks x workers, nor of any shard count
SHARD_COUNTS = (3, 4, 7)
STEPS = 18  # batches of 4: each worker covers its ~15-sample share of epochs 0 and 1 within 16 rank steps


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, work: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    import torch
    import torch.distributed as dist

    from tasu.align.config import SimulationConfig
    from tasu.data.config import DataConfig
    from tasu.data.loader import TrainStream
    from tasu.model.llm import build_tiny_tokenizer
    from tasu.text.ctc_tokenizer import CharCTCTokenizer
    from tasu.text.prompts import PromptBuilder, load_prompts

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=120))
    pb = PromptBuilder(build_tiny_tokenizer(str(TINY_TEXT), 160), load_prompts())
    results = {}
    for n in SHARD_COUNTS:
        cfg = DataConfig(batch_size=4, num_workers=2, num_buckets=0, shuffle_buffer=8)
        st = TrainStream(cfg, [f"{work}/shards{n}"], "simulated", CharCTCTokenizer(), pb, SimulationConfig(),
                         rank=rank, world_size=world, seed=11)
        it = iter(st)
        seen, steps = [], 0
        for _ in range(STEPS):
            b = next(it)
            size = torch.tensor([len(b)])
            dist.all_reduce(size)  # would hang or fail if one rank ran out of batches
            assert int(size) == 4 * world
            seen += [[k, e] for k, e in zip(b.keys, st.last_info["sample_epochs"])]
            steps += 1
        results[n] = {"steps": steps, "seen": seen, "per_epoch": st.samples_per_epoch()[f"shards{n}"]}
    dist.barrier()
    Path(f"{work}/rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


def test_two_ranks_two_workers_each_sample_once_per_epoch_and_equal_steps(tmp_path):
    (tmp_path / "t.txt").write_text("".join(x + "\n" for x in TINY_TEXT.read_text().splitlines()[:N]))
    for n in SHARD_COUNTS:
        s = write_shards([str(tmp_path / "t.txt")], str(tmp_path / f"shards{n}"), ShardOptions(num_shards=n))
        assert len(s.shards) == n and s.samples == N
    mp.start_processes(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    everything = {f"t-{i}" for i in range(1, N + 1)}
    for n in map(str, SHARD_COUNTS):
        assert ranks[0][n]["steps"] == ranks[1][n]["steps"] == STEPS
        shares = [r[n]["per_epoch"] for r in ranks]
        assert sum(shares) == N and abs(shares[0] - shares[1]) <= 2  # sample-exact split: +-1 per worker
        for epoch in (0, 1):
            per_rank = [Counter(k for k, e in r[n]["seen"] if e == epoch) for r in ranks]
            assert not set(per_rank[0]) & set(per_rank[1]), f"{n} shards: a sample on both ranks in epoch {epoch}"
            both = per_rank[0] + per_rank[1]
            assert set(both) == everything and set(both.values()) == {1}, f"{n} shards, epoch {epoch}"
            assert [sum(c.values()) for c in per_rank] == shares
