"""The TASTE recipe: units -> tokenizer sub-stages (taste_text -> taste_novq -> taste_vq) -> TASLM.

    tasu train taste-tiny output_dir=runs/taste-tiny

`tasu.train.recipe.train` hands a config whose stages are TASTE modes (`tasu.taste.config.TASTE_MODES`) to
`train_taste`. Same engine (DeepSpeed), metrics logger (metrics.jsonl, TensorBoard) and carry files as the main
recipe; each stage differs only in its model and its task (`tasu.taste.tasks`: TokenizerTask, TaslmTask):

    setup     the frozen encoder (model.encoder; encoder.* weights from train.init_from when that run has them) runs
              once over the training audio: keys / values / unit states held in memory (`tasu.taste.data`); units
              from taste.units_path, or a k-means fitted here and saved to output_dir/units.safetensors
    taste_*   TasteAutoencoder(mode = text | novq | vq) reconstructs the units; logged per step: loss, unit_loss,
              commit_loss, length_loss, unit_acc (+ rvq_perplexity, rvq_used in vq stages)
    taslm     every utterance is tokenized by the trained tokenizer (frozen, eval mode), then TaslmModel (LLM +
              LoRA + speech embedding + per-codebook heads) learns the joint sequence; logged: loss, text_loss,
              speech_loss
    each stage ends with stages/<name>/carry.safetensors (trained weights and RVQ codebooks, passed on to the next
              stage) and stages/<name>/eval.json (rank 0; data.eval, else the training utterances): unit accuracy,
              speech tokens per second and bitrate; for TASLM text / speech CE and selection accuracies

Resume: train.resume=auto skips the stages whose carry file exists (stage granularity: TASTE stages write no
mid-stage checkpoint, train.save_every is not used). ZeRO 0-2: evaluation runs on rank 0 alone.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from tasu import backend
from tasu.config.fields import ConfigError
from tasu.config.loader import dump_yaml
from tasu.model.freeze import apply_freeze
from tasu.taste.config import TASTE_MODES
from tasu.taste.data import Utterance, assign_units, text_tokenizer, train_batches
from tasu.taste.tasks import Corpus, TaslmTask, TokenizerTask, require_tokenizer
from tasu.taste.unit_discovery import (
    build_frozen_encoder,
    centroid_metadata,
    fit_unit_centroids,
    load_utterances,
    read_units_file,
)
from tasu.taste.units import save_centroids
from tasu.train import checkpoint as ckpt
from tasu.train.engine import Engine, all_reduce_sum, barrier, build_ds_config, init_distributed
from tasu.train.metrics_log import MetricsLogger
from tasu.train.recipe import NonFiniteLoss, previous_weights, seed_everything

log = logging.getLogger("tasu.train")


def is_taste_run(cfg) -> bool:
    return any(s.mode in TASTE_MODES for s in cfg.stages)


# -- setup -------------------------------------------------------------------------------------------------------------

def _check(cfg) -> None:
    t = cfg.train
    if t.zero_stage == 3:
        raise ConfigError("config key 'train.zero_stage': TASTE stages support ZeRO 0-2 (evaluation runs on rank 0 "
                          "alone), got 3")
    if t.resume not in ("auto", "none"):
        raise ConfigError(f"config key 'train.resume': TASTE runs resume at stage boundaries: auto or none, got "
                          f"{t.resume!r}")
    for s in cfg.stages:
        if s.encoder_lr is not None or s.encoder_top_layers:
            raise ConfigError(f"config key 'stages[{s.name}].encoder_lr': the encoder of a TASTE run is frozen "
                              "(encoder_lr and encoder_top_layers must be unset)")
    modes = [s.mode for s in cfg.stages]
    if "taslm" in modes:
        if cfg.taste.delay < 1:
            raise ConfigError(f"config key 'taste.delay': TASLM needs a delay >= 1, got {cfg.taste.delay}")
        if "taste_vq" not in modes[: modes.index("taslm")] and not t.init_from:
            raise ConfigError("config key 'stages': a taslm stage needs a trained TASTE tokenizer: a taste_vq stage "
                              "before it, or train.init_from a run that trained one")


def prepare_corpus(cfg, out: Path, rank: int, world: int, device, weights: dict) -> Corpus:
    """Encode the training (and, on rank 0, evaluation) audio; fit or load the units and assign them."""
    t0 = time.perf_counter()
    tok = text_tokenizer(cfg.model.llm)
    encoder = build_frozen_encoder(cfg, weights, device)
    train = load_utterances(cfg, encoder, tok, cfg.data.train, rank, world, "data.train", device)
    evals: list[Utterance] = []
    name = ""
    if rank == 0:
        if cfg.data.eval:
            evals, name = load_utterances(cfg, encoder, tok, cfg.data.eval, 0, 1, "data.eval", device), "data.eval"
        else:
            evals = train if world == 1 else load_utterances(cfg, encoder, tok, cfg.data.train, 0, 1, "data.train",
                                                             device)
            name = "data.train"
        if cfg.eval.max_samples:
            evals = evals[: cfg.eval.max_samples]
    if not train:
        raise ValueError(f"TASTE: rank {rank} holds no usable training utterance (data.train)")
    t = cfg.taste
    units_file = Path(t.units_path) if t.units_path else out / "units.safetensors"
    if not t.units_path and rank == 0 and not units_file.is_file():
        # fitted on rank 0's share (all of it in a single-process run); resumed runs keep the first fit
        c = fit_unit_centroids([u.unit_states for u in train], t.unit_vocab, t.unit_kmeans_iters, t.seed,
                               t.unit_fit_max_frames)
        save_centroids(units_file, c, centroid_metadata(cfg))
    barrier()
    centroids = read_units_file(str(units_file), cfg, train[0].unit_states.shape[1])
    assign_units(train, centroids)
    if evals is not train:
        assign_units(evals, centroids)
    if rank == 0:
        log.info("TASTE data: %d training utterances (rank 0), %d eval (%s), %d units from %s; %.1f s", len(train),
                 len(evals), name, centroids.shape[0], units_file, time.perf_counter() - t0)
    return Corpus(tok, int(tok.pad_token_id), train, evals, name, encoder.hidden_size)


def finished_stages(cfg, out: Path) -> int:
    """Leading stages whose carry file exists (train.resume=auto)."""
    if cfg.train.resume == "none":
        return 0
    n = 0
    for s in cfg.stages:
        if not ckpt.carry_path(out, s.name).is_file():
            break
        n += 1
    return n


# -- weights and freezing -------------------------------------------------------------------------------------------

def group_of(name: str) -> str:
    """Freeze group of a TASTE parameter: aggregator | unit_decoder | llm | lora | speech_lm."""
    if "lora_" in name:
        return "lora"
    if name.startswith(("speech_embed.", "speech_heads.")):
        return "speech_lm"
    return name.split(".", 1)[0]


# -- the loop ----------------------------------------------------------------------------------------------------------

def run_stage(cfg, si: int, corpus: Corpus, out: Path, rank: int, world: int, metrics: MetricsLogger,
              global_step: int, prev: tuple[dict, Path | None] | None = None) -> int:
    """One stage; `prev`: the weights it starts from when the caller has already read them."""
    stage, t_cfg = cfg.stages[si], cfg.train
    steps = cfg.stage_steps(stage)
    seed_everything(t_cfg.seed + 1000 * si)
    prev, prev_path = prev if prev is not None else previous_weights(cfg, si, out)
    if stage.mode == "taslm":
        task = TaslmTask(cfg, stage, corpus, prev, prev_path, t_cfg.seed)
    else:
        task = TokenizerTask(cfg, stage, corpus, prev, prev_path)
    summary = apply_freeze(task.model, stage.trainable, stage.trainable_regex, stage.frozen_regex, group_fn=group_of)
    n_train = sum(summary["trainable"].values())
    if rank == 0:
        log.info("stage %s (%s): %d trainable parameters", stage.name, stage.mode, n_train)
    ds_config = build_ds_config(t_cfg, cfg.data.batch_size, world)
    if rank == 0:
        (out / f"ds_config.{stage.name}.json").write_text(json.dumps(ds_config, indent=2), encoding="utf-8")
    lr = stage.lr if stage.lr is not None else t_cfg.lr
    warmup = stage.warmup_steps if stage.warmup_steps is not None else t_cfg.warmup_steps
    engine = Engine(task.model, t_cfg, ds_config, lr, warmup, steps)
    module = engine.module
    dtype = next(module.parameters()).dtype
    trained = {n for n, p in module.named_parameters() if p.requires_grad}
    batches = train_batches(corpus.train, cfg.data.batch_size, corpus.pad_id, t_cfg.seed + 1000 * si + rank)
    nan_skips = 0
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        n_samples, audio_s, skipped = 0, 0.0, False
        for _ in range(t_cfg.grad_accum):
            batch = next(batches).to(engine.device, dtype)
            loss, parts = task.step(engine, batch)
            if all_reduce_sum(0.0 if math.isfinite(float(loss.detach())) else 1.0):
                if t_cfg.nan_policy == "fail":
                    raise NonFiniteLoss(f"stage {stage.name} step {step}: loss is {float(loss)} (keys "
                                        f"{batch.keys_[:4]}); set train.nan_policy=skip to skip such steps")
                nan_skips, skipped = nan_skips + 1, True
                if nan_skips > t_cfg.max_nan_skips:
                    raise NonFiniteLoss(f"more than train.max_nan_skips={t_cfg.max_nan_skips} non-finite steps")
                continue
            engine.backward(loss)
            engine.step()
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v
            n_samples += len(batch)
            audio_s += float(batch.seconds.sum())
        dt = time.perf_counter() - t0
        rec = {"step": step, "stage": stage.name, "stage_index": si, "global_step": global_step + step}
        rec.update({k: all_reduce_sum(v) / (world * t_cfg.grad_accum) for k, v in sums.items()})
        rec.setdefault("loss", float("nan"))
        rec.update({"lr": engine.lr(), "grad_norm": engine.grad_norm(), "samples_per_s": n_samples * world / dt,
                    "audio_seconds_per_s": audio_s * world / dt, "nan_skipped": skipped})
        metrics.log(rec, global_step + step)
    full = {**prev, **engine.gathered_state_dict(trained | set(prev)), **task.carry(module)}
    if rank == 0:
        result = task.evaluate(module, corpus)
        ckpt.save_carry(ckpt.carry_path(out, stage.name), full)
        (ckpt.carry_path(out, stage.name).parent / "eval.json").write_text(json.dumps(result, indent=2) + "\n",
                                                                          encoding="utf-8")
        log.info("stage %s eval: %s", stage.name, json.dumps(result))
    barrier()
    engine.destroy()
    return global_step + steps


def train_taste(cfg) -> Path:
    """Run every stage of a TASTE config; returns the output dir."""
    _check(cfg)
    rank, local_rank, world = init_distributed(cfg.train.timeout_minutes)
    out = Path(cfg.output_dir)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        dump_yaml(cfg, out / "config.yaml")
    barrier()
    done = finished_stages(cfg, out)
    t_cfg = cfg.train
    total = sum(cfg.stage_steps(s) for s in cfg.stages)
    resume_from = (done - 1, cfg.stage_steps(cfg.stages[done - 1])) if done else None
    metrics = MetricsLogger(out, rank, total, t_cfg.tensorboard, t_cfg.progress_bar and rank == 0, t_cfg.log_every,
                            resume_from=resume_from)
    global_step = sum(cfg.stage_steps(s) for s in cfg.stages[:done])
    metrics.advance_bar(global_step)
    if done < len(cfg.stages):
        if rank == 0 and done:
            log.info("resuming after stage %s (its carry file exists)", cfg.stages[done - 1].name)
        weights, weights_path = previous_weights(cfg, done, out)
        if cfg.stages[done].mode == "taslm":
            require_tokenizer(weights, weights_path)            # before any compute
        corpus = prepare_corpus(cfg, out, rank, world, backend.device(local_rank), weights)
        for si in range(done, len(cfg.stages)):
            first = (weights, weights_path) if si == done else None          # read once above
            global_step = run_stage(cfg, si, corpus, out, rank, world, metrics, global_step, first)
    metrics.close()
    barrier()
    return out
