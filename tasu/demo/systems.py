"""The demo's TASU systems: each one is `tasu train demo` with its own overrides (one recipe, modes by config),
then zero-shot decoding of the held-out voices and the real utterances.

    tasu_text   stage align_text: simulated posteriors from text-only shards (no audio read), projector trained
    audio       stage align_audio: the CTC head's real posteriors on TTS audio shards (PSD), projector trained
    curriculum  starts from tasu_text's weights; stage align_audio on half of the TTS audio
    embed_init  no training: the projector as initialised onto SmolLM2's embeddings (what the LLM makes of the
                CTC head's units before any alignment)
    lego        no training: LegoSLM, posteriors x SmolLM2's embedding matrix

All start from the same CTC head (train.init_from = the ctc step's carry file, or tasu_text's run for the
curriculum) and the same projector init, so their differences come from the data they were trained on.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from tasu.demo.assets import read_jsonl
from tasu.demo.plan import DemoPlan

log = logging.getLogger("tasu.demo")


def _source(path: str, kind: str) -> str:
    return f"[{{path: '{path}', kind: {kind}, task: ASR}}]"


def system_overrides(name: str, plan: DemoPlan, data: dict, ctc: dict, runs: Path) -> list[str]:
    """`tasu train demo` overrides of a trained system."""
    common = [f"train.max_steps={plan.steps}", f"train.lr={plan.lr}", f"train.warmup_steps={max(1, plan.steps // 10)}",
              f"data.batch_size={plan.batch_size}", *ctc["head_overrides"],
              f"train.seed={plan.seed}", "train.export_at_end=false", "train.log_every=10"]
    if name == "tasu_text":
        return common + [f"train.init_from={ctc['carry']}", f"data.train={_source(data['text_shards'], 'text')}",
                         "stages=[{name: align_text, mode: simulated, trainable: [projector]}]"]
    if name == "audio":
        return common + [f"train.init_from={ctc['carry']}", f"data.train={_source(data['audio_shards'], 'audio')}",
                         "stages=[{name: align_audio, mode: posterior, trainable: [projector]}]"]
    if name == "curriculum":
        return common + [f"train.init_from={runs / 'tasu_text'}",
                         f"data.train={_source(data['audio_half_shards'], 'audio')}",
                         "stages=[{name: align_audio, mode: posterior, trainable: [projector]}]"]
    raise ValueError(f"unknown trained system '{name}'")


def read_metrics(run_dir: Path) -> list[dict]:
    p = run_dir / "metrics.jsonl"
    return read_jsonl(p) if p.is_file() else []


def train_system(run_dir: Path, overrides: list[str], env: dict[str, str]) -> dict:
    """Run `tasu train demo` in a child process (its own DeepSpeed state; the recipe's progress bar and log go to
    this terminal and to run_dir/train.log). A finished run (its carry file exists) is not retrained."""
    carry = run_dir / "stages"
    done = list(carry.glob("*/carry.safetensors")) if carry.is_dir() else []
    if not done:
        run_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "tasu", "train", "demo", f"output_dir={run_dir}", *overrides]
        log.info("training %s: %s", run_dir.name, " ".join(cmd[3:]))
        t0 = time.perf_counter()
        with (run_dir / "train.log").open("w", encoding="utf-8") as logf:
            proc = subprocess.Popen(cmd, env={**os.environ, **env, "OMP_NUM_THREADS": "1"},
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
            for line in proc.stdout:
                logf.write(line)
                if "tasu.train" in line or "Error" in line or "error" in line:
                    sys.stderr.write(line)
            rc = proc.wait()
        if rc != 0:
            raise RuntimeError(f"training {run_dir.name} failed (exit {rc}); see {run_dir / 'train.log'}")
        (run_dir / "wall_seconds.json").write_text(json.dumps({"seconds": time.perf_counter() - t0}) + "\n")
    recs = read_metrics(run_dir)
    wall = run_dir / "wall_seconds.json"
    return {"run_dir": str(run_dir), "steps": len(recs),
            "train_seconds": json.loads(wall.read_text())["seconds"] if wall.is_file() else None,
            "first_loss": recs[0]["loss"] if recs else None, "last_loss": recs[-1]["loss"] if recs else None}


def _untrained_model(name: str, work, assets: dict, ctc: dict):
    """embed_init / lego: the demo config's model with the trained CTC head and an untrained projector."""
    from tasu.demo.steps import demo_config
    from tasu.model.build import build_speech_llm
    from tasu.train.checkpoint import apply_weights, load_carry

    over = [f"output_dir={work.root / 'runs' / name}", *ctc["head_overrides"]]
    if name == "lego":
        over += ["model.projector.type=lego", "model.projector.init=random",
                 "stages=[{name: lego, mode: lego, trainable: []}]"]
    cfg = demo_config(work, assets, over)
    model = build_speech_llm(cfg, seed=work.plan.seed)
    apply_weights(model, load_carry(Path(ctc["carry"])), ctc["carry"])
    return model, cfg


def evaluate_system(name: str, work, assets: dict, data: dict, ctc: dict, trained: dict | None, out_dir: Path) -> dict:
    """WER / CER of one system on the held-out voices and the real utterances; hypotheses to out_dir/<name>.jsonl."""
    import torch

    from tasu.eval.metrics import cer, wer
    from tasu.eval.run import decode_records, load_for_eval

    if trained is not None:
        model, cfg = load_for_eval(trained["run_dir"])
    else:
        model, cfg = _untrained_model(name, work, assets, ctc)
    mode = "lego" if name == "lego" else "posterior"
    out = {"train_seconds": trained["train_seconds"] if trained else 0.0, "steps": trained["steps"] if trained else 0}
    lines = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for part in ("heldout", "real"):
            res = decode_records(model, cfg, data[f"{part}_manifest"], mode, batch_size=8,
                                 max_new_tokens=work.plan.max_new_tokens, beam=1)
            refs, hyps = [r["reference"] for r in res], [r["hypothesis"] for r in res]
            out[f"wer_{part}"], out[f"cer_{part}"] = wer(refs, hyps), cer(refs, hyps)
            lines += [json.dumps({**r, "set": part}) + "\n" for r in res]
    out["eval_seconds"] = time.perf_counter() - t0
    (out_dir / f"{name}.jsonl").write_text("".join(lines), encoding="utf-8")
    log.info("%s: held-out WER %.3f CER %.3f; real WER %.3f CER %.3f", name, out["wer_heldout"], out["cer_heldout"],
             out["wer_real"], out["cer_real"])
    return out
