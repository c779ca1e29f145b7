"""The one training recipe: setup -> (per stage: build -> step loop -> save) -> export.

    tasu train CONFIG [key=value ...]
    deepspeed --num_gpus N --module tasu train CONFIG [key=value ...]

Stages run in order; each starts from the weights the previous stages trained (a `carry` file), with its own
input mode, data, freeze policy, LR and steps. A `ctc` stage trains a `CTCModel` (encoder + CTC head, no LLM)
with the same loop; its weights carry into later SpeechLLM stages under the same names. The loop is step-based
over an infinite stream that gives every rank the same number of steps. Checkpoints hold everything needed to
continue bit-for-bit on CPU.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from pathlib import Path

import torch

from tasu import backend
from tasu.config.loader import dump_yaml
from tasu.data.expansion import speech_expansion
from tasu.data.loader import TrainStream
from tasu.model.build import build_ctc_model, build_speech_llm
from tasu.model.freeze import apply_freeze, encoder_top_layers_regex, log_summary
from tasu.text.prompts import PromptBuilder
from tasu.train import checkpoint as ckpt
from tasu.train import comm_faults, faults
from tasu.train.engine import Engine, all_reduce_sum, barrier, build_ds_config, init_distributed
from tasu.train.metrics_log import MetricsLogger

log = logging.getLogger("tasu.train")


class NonFiniteLoss(RuntimeError):
    pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def build_stage_model(cfg, stage_index: int, out: Path):
    """Fresh model (CTCModel for a ctc stage, else SpeechLLM) + the weights trained by all earlier stages (a ctc
    stage takes the encoder's; the others pass through its carry file unchanged)."""
    ctc = cfg.stages[stage_index].mode == "ctc"
    model = build_ctc_model(cfg) if ctc else build_speech_llm(cfg)
    weights, prev = previous_weights(cfg, stage_index, out)
    if prev is not None:
        if ctc:
            weights = {k: v for k, v in weights.items() if k.startswith("encoder.")}
        ckpt.apply_weights(model, weights, prev)
    return model


def previous_weights(cfg, stage_index: int, out: Path) -> tuple[dict, Path | None]:
    """What a stage starts from: the previous stage's carry file; for the first stage `train.init_from` (another
    run's trained weights) or nothing. Returns (name -> tensor, the file read or None)."""
    if stage_index > 0:
        prev = ckpt.carry_path(out, cfg.stages[stage_index - 1].name)
        return ckpt.load_carry(prev), prev
    if cfg.train.init_from:
        from tasu.train.init_from import load_init_weights

        return load_init_weights(cfg.train.init_from)
    return {}, None


def simulation_for(cfg, sources, ctc_tokenizer, rank: int):
    """The CPS config of a stage: with `simulation.target_cer`, drop/substitution rates calibrated on the stage's
    own transcripts (deterministic, so every rank computes the same rates)."""
    from tasu.align.cps import resolve_rates
    from tasu.data.loader import calibration_texts

    sim = cfg.simulation
    if sim.target_cer is None:
        return sim
    ids = [ctc_tokenizer.encode(t) for t in calibration_texts(sources, cfg.data.on_error)]
    sim = resolve_rates(sim, [i for i in ids if i], ctc_tokenizer.vocab_size)
    if rank == 0:
        log.info("simulation.target_cer=%.3f -> drop_rate = substitute_rate = %.4f", sim.target_cer, sim.drop_rate)
    return sim


def _save(engine: Engine, stream: TrainStream, out: Path, rank: int, stage_index: int, step: int, keep: int) -> None:
    root = out / "checkpoints"
    tag = ckpt.tag_for(stage_index, step)
    if rank == 0:
        ckpt.clear_incomplete(root)
    barrier()
    engine.save(root, ckpt.tmp_tag(tag))
    faults.kill_point("kill_in_save", step)  # test hook (TASU_INJECT): a crash while the checkpoint is half written
    ckpt.write_rank_state(root / ckpt.tmp_tag(tag), rank,
                          {"stage_index": stage_index, "step": step, "data": stream.state_dict()}, backend.rng_state())
    barrier()
    if rank == 0:
        ckpt.publish(root, tag, keep)
    barrier()


def train(cfg) -> Path:
    """Run every stage of `cfg`; returns the output dir. A collective that fails because a peer rank died or hung
    raises `RankLostError` naming the lost rank (see `tasu.train.comm_faults`). TASTE configs (stages in TASTE
    modes) run `tasu.taste.recipe.train_taste`: same engine, logger and carry files, TASTE models and data."""
    try:
        from tasu.taste.recipe import is_taste_run, train_taste

        return train_taste(cfg) if is_taste_run(cfg) else _train(cfg)
    except Exception as e:
        import torch.distributed as dist

        if dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
        else:
            rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        lost = comm_faults.rank_lost_error(e, rank, world, cfg.train.timeout_minutes)
        if lost is None:
            raise
        raise lost from e


def stage_setup(cfg, si: int, out: Path, rank: int, world: int):
    """(DeepSpeed engine, TrainStream) for stage `si`: seed, stage model with the previous stages' weights, freeze
    policy, merged DeepSpeed config (written to out/ds_config.<stage>.json by rank 0), engine and data stream.
    The training loop below and benchmarks/bench_step.py both start a stage here."""
    t_cfg, stage = cfg.train, cfg.stages[si]
    seed_everything(t_cfg.seed + 1000 * si)
    model = build_stage_model(cfg, si, out)
    top = encoder_top_layers_regex(model, stage.encoder_top_layers)
    summary = apply_freeze(model, stage.trainable, stage.trainable_regex + top, stage.frozen_regex)
    if rank == 0:
        log_summary(summary, stage.name)
    ds_config = build_ds_config(t_cfg, cfg.data.batch_size, world, mixed_graphs=stage.mode not in ("simulated", "ctc"))
    if rank == 0:
        import json

        out.mkdir(parents=True, exist_ok=True)
        (out / f"ds_config.{stage.name}.json").write_text(json.dumps(ds_config, indent=2), encoding="utf-8")
    lr = stage.lr if stage.lr is not None else t_cfg.lr
    warmup = stage.warmup_steps if stage.warmup_steps is not None else t_cfg.warmup_steps
    group_lrs = {"encoder": stage.encoder_lr} if stage.encoder_lr is not None else None
    engine = Engine(model, t_cfg, ds_config, lr, warmup, cfg.stage_steps(stage), group_lrs)
    speech = engine.module
    speech.uniform_graph = engine.zero_stage == 3 and stage.mode not in ("simulated", "ctc")
    prompt_builder = None if stage.mode == "ctc" else PromptBuilder.from_config(cfg.prompts, speech.llm_tokenizer)
    sources = stage.train_data or cfg.data.train
    sim_cfg = simulation_for(cfg, sources, speech.ctc_tokenizer, rank)
    stream = TrainStream(cfg.data, sources, stage.mode, speech.ctc_tokenizer, prompt_builder, sim_cfg,
                         rank=rank, world_size=world, seed=t_cfg.seed + 1000 * si,
                         expansion=speech_expansion(speech, stage.mode, cfg.data))
    return engine, stream


def _train(cfg) -> Path:
    rank, local_rank, world = init_distributed(cfg.train.timeout_minutes)
    comm_faults.start_heartbeat(rank, world)  # lets survivors tell which rank was lost (multi-rank runs)
    out = Path(cfg.output_dir)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        dump_yaml(cfg, out / "config.yaml")
    barrier()
    t_cfg = cfg.train
    resume = ckpt.find_resume(t_cfg.resume, out / "checkpoints")
    if resume is not None and rank == 0:
        log.info("resuming from %s (stage %d, step %d)", resume.path, resume.stage_index, resume.step)
    total = sum(cfg.stage_steps(s) for s in cfg.stages)
    metrics = MetricsLogger(out, rank, total, t_cfg.tensorboard, t_cfg.progress_bar and rank == 0, t_cfg.log_every,
                            resume_from=None if resume is None else (resume.stage_index, resume.step))
    global_step = 0
    nan_skips = 0
    for si, stage in enumerate(cfg.stages):
        steps = cfg.stage_steps(stage)
        if resume is not None and si < resume.stage_index:
            global_step += steps
            metrics.advance_bar(steps)
            continue
        engine, stream = stage_setup(cfg, si, out, rank, world)
        speech = engine.module
        step = 0
        if resume is not None and si == resume.stage_index:
            engine.load(resume.root, resume.tag)
            state, rng = ckpt.read_rank_state(resume.path, rank)
            stream.load_state_dict(state["data"])
            backend.set_rng_state(rng)
            step = resume.step
            global_step += step
            metrics.advance_bar(step)
        trained = {n for n, p in speech.named_parameters() if p.requires_grad}
        batches = iter(stream)
        # same decision on every rank (config only): the all-reduces below stay matched
        log_parts = stage.mode in ("posterior", "lego", "features") and cfg.model.encoder.ctc_weight > 0
        while step < steps:
            t0 = time.perf_counter()
            loss_sum, n_tok, n_samples, audio_s, frames, padded = 0.0, 0, 0, 0.0, 0, 0
            part_sums, n_parts = {"llm_loss": 0.0, "ctc_loss": 0.0}, 0
            skipped = False
            for _ in range(t_cfg.grad_accum):
                batch = next(batches).to(engine.device)
                mode = "simulated" if batch.is_text_only else stage.mode
                loss, ntok = engine.forward(batch, mode)
                if faults.active("nan_loss", step + 1):
                    loss = loss * float("nan")
                bad = all_reduce_sum(0.0 if math.isfinite(float(loss.detach())) else 1.0)
                if bad:
                    if t_cfg.nan_policy == "fail":
                        raise NonFiniteLoss(f"stage {stage.name} step {step + 1}: loss is {float(loss)} on "
                                            f"{int(bad)} rank(s) (keys {batch.keys[:4]}); set train.nan_policy=skip "
                                            "to skip such steps")
                    nan_skips += 1
                    skipped = True
                    if nan_skips > t_cfg.max_nan_skips:
                        raise NonFiniteLoss(f"more than train.max_nan_skips={t_cfg.max_nan_skips} non-finite steps")
                    continue  # every rank agreed (all-reduced flag): no backward, no step, collectives stay in step
                engine.backward(loss)
                engine.step()
                if log_parts and speech.loss_parts:
                    n_parts += 1
                    for k in part_sums:
                        part_sums[k] += float(speech.loss_parts[k])
                loss_sum += float(loss.detach())
                n_tok += ntok
                n_samples += len(batch)
                audio_s += batch.audio_seconds
                frames += batch.num_frames()
                padded += _padded_frames(batch)
            step += 1
            global_step += 1
            loss_mean = all_reduce_sum(loss_sum) / (world * t_cfg.grad_accum)   # logged: mean over ranks
            dt = time.perf_counter() - t0
            rec = {"step": step, "stage": stage.name, "stage_index": si, "global_step": global_step,
                   "loss": loss_mean, "lr": engine.lr(), "grad_norm": engine.grad_norm(),
                   "samples_per_s": n_samples * world / dt, "tokens_per_s": n_tok * world / dt,
                   "audio_seconds_per_s": audio_s * world / dt,
                   "padding_ratio": 1.0 - frames / padded if padded else 0.0,
                   "peak_memory_bytes": backend.peak_memory_bytes(), "nan_skipped": skipped}
            if log_parts:       # joint CTC: the two terms apart (means over the micro-batches that had both)
                n_all = all_reduce_sum(float(n_parts))
                for k, v in part_sums.items():
                    total = all_reduce_sum(v)
                    rec[k] = total / n_all if n_all else None
            metrics.log(rec, global_step)
            if (t_cfg.save_every and step % t_cfg.save_every == 0) or step == steps:
                _save(engine, stream, out, rank, si, step, t_cfg.keep_last)
        prev, _ = previous_weights(cfg, si, out)
        # weights this stage's model lacks (a ctc stage has no projector / LLM) pass through unchanged
        full = {**prev, **engine.gathered_state_dict(trained | set(prev))}
        if rank == 0:
            ckpt.save_carry(ckpt.carry_path(out, stage.name), full)
        barrier()
        engine.destroy()
        del engine, speech
    metrics.close()
    if t_cfg.export_at_end and rank == 0:
        from tasu.train.export import export_run

        export_run(out, out / "export")
    barrier()
    if cfg.eval.at_end and rank == 0:
        # after the last collective: the other ranks leave instead of waiting (a long decode would outlast the
        # process group's timeout)
        from tasu.eval.at_end import evaluate_at_end

        evaluate_at_end(out)
    return out


def _padded_frames(batch) -> int:
    """Frames including padding (B x T_max) for the padding ratio."""
    if batch.feat_lengths is not None:
        return int(batch.feat_lengths.numel() * batch.feat_lengths.max())
    if batch.posteriors is not None:
        return int(batch.posteriors.lengths.numel() * batch.posteriors.max_frames)
    return 0


def configure_logging(rank: int) -> None:
    level = logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(level=level, format=f"[%(asctime)s r{rank}] %(name)s: %(message)s", datefmt="%H:%M:%S")


def run_from_cli(cfg) -> int:
    configure_logging(int(os.environ.get("RANK", "0")))
    try:
        train(cfg)
    except comm_faults.RankLostError as e:
        log.error("%s", e)
        logging.shutdown()
        # no interpreter teardown: destroying a process group whose peer is gone can abort or block
        os._exit(comm_faults.EXIT_RANK_LOST)
    return 0
