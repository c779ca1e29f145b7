"""The batch stream of one (rank, worker): sources -> mixing -> pre stages -> buckets -> post stages -> collate.

Everything here is a pure function of (spec, worker, number of workers): the same arguments give the same
batches, in the same order. This is what makes exact resume possible: a worker asked to start at batch m
re-runs the cheap part (reading sample metadata, tokenising, simulating, bucketing) for batches 0..m-1
without decoding audio or collating, then continues normally. The cost of a resume is re-reading, once, the
metadata of every sample this worker consumed since the stream started (all epochs so far): for local shards
only the JSON members (audio members are seeked over and fetched later for the few samples still waiting in
buckets); for pipe: / remote shards the whole byte stream; plus tokenising (and CPS) of those samples. No
audio is decoded and no feature computed during the skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tasu.data.batching import Mixer, make_batcher
from tasu.data.collate import collate
from tasu.data.config import DataConfig
from tasu.data.faults import FaultCounter, stats_sub
from tasu.data.sources import ReadMode, ResolvedSource, _rng, source_stream
from tasu.data.stages import SampleError, SampleFiltered, StagePlan, run_stages
from tasu.data.tar_io import TarFault
from tasu.types import SpeechBatch


@dataclass
class StreamSpec:
    """All a worker needs (picklable for spawn-started DataLoader workers)."""

    cfg: DataConfig
    sources: list[ResolvedSource]
    mode: str
    plan: StagePlan
    rank: int
    world_size: int
    seed: int
    vocab_size: int
    blank_id: int = 0
    start_epoch: int = 0


def prepared_samples(spec: StreamSpec, worker: int, num_workers: int, faults: FaultCounter,
                     epochs: dict[int, int], mode: ReadMode | None = None) -> Iterator[dict]:
    """Infinite stream of samples after their `pre` stages, mixed across sources by weight."""
    cfg = spec.cfg
    part, parts = spec.rank * num_workers + worker, spec.world_size * num_workers
    as_text = spec.mode == "simulated"

    def done(src_index: int, next_epoch: int) -> None:
        epochs[src_index] = next_epoch  # epochs are absolute: a restart at epoch k counts 0..k-1 as done

    streams = [source_stream(src, part, parts, spec.seed, cfg.shuffle_shards, cfg.shuffle_buffer, spec.rank,
                             worker, as_text, spec.start_epoch, done, mode) for src in spec.sources]
    mixer = Mixer([src.cfg.weight for src in spec.sources], _rng("mix", spec.seed, spec.rank, worker))
    while True:
        s = prepare(spec.plan, next(streams[mixer.draw()]), faults)
        if s is not None:
            yield s


def prepare(plan: StagePlan, item: dict | TarFault, faults: FaultCounter) -> dict | None:
    """A read item after its `pre` stages, or None (fault or filter: counted and logged)."""
    if isinstance(item, TarFault):
        faults.skip(item.reason, None, item.detail, item.where, item.count)
        return None
    try:
        s = run_stages(plan.pre[item["__input__"]], item)
    except SampleFiltered as e:
        faults.filter(e.reason, item["__key__"], e.detail, item["__where__"])
        return None
    except SampleError as e:
        faults.skip(e.reason, item["__key__"], e.detail, item["__where__"])
        return None
    faults.ok()
    return s


def finish_batch(spec: StreamSpec, group: list[dict], faults: FaultCounter) -> list[dict]:
    """`post` stages of a batch's samples; failing samples are skipped (counted, logged)."""
    out = []
    for s in group:
        try:
            out.append(run_stages(spec.plan.post[s["__input__"]], s))
        except SampleError as e:
            faults.skip(e.reason, s["__key__"], e.detail, s["__where__"], already_read=True)  # ok() counted it
    return out


def worker_batches(spec: StreamSpec, worker: int, num_workers: int,
                   start: int = 0) -> Iterator[tuple[SpeechBatch, dict]]:
    """(batch, info) pairs of one worker, from its batch number `start` on (earlier ones are skipped cheaply).

    info: worker, batch (this worker's batch number, counting batches that lost all samples), stats (counters
    since `start`), epochs (completed epochs per source index), sample_epochs (epoch of each sample).
    """
    cfg = spec.cfg
    faults = FaultCounter(cfg.max_skip_ratio, cfg.skip_check_after, cfg.on_error,
                          f"rank {spec.rank} worker {worker}")
    epochs = {src.index: spec.start_epoch for src in spec.sources}
    batcher = make_batcher(cfg)
    base = faults.snapshot()
    mode = ReadMode(skip_audio=start > 0)
    for m, group in enumerate(batcher(prepared_samples(spec, worker, num_workers, faults, epochs, mode))):
        if m < start:
            if m == start - 1:
                base = faults.snapshot()  # counters up to this point are in the resumed state already
            continue
        mode.skip_audio = False
        samples = finish_batch(spec, group, faults)
        if not samples:
            continue
        batch = collate(samples, spec.vocab_size, spec.blank_id)
        info = {"worker": worker, "batch": m, "stats": stats_sub(faults.snapshot(), base), "epochs": dict(epochs),
                "sample_epochs": [s["__epoch__"] for s in samples], "sources": [s["__source__"] for s in samples]}
        yield batch, info
