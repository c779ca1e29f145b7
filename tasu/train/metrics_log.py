"""Per-step metrics: metrics.jsonl (every step), TensorBoard scalars, rank-0 console lines and a tqdm bar."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("tasu.train")


class MetricsLogger:
    """Rank 0 writes; other ranks' calls are no-ops. metrics.jsonl is appended (resume continues it)."""

    def __init__(self, output_dir: Path, rank: int, total_steps: int, tensorboard: bool, progress_bar: bool,
                 log_every: int, resume_from: tuple[int, int] | None = None):
        self.rank = rank
        self.log_every = log_every
        self.path = output_dir / "metrics.jsonl"
        self.tb = None
        self.bar = None
        if rank != 0:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        if resume_from is None:
            self.path.write_text("", encoding="utf-8")
        else:
            self._truncate_after(*resume_from)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(output_dir / "tb"))
            except ImportError:
                log.warning("tensorboard is not installed: no TensorBoard scalars")
        if progress_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, desc="train", dynamic_ncols=True, leave=True)

    def _truncate_after(self, stage_index: int, step: int) -> None:
        """Drop lines logged after the checkpoint we resume from (they will be produced again)."""
        if not self.path.is_file():
            return
        kept = []
        for n, line in enumerate(self.path.read_text(encoding="utf-8", errors="replace").split("\n"), 1):
            try:
                rec = json.loads(line)
            except ValueError:  # a line torn by a kill -9 mid-write (or blank): it is produced again
                if line.strip():
                    log.warning("metrics.jsonl line %d is incomplete (a crash while writing it): dropped", n)
                continue
            if (rec["stage_index"], rec["step"]) <= (stage_index, step):
                kept.append(line)
        # temp file + rename: a kill during this rewrite must not lose the lines before the checkpoint
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        tmp.replace(self.path)

    def advance_bar(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def log(self, rec: dict, global_step: int) -> None:
        if self.rank != 0:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k not in ("step", "stage_index"):
                    self.tb.add_scalar(f"{rec['stage']}/{k}", v, global_step)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.2e}")
        elif rec["step"] % self.log_every == 0:
            log.info("stage %s step %d loss %.4f lr %.2e %.1f samples/s", rec["stage"], rec["step"], rec["loss"],
                     rec["lr"], rec["samples_per_s"])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
