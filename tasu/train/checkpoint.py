"""Checkpoint layout, atomic publication, discovery and pruning.

    output_dir/checkpoints/
        step-<stage index>-<step>/        a complete checkpoint (renamed from tmp-* only when fully written)
            <deepspeed files>             trainable weights, optimizer, scheduler (per rank)
            rank<r>.json                  step, stage, data position of rank r
            rank<r>_rng.pt                RNG states of rank r (tensors only: loaded with weights_only=True)
            COMPLETE                      written last
        tmp-...                           an incomplete checkpoint (never loaded; removed on the next save)
    output_dir/stages/<stage>/carry.safetensors
        weights trained by this and earlier stages, full (ZeRO-3 gathered); the next stage starts from them
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

TAG_RE = re.compile(r"^step-(\d{2})-(\d{8})$")


def tag_for(stage_index: int, step: int) -> str:
    return f"step-{stage_index:02d}-{step:08d}"


@dataclass
class ResumePoint:
    path: Path
    stage_index: int
    step: int

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def tag(self) -> str:
        return self.path.name


def complete_checkpoints(ckpt_root: Path) -> list[ResumePoint]:
    """Complete checkpoints, oldest first."""
    out = []
    if not ckpt_root.is_dir():
        return out
    for d in ckpt_root.iterdir():
        m = TAG_RE.match(d.name)
        if m and (d / "COMPLETE").is_file():
            out.append(ResumePoint(d, int(m.group(1)), int(m.group(2))))
    return sorted(out, key=lambda r: (r.stage_index, r.step))


def find_resume(resume: str, ckpt_root: Path) -> ResumePoint | None:
    """`auto`: newest complete checkpoint (or None); `none`: None; else that checkpoint path."""
    if resume == "none":
        return None
    if resume == "auto":
        found = complete_checkpoints(ckpt_root)
        return found[-1] if found else None
    p = Path(resume)
    m = TAG_RE.match(p.name)
    if not p.is_dir() or not m:
        raise FileNotFoundError(f"train.resume={resume!r}: not a checkpoint folder (expected .../step-SS-NNNNNNNN)")
    if not (p / "COMPLETE").is_file():
        raise FileNotFoundError(f"train.resume={resume!r}: checkpoint is incomplete (no COMPLETE marker)")
    return ResumePoint(p, int(m.group(1)), int(m.group(2)))


def tmp_tag(tag: str) -> str:
    return f"tmp-{tag}"


def write_rank_state(dir_: Path, rank: int, state: dict, rng: dict) -> None:
    (dir_ / f"rank{rank}.json").write_text(json.dumps(state), encoding="utf-8")
    torch.save(rng, dir_ / f"rank{rank}_rng.pt")


def read_rank_state(dir_: Path, rank: int) -> tuple[dict, dict]:
    state_file = dir_ / f"rank{rank}.json"
    if not state_file.is_file():
        raise FileNotFoundError(f"{dir_}: no state for rank {rank} (was it saved with another world size?)")
    state = json.loads(state_file.read_text(encoding="utf-8"))
    rng = torch.load(dir_ / f"rank{rank}_rng.pt", weights_only=True)
    return state, rng


def publish(ckpt_root: Path, tag: str, keep_last: int) -> None:
    """Rank 0, after every rank wrote: mark complete, rename tmp -> final, prune old ones.

    A kill -9 at any point leaves each checkpoint either complete or invisible: COMPLETE is written inside tmp-*
    (never loaded), the rename is atomic, and a checkpoint is removed by first renaming it to tmp-* (so a
    half-deleted folder can never carry a COMPLETE marker under a step-* name); tmp-* leftovers are cleared by
    the next save.
    """
    from tasu.train import faults

    step = int(TAG_RE.match(tag).group(2))
    tmp = ckpt_root / tmp_tag(tag)
    # data on disk before the marker, marker before the rename: also a power cut (not only a kill, which keeps
    # the page cache) cannot leave a COMPLETE checkpoint with missing bytes
    for f in sorted(tmp.rglob("*")):
        if f.is_file():
            _fsync(f)
    (tmp / "COMPLETE").write_text("ok\n", encoding="utf-8")
    _fsync(tmp / "COMPLETE")
    faults.kill_point("kill_before_rename", step)
    final = ckpt_root / tag
    if final.exists():
        _remove(final)
    tmp.rename(final)
    _fsync(ckpt_root)  # the rename itself
    faults.kill_point("kill_before_prune", step)
    for old in complete_checkpoints(ckpt_root)[:-keep_last]:
        _remove(old.path)


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk; a no-op where the platform cannot (folders on
    Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Atomically hide a checkpoint (rename to tmp-*), then delete it."""
    trash = path.with_name(f"tmp-removed-{path.name}")
    shutil.rmtree(trash, ignore_errors=True)
    path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def clear_incomplete(ckpt_root: Path) -> None:
    """Remove leftovers of a save that was interrupted (rank 0, before a new save)."""
    if ckpt_root.is_dir():
        for d in ckpt_root.glob("tmp-*"):
            shutil.rmtree(d, ignore_errors=True)


def carry_path(output_dir: Path, stage_name: str) -> Path:
    return output_dir / "stages" / stage_name / "carry.safetensors"


def save_carry(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(path)


def load_carry(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def apply_weights(model, tensors: dict[str, torch.Tensor], source) -> None:
    """Copy named full tensors into `model`'s parameters; unknown names are an error naming `source`."""
    params = dict(model.named_parameters())
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        raise ValueError(f"{source}: weights {unknown[:5]} do not exist in the model built from the config")
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t.to(params[n].dtype))
