"""The DeepSpeed engine wrapper: the only tasu module that imports deepspeed.

Exposes distributed init, engine construction (ZeRO 0-3, offload, precision, accumulation, clipping, schedules),
backward / step, checkpoint save / load and full-weight gathering. The training loop stays plain.

DeepSpeed JSON files in ds_configs/ hold ZeRO, offload and precision only; batch sizes, accumulation and
clipping are injected from tasu's config, and the merged config is written to the run dir.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
from pathlib import Path

import torch

from tasu import backend

log = logging.getLogger("tasu.train")

#: Keys a ds_configs/ JSON may hold (everything else comes from tasu's config).
ALLOWED_DS_KEYS = {"zero_optimization", "bf16", "fp16", "zero_force_ds_cpu_optimizer",
                   "zero_allow_untested_optimizer", "communication_data_type", "activation_checkpointing",
                   "flops_profiler", "wall_clock_breakdown", "steps_per_print"}


def _deepspeed():
    os.environ.setdefault("DS_ACCELERATOR", backend.current_device_type())
    import deepspeed

    return deepspeed


def init_distributed(timeout_minutes: int = 10) -> tuple[int, int, int]:
    """Initialise torch.distributed through DeepSpeed; returns (rank, local_rank, world_size).

    Works under the deepspeed launcher, torchrun, or a plain single process (env defaults filled in).
    On CPU the shm communication op is disabled so nothing is JIT-compiled (NOTES.md §2).
    """
    for k, v in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(k, v)
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(_free_port())
    ds = _deepspeed()
    if backend.current_device_type() == "cpu":
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # private flag: deepspeed is pinned
    local_rank = int(os.environ["LOCAL_RANK"])
    backend.set_device(local_rank)
    import torch.distributed as dist

    if not dist.is_initialized():
        ds.init_distributed(dist_backend=backend.info().comm_backend, auto_mpi_discovery=False, verbose=False,
                            timeout=datetime.timedelta(minutes=timeout_minutes))
    return dist.get_rank(), local_rank, dist.get_world_size()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(x: float) -> float:
    import torch.distributed as dist

    t = torch.tensor([x], dtype=torch.float64)
    if dist.is_initialized() and dist.get_world_size() > 1:
        t = t.to(backend.device(int(os.environ.get("LOCAL_RANK", 0)))) if backend.current_device_type() != "cpu" else t
        dist.all_reduce(t)
    return float(t.cpu())


def build_ds_config(train_cfg, micro_batch: int, world_size: int, mixed_graphs: bool = False) -> dict:
    """Merge the ds_configs JSON (ZeRO/offload/precision only) with tasu-owned settings.

    mixed_graphs: ranks may run different module sequences in one step (text-only and audio batches mixed).
    """
    from tasu.config.fields import ConfigError

    ds: dict = {}
    if train_cfg.ds_config:
        path = Path(train_cfg.ds_config)
        try:
            ds = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"config key 'train.ds_config': cannot read {path}: {e}") from None
        extra = set(ds) - ALLOWED_DS_KEYS
        if extra:
            raise ConfigError(f"config key 'train.ds_config': {path} sets {sorted(extra)}; DeepSpeed JSONs hold "
                              "ZeRO/offload/precision only (batch sizes, accumulation, clipping come from train.*)")
    zero = dict(ds.get("zero_optimization", {}))
    zero["stage"] = train_cfg.zero_stage  # train.zero_stage always wins (override key)
    if train_cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    if train_cfg.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    if zero["stage"] == 3:
        zero.setdefault("stage3_gather_16bit_weights_on_model_save", True)
        if mixed_graphs:
            # no trace-based prefetch or reuse: text-only and audio batches run different module sequences on
            # different ranks, and decisions taken from a recorded trace could issue mismatched all-gathers
            zero.setdefault("stage3_prefetch_bucket_size", 0)
            zero.setdefault("stage3_max_reuse_distance", 0)
    if "offload_optimizer" in zero or "offload_param" in zero:
        ds["zero_force_ds_cpu_optimizer"] = False  # keep the client torch AdamW: no cpu_adam JIT build
    ds["zero_optimization"] = zero
    backend.check_precision(train_cfg.precision)
    ds["bf16"] = {"enabled": train_cfg.precision == "bf16"}
    ds["fp16"] = {"enabled": train_cfg.precision == "fp16"}
    ds["train_micro_batch_size_per_gpu"] = micro_batch
    ds["gradient_accumulation_steps"] = train_cfg.grad_accum
    ds["train_batch_size"] = micro_batch * train_cfg.grad_accum * world_size
    if train_cfg.global_batch is not None and train_cfg.global_batch != ds["train_batch_size"]:
        raise ConfigError(
            f"config key 'train.global_batch': {train_cfg.global_batch} != data.batch_size ({micro_batch}) x "
            f"train.grad_accum ({train_cfg.grad_accum}) x world size ({world_size}) = {ds['train_batch_size']}")
    ds["gradient_clipping"] = train_cfg.grad_clip
    ds["zero_allow_untested_optimizer"] = True
    ds.setdefault("steps_per_print", 10**9)  # tasu logs; keep DeepSpeed quiet
    return ds


def lr_lambda(schedule: str, warmup: int, total: int, min_ratio: float):
    """LR multiplier per optimizer step: linear warmup, then cosine / linear decay to min_ratio, or constant."""
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "warmup_linear":
            return 1.0 - (1.0 - min_ratio) * progress
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return f


def param_groups(model: torch.nn.Module, lr: float, group_lrs: dict[str, float] | None = None) -> list[dict]:
    """Optimizer param groups of the trainable parameters: one per distinct peak LR, the `lr` group first (its
    LR is the one logged). `group_lrs` maps freeze groups (`tasu.model.freeze.group_of`: encoder, ctc_head,
    projector, llm, lora) to their own peak LR; the schedule scales every group alike."""
    from tasu.model.freeze import group_of

    by_lr: dict[float, list] = {lr: []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            by_lr.setdefault((group_lrs or {}).get(group_of(name), lr), []).append(p)
    return [{"params": ps, "lr": g_lr} for g_lr, ps in by_lr.items() if ps]


def _adamw(params, **kw) -> torch.optim.Optimizer:
    """torch AdamW, fused where the device supports it (CPU and CUDA: one pass over the states instead of
    several; 5x faster on a 51 M-parameter projector here), else the default implementation. Never a DeepSpeed
    op: nothing is JIT-compiled."""
    try:
        return torch.optim.AdamW(params, fused=True, **kw)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, **kw)


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint file that only full pickle could load (it may run code): refused, not loaded."""


def _deepspeed_safe_globals() -> list:
    """Classes DeepSpeed's checkpoints hold besides tensors and containers (optimizer states: loss scalers, the
    ZeRO stage enum, fragment addresses). Plain records and enums: rebuilding them runs no code of the file's."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def verify_checkpoint_pickles(folder: Path) -> None:
    """Load every .pt file of a checkpoint with torch.load(weights_only=True) (plus the DeepSpeed classes above)
    before DeepSpeed loads them itself with full pickle (`weights_only=False` in its checkpoint engine): a file
    that would run code when unpickled is refused, naming it. Costs one extra read of the checkpoint.
    TASU_TRUST_CHECKPOINTS=1 skips the check (checkpoints from a DeepSpeed setup holding other classes)."""
    if os.environ.get("TASU_TRUST_CHECKPOINTS") == "1":
        return
    import warnings

    _deepspeed()
    with torch.serialization.safe_globals(_deepspeed_safe_globals()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")  # DeepSpeed saves with protocol 4
        for f in sorted(Path(folder).rglob("*.pt")):
            try:
                torch.load(f, map_location="cpu", weights_only=True)
            except Exception as e:  # UnpicklingError, or anything a corrupt file raises
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise UnsafeCheckpointError(
                    f"{f}: refused, it does not load with torch.load(weights_only=True) ({first[:300]}). A "
                    "checkpoint file that needs full pickle can run code when loaded; if you wrote it yourself "
                    "and trust it, set TASU_TRUST_CHECKPOINTS=1") from None


class Engine:
    """A DeepSpeed engine over a SpeechLLM (or CTCModel) for one stage: forward / backward / step / save / load."""

    def __init__(self, model: torch.nn.Module, train_cfg, ds_config: dict, lr: float, warmup: int, total_steps: int,
                 group_lrs: dict[str, float] | None = None):
        ds = _deepspeed()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = _adamw(param_groups(model, lr, group_lrs), lr=lr, betas=tuple(train_cfg.adam_betas),
                     eps=train_cfg.adam_eps, weight_decay=train_cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda(train_cfg.schedule, warmup, total_steps, train_cfg.min_lr_ratio))
        self.ds_config = ds_config
        self.engine, self.optimizer, _, self.scheduler = ds.initialize(
            model=model, optimizer=opt, lr_scheduler=sched, model_parameters=params, config=ds_config)
        self.zero_stage = ds_config["zero_optimization"]["stage"]
        if self.zero_stage == 0 and getattr(self.engine, "dp_world_size", None) == 1:
            # One data-parallel rank: ZeRO-0's backward would still flatten every gradient into one fresh buffer,
            # "all-reduce" it with itself and copy it back (~0.2 s a step for the 52 M-parameter TASU projector on
            # CPU, benchmarks/README.md). There is nothing to reduce; loss scaling for accumulation is unaffected.
            self.engine.enable_backward_allreduce = False
        if self.zero_stage == 3 and hasattr(model, "external_parameters"):
            for module, param in model.external_parameters():
                ds.zero.register_external_parameter(module, param)

    @property
    def module(self):
        return self.engine.module

    @property
    def device(self):
        return self.engine.device

    def forward(self, *args, **kwargs):
        return self.engine(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> None:
        self.engine.step()

    def is_boundary(self) -> bool:
        return self.engine.is_gradient_accumulation_boundary()

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def grad_norm(self) -> float | None:
        g = self.engine.get_global_grad_norm()
        if g is None:
            return None
        return float(g.item() if torch.is_tensor(g) else g)

    def save(self, ckpt_root: str | Path, tag: str) -> None:
        """DeepSpeed checkpoint (trainable weights, optimizer, scheduler) under ckpt_root/tag (collective)."""
        self.engine.save_checkpoint(str(ckpt_root), tag=tag, save_latest=False, exclude_frozen_parameters=True)

    def load(self, ckpt_root: str | Path, tag: str) -> None:
        verify_checkpoint_pickles(Path(ckpt_root) / tag)
        path, _ = self.engine.load_checkpoint(str(ckpt_root), tag=tag, load_module_strict=False)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load checkpoint {ckpt_root}/{tag}")

    def gathered_state_dict(self, names: set[str]) -> dict[str, torch.Tensor]:
        """Full (unpartitioned) CPU copies of the named parameters, on every rank (collective under ZeRO-3)."""
        ds = _deepspeed()
        named = [(n, p) for n, p in self.module.named_parameters() if n in names]
        out = {}
        if self.zero_stage == 3:
            with ds.zero.GatheredParameters([p for _, p in named], modifier_rank=None):
                for n, p in named:
                    out[n] = p.detach().float().cpu().clone()
        else:
            for n, p in named:
                out[n] = p.detach().float().cpu().clone()
        return out

    def destroy(self) -> None:
        if hasattr(self.engine, "destroy"):
            self.engine.destroy()


def zero3_init_context(zero_stage: int, ds_config: dict):
    """Context for building a model whose parameters ZeRO-3 partitions at creation (a no-op otherwise)."""
    import contextlib

    if zero_stage != 3:
        return contextlib.nullcontext()
    import torch._dynamo  # noqa: F401  (NOTES.md §2: needed before zero.Init, else a signature TypeError)

    return _deepspeed().zero.Init(config_dict_or_path=ds_config)
