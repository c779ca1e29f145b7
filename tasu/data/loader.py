"""The loader API of the training recipe: `TrainStream` (infinite, resumable) and `eval_batches`.

Equal steps on every rank: each rank's stream is infinite (the epochs of every source follow each other), so
every rank always has a next batch and a step-based loop takes the same number of steps everywhere, whatever
the shard count. Within an epoch each sample is read exactly once across all ranks and workers (sample-exact
split, see `sources.py`), and the ranks' shares differ by at most one sample per worker.

Order: worker w of a rank produces a deterministic batch sequence (`pipeline.worker_batches`); the rank's
stream takes batch k from worker k mod W (W = max(1, data.num_workers)), whatever order the DataLoader
delivers them in. The state is (batches consumed, next batch number per worker, counters): JSON, per rank.
After `load_state_dict`, iterating again yields exactly the batches the uninterrupted run would have yielded,
provided world size, data.num_workers, seed, mode and sources are the same (checked); the cost is described in
`pipeline.py`.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Iterator
from copy import deepcopy

import torch.utils.data

from tasu.align.config import SimulationConfig
from tasu.config.fields import ConfigError
from tasu.data.batching import fixed_batches
from tasu.data.collate import collate
from tasu.data.config import DataConfig, SourceConfig
from tasu.data.faults import DataError, FaultCounter, empty_stats, stats_add
from tasu.data.pipeline import StreamSpec, finish_batch, prepare, worker_batches
from tasu.data.sources import ResolvedSource, read_part, resolve_source
from tasu.data.stages import MODES, build_stages
from tasu.types import SpeechBatch

log = logging.getLogger("tasu.data")

STATE_VERSION = 1


def _as_source(x) -> SourceConfig:
    if isinstance(x, SourceConfig):
        return x
    if isinstance(x, str):
        return SourceConfig(path=x)
    if isinstance(x, dict):
        return SourceConfig(**x)
    raise ConfigError(f"a data source must be a path or a {{path, weight, kind, task}} mapping, got {x!r}")


def resolve_sources(sources, mode: str, on_error: str, section: str = "data.train") -> list[ResolvedSource]:
    """Resolve configured sources (paths, dicts or SourceConfigs). In audio modes, text samples form text-only
    batches (simulated posteriors, `feats` None); in simulated mode no audio is ever read."""
    if mode not in MODES:
        raise ConfigError(f"unknown data mode '{mode}' {MODES}")
    cfgs = [_as_source(x) for x in sources]
    if not cfgs:
        raise ConfigError(f"config key '{section}': no data source given")
    out = [resolve_source(c, i, f"{section}.{i}", on_error) for i, c in enumerate(cfgs)]
    for i, src in enumerate(out):
        if mode == "ctc" and (src.kind == "text" or src.cfg.kind == "text"):
            raise ConfigError(f"config key '{section}.{i}': ctc mode trains on audio, but {src.cfg.path} is text only")
    return out


class _WorkerDataset(torch.utils.data.IterableDataset):
    """Run by DataLoader workers: worker w yields worker_batches(spec, w, W, start[w])."""

    def __init__(self, spec: StreamSpec, starts: list[int]):
        super().__init__()
        self.spec, self.starts = spec, starts

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w, n = (0, 1) if info is None else (info.id, info.num_workers)
        return worker_batches(self.spec, w, n, self.starts[w])


def _identity(x):
    return x


class TrainStream:
    """Infinite, resumable stream of training `SpeechBatch`es for one rank (see the module docstring).

    stats: samples_read, skipped {reason: n}, filtered {reason: n}, batches, epochs {source name: completed
    epochs of this rank (minimum over its workers)}.
    """

    def __init__(self, data_cfg: DataConfig, sources, mode: str, ctc_tokenizer, prompt_builder,
                 sim_cfg: SimulationConfig, rank: int = 0, world_size: int = 1, seed: int = 0, expansion=None):
        if not 0 <= rank < world_size:
            raise ValueError(f"TrainStream: rank {rank} outside world size {world_size}")
        self.cfg, self.mode, self.rank, self.world_size, self.seed = data_cfg, mode, rank, world_size, seed
        self.sources = resolve_sources(sources, mode, data_cfg.on_error)
        plan = build_stages(mode, data_cfg, ctc_tokenizer, prompt_builder, sim_cfg, train=True, seed=seed,
                            expansion=expansion)
        self.spec = StreamSpec(data_cfg, self.sources, mode, plan, rank, world_size, seed, ctc_tokenizer.vocab_size,
                               getattr(ctc_tokenizer, "blank_id", 0))
        self.num_workers = max(1, data_cfg.num_workers)
        self._consumed = 0
        self._next = [0] * self.num_workers  # next batch number of each worker
        self._base = empty_stats()  # counters restored from a checkpoint
        self._worker_stats = [empty_stats() for _ in range(self.num_workers)]
        self._worker_epochs: list[dict[int, int]] = [{} for _ in range(self.num_workers)]
        self.last_info: dict = {}
        bad = sum(sum(s.bad.values()) for s in self.sources)
        if bad:
            self._base["skipped"] = dict(sum((s.bad for s in self.sources), start=Counter()))
            self._base["read"] = bad
            log.warning("tasu.data: %d bad record(s) in in-memory manifests were skipped: %s", bad,
                        self._base["skipped"])

    # --- sizes ---
    def samples_per_epoch(self) -> dict[str, int]:
        """Samples this rank reads per epoch of each source (before faults and filters)."""
        from tasu.data.sources import part_range

        out = {}
        for src in self.sources:
            n = 0
            for w in range(self.num_workers):
                a, b = part_range(src.num_samples, self.world_size * self.num_workers, self.rank * self.num_workers + w)
                n += b - a
            out[src.name] = n
        return out

    # --- iteration ---
    def _raw(self) -> Iterator[tuple[SpeechBatch, dict]]:
        if self.cfg.num_workers == 0:
            yield from worker_batches(self.spec, 0, 1, self._next[0])
            return
        import multiprocessing

        from torch.utils.data import DataLoader

        method = self.cfg.worker_start
        if method not in multiprocessing.get_all_start_methods():
            method = None  # e.g. fork on Windows: the platform default
        loader = DataLoader(_WorkerDataset(self.spec, list(self._next)), batch_size=None,
                            num_workers=self.num_workers, collate_fn=_identity,
                            prefetch_factor=self.cfg.prefetch_factor, multiprocessing_context=method)
        yield from loader

    def __iter__(self) -> Iterator[SpeechBatch]:
        """Batches from the current position on (a fresh iterator continues where the last one stopped)."""
        pending: list[deque] = [deque() for _ in range(self.num_workers)]
        raw = self._raw()
        while True:
            want = self._consumed % self.num_workers
            while not pending[want]:
                batch, info = next(raw)
                pending[info["worker"]].append((batch, info))
            batch, info = pending[want].popleft()
            self._consumed += 1
            self._next[want] = info["batch"] + 1
            self._worker_stats[want] = info["stats"]
            self._worker_epochs[want] = info["epochs"]
            self.last_info = info
            self._check_ratio()
            yield batch

    def _check_ratio(self) -> None:
        st = self._totals()
        c = self.cfg
        bad = sum(st["skipped"].values())
        if st["read"] >= c.skip_check_after and bad > c.max_skip_ratio * st["read"]:
            raise DataError(f"too many bad samples on rank {self.rank}: skipped {bad} of {st['read']} read "
                            f"(> data.max_skip_ratio={c.max_skip_ratio:.2%}); by reason: {st['skipped']}")

    def _totals(self) -> dict:
        st = deepcopy(self._base)
        for ws in self._worker_stats:
            st = stats_add(st, ws)
        return st

    @property
    def stats(self) -> dict:
        st = self._totals()
        epochs = {}
        for src in self.sources:
            epochs[src.name] = min(we.get(src.index, self.spec.start_epoch) for we in self._worker_epochs)
        return {"samples_read": st["read"], "skipped": st["skipped"], "filtered": st["filtered"],
                "batches": self._consumed, "epochs": epochs}

    # --- state ---
    def _signature(self) -> dict:
        return {"world_size": self.world_size, "rank": self.rank, "num_workers": self.num_workers,
                "seed": self.seed, "mode": self.mode, "sources": [s.signature() for s in self.sources]}

    def state_dict(self) -> dict:
        """JSON-serialisable position of this rank's stream (enough to resume exactly)."""
        return {"version": STATE_VERSION, **self._signature(), "batches": self._consumed,
                "next_batch": list(self._next), "stats": self._totals(),
                "epochs": [dict((str(k), v) for k, v in we.items()) for we in self._worker_epochs]}

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Resume at `state`. With strict=False a state from another setup (world size, workers, sources, ...)
        restarts the stream at the epoch after the furthest one recorded, with a warning, instead of failing."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"data loader state version {state.get('version')} (this tasu writes {STATE_VERSION})")
        sig = self._signature()
        diff = {k: (state.get(k), v) for k, v in sig.items() if state.get(k) != v}
        if diff:
            what = "; ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in diff.items())
            if strict:
                raise ValueError(f"cannot resume the data stream exactly: {what}. Restore the saved setup (e.g. "
                                 "data.num_workers) or load with strict=False to restart at the next epoch")
            restart = 1 + max((max(e.values(), default=0) for e in state.get("epochs", [])), default=0)
            log.warning("tasu.data: data stream state does not match (%s); restarting at epoch %d", what, restart)
            self.spec.start_epoch = restart
            self._consumed, self._next = 0, [0] * self.num_workers
            self._base = deepcopy(state.get("stats", empty_stats()))
            self._worker_stats = [empty_stats() for _ in range(self.num_workers)]
            self._worker_epochs = [{} for _ in range(self.num_workers)]
            return
        self._consumed = int(state["batches"])
        self._next = [int(x) for x in state["next_batch"]]
        self._base = deepcopy(state["stats"])
        self._worker_stats = [empty_stats() for _ in range(self.num_workers)]
        self._worker_epochs = [{int(k): v for k, v in e.items()} for e in state["epochs"]]


def eval_batches(data_cfg: DataConfig, sources, mode: str, ctc_tokenizer, prompt_builder, batch_size: int,
                 sim_cfg: SimulationConfig | None = None, rank: int = 0, world_size: int = 1,
                 expansion=None) -> Iterator[SpeechBatch]:
    """Evaluation batches: sources in order, samples in order (unshuffled), each once; prompts without answers
    (answer = []), references kept; text samples simulated at epoch 0. With world_size > 1 each rank gets a
    contiguous, sample-exact share. Bad samples are skipped and counted like in training, and the length
    limits (data.max_sample_*, and `expansion`'s LLM length guard) apply too."""
    srcs = resolve_sources(sources, mode, data_cfg.on_error, "data.eval")
    plan = build_stages(mode, data_cfg, ctc_tokenizer, prompt_builder, sim_cfg or SimulationConfig(), train=False,
                        expansion=expansion)
    spec = StreamSpec(data_cfg, srcs, mode, plan, rank, world_size, 0, ctc_tokenizer.vocab_size,
                      getattr(ctc_tokenizer, "blank_id", 0))
    faults = FaultCounter(data_cfg.max_skip_ratio, data_cfg.skip_check_after, data_cfg.on_error, "eval")

    def samples() -> Iterator[dict]:
        for src in srcs:
            if src.num_samples < world_size:
                if rank >= src.num_samples:
                    continue  # no sample is read twice in evaluation
                items = read_part(src, 0, rank, src.num_samples, 0, False, mode == "simulated")
            else:
                items = read_part(src, 0, rank, world_size, 0, False, mode == "simulated")
            for item in items:
                s = prepare(plan, item, faults)
                if s is not None:
                    yield s

    for group in fixed_batches(samples(), batch_size):
        done = finish_batch(spec, group, faults)
        if done:
            yield collate(done, spec.vocab_size, spec.blank_id)


def calibration_texts(sources, on_error: str = "skip", limit: int = 2000) -> list[str]:
    """Up to `limit` transcripts (meta GT) of the given sources, in a fixed order, for CPS `target_cer`
    calibration. Text only: no audio is read."""
    from tasu.data.sources import read_part
    from tasu.data.tar_io import TarFault

    texts: list[str] = []
    for src in resolve_sources(sources, "simulated", on_error):
        for item in read_part(src, 0, 0, 1, 0, False, True):
            if isinstance(item, TarFault):
                continue
            gt = item["meta"].get("GT") or ""
            if gt.strip():
                texts.append(gt)
            if len(texts) >= limit:
                return texts
    return texts
