"""TASTE RVQ under torch.distributed (2 gloo ranks, different data): codebooks stay identical on every rank."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tasu.taste.rvq import ResidualVQ

from .train_utils import free_port

DECAY, K, M = 0.9, 8, 24                     # codes per codebook, valid vectors per rank and step


def _rank(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        plain = ResidualVQ(2, K, 4, decay=DECAY, seed=0).train()
        dead = ResidualVQ(2, K, 4, decay=DECAY, dead_code_threshold=0.5, seed=0).train()
        g = torch.Generator().manual_seed(100 + rank)                    # each rank sees different data
        for step in range(3):
            z = torch.randn(2, M // 2, 4, generator=g) + 3.0 * rank
            plain(z)
            dead(z)
            if step == 0:                                                # kill code 0 of stage 0 on every rank
                dead.embed[0, 0] = 1e3
                dead.cluster_size[0, 0] = 0.1
        for name, rvq in (("plain", plain), ("dead", dead)):
            torch.save(dict(rvq.state_dict()), os.path.join(out_dir, f"{name}{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_codebooks_are_synchronised_across_ranks(tmp_path):
    world = 2
    mp.start_processes(_rank, args=(world, free_port(), str(tmp_path)), nprocs=world, start_method="spawn")
    for name in ("plain", "dead"):
        s0, s1 = (torch.load(tmp_path / f"{name}{r}.pt") for r in range(world))
        for key in ("embed", "cluster_size", "embed_sum"):
            assert torch.equal(s0[key], s1[key]), (name, key)
        if name == "plain":
            # counts were all-reduced: after 3 steps sum_k N_k = d^3 * K + (1 - d^3) * (M per rank * 2 ranks)
            total = DECAY ** 3 * K + (1 - DECAY ** 3) * M * world
            assert torch.allclose(s0["cluster_size"].sum(1), torch.tensor([total, total]), atol=1e-4)
        else:
            assert s0["embed"][0, 0].abs().max() < 100.0                 # the dead code was replaced (same vector)
