"""The steps of `tasu demo` (see run.py): each returns a JSON-able result that run.py caches in steps/<step>.json."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from tasu.demo import assets as A
from tasu.demo.plan import HELDOUT_VOICE_PREFERENCE
from tasu.demo.run import Workdir, split_sentences

log = logging.getLogger("tasu.demo")

#: the systems, in report order: (name, what it is)
SYSTEMS = {
    "ctc_greedy": "the CTC head alone, greedy decoding (no LLM)",
    "embed_init": "the projector at its embedding init, untrained: each CTC unit -> its SmolLM2 embedding",
    "lego": "LegoSLM: posteriors x SmolLM2 embedding matrix (nothing trained)",
    "tasu_text": "TASU: projector trained on text only (simulated CTC posteriors, no audio)",
    "audio": "projector trained on TTS audio (real CTC posteriors, PSD)",
    "curriculum": "TASU text-only stage, then the audio stage on half of the TTS audio",
}
TRAINED = ("tasu_text", "audio", "curriculum")


def _progress(total: int, desc: str):
    """A tqdm bar on stderr (tqdm is a dependency of tasu)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="", dynamic_ncols=True, leave=True)


def config_env(work: Workdir, assets: dict) -> dict[str, str]:
    """The environment variables the `demo` preset reads (see tasu/config/presets/demo.yaml)."""
    return {"TASU_DEMO_LLM": assets["llm"], "TASU_DEMO_WHISPER": assets["whisper"],
            "TASU_DEMO_UNITS": str(work.root / "ctc" / "units.json"),
            "TASU_DEMO_TEXT": str(work.root / "data" / "text_shards")}


def demo_config(work: Workdir, assets: dict, overrides: list[str]):
    from tasu.config.loader import load_config

    os.environ.update(config_env(work, assets))
    return load_config("demo", overrides)


# ---- 1. assets -----------------------------------------------------------------------------------------------------
def prepare_assets(work: Workdir) -> dict:
    from tasu.tts import available_voices

    whisper = A.whisper_tiny_en()
    A.botchan_text()
    test = A.real_test_manifest(work.root / "data" / "real_test.jsonl")
    voices = available_voices()
    heldout = [v for v in HELDOUT_VOICE_PREFERENCE if v in voices][:2]
    train = [v for v in voices if v not in heldout]
    if len(heldout) < 2 or len(train) < 3:
        raise A.MissingAsset(f"TTS voices found: {voices or 'none'}; the demo needs two held-out voices (from "
                             f"{list(HELDOUT_VOICE_PREFERENCE)}) and at least three training voices: "
                             f"{A.INSTALL_HINT} installs flite, festival (+ voices) and espeak-ng")
    log.info("SmolLM2-135M-Instruct: dequantising the GGUF once (~30 s) if not cached")
    llm = A.smollm2_dir()
    return {"whisper": str(whisper), "llm": str(llm), "real_test": str(test), "train_voices": train,
            "heldout_voices": heldout}


# ---- 2. data -------------------------------------------------------------------------------------------------------
def prepare_data(work: Workdir, assets: dict) -> dict:
    from tasu.data.shard import ShardOptions, write_shards
    from tasu.tts import build_corpus, perturb_corpus, tts_sentences

    plan = work.plan
    d = work.root / "data"
    sets = split_sentences(tts_sentences(A.botchan_text()), plan, plan.seed)
    (d / "text_only.txt").write_text("".join(s + "\n" for s in sets["text"]), encoding="utf-8")
    text_shards = write_shards([str(d / "text_only.txt")], str(d / "text_shards"), ShardOptions(num_shards=2))

    train_voices, heldout_voices = assets["train_voices"], assets["heldout_voices"]
    log.info("TTS: %d training voices x %d sentences, dev %d, held-out voices %s x %d sentences",
             len(train_voices), plan.per_voice, plan.dev_sentences, heldout_voices, plan.heldout_sentences)
    train = build_corpus(sets["train"], train_voices, d / "tts_train", per_voice=plan.per_voice,
                         tempo_range=(0.9, 1.1), seed=plan.seed)
    dev = build_corpus(sets["dev"], train_voices, d / "tts_dev", seed=plan.seed + 1)
    heldout = build_corpus(sets["heldout"], heldout_voices, d / "tts_heldout", seed=plan.seed + 2)
    train_manifests = [str(train)]
    if plan.perturb:
        train_manifests.append(str(perturb_corpus(train, d / "tts_train_aug", seed=plan.seed)))
    audio = write_shards(train_manifests, str(d / "audio_shards"), ShardOptions(num_shards=4))
    # the curriculum's audio stage sees half of the audio: every other clip of the (clean) training set
    recs = [ln for ln in train.read_text(encoding="utf-8").splitlines() if ln.strip()]
    half = d / "tts_train" / "half.jsonl"
    half.write_text("".join(r + "\n" for r in recs[::2]), encoding="utf-8")
    audio_half = write_shards([str(half)], str(d / "audio_half_shards"), ShardOptions(num_shards=2))
    return {"sentences": {k: len(v) for k, v in sets.items()}, "train_manifests": train_manifests,
            "dev_manifest": str(dev), "heldout_manifest": str(heldout), "real_manifest": assets["real_test"],
            "text_shards": str(d / "text_shards"), "audio_shards": str(d / "audio_shards"),
            "audio_half_shards": str(d / "audio_half_shards"),
            "clips": {"train": audio.samples, "train_half": audio_half.samples, "text_only": text_shards.samples,
                      "dev": len(A.read_jsonl(dev)), "heldout": len(A.read_jsonl(heldout))},
            "train_audio_hours": audio.audio_seconds / 3600,
            "skipped_records": {"audio": audio.bad, "audio_half": audio_half.bad, "text_only": text_shards.bad}}


# ---- 3. CTC head over SmolLM2 units --------------------------------------------------------------------------------
def train_ctc(work: Workdir, assets: dict, data: dict) -> dict:
    from transformers import AutoTokenizer

    from tasu.demo.ctc_head import cache_states, decode_states, merge_states, train_head
    from tasu.eval.metrics import cer, wer
    from tasu.model.build import build_ctc_model
    from tasu.text.llm_units import LLMUnitTokenizer
    from tasu.train.checkpoint import save_carry

    plan = work.plan
    c = work.root / "ctc"
    c.mkdir(exist_ok=True)
    texts = sorted({r["GT"] for m in data["train_manifests"] for r in A.read_jsonl(m)})
    hf = AutoTokenizer.from_pretrained(assets["llm"])
    units = LLMUnitTokenizer.select(hf, texts, min_count=plan.unit_min_count)
    units.save(c / "units.json")
    n_tok = sum(len(units.encode(t)) for t in texts)
    letters = sum(1 for t in texts for i in units.encode(t) if len(units.units[i - 1].lstrip("Ġ")) == 1)
    log.info("CTC units: %d SmolLM2 tokens (+ blank); %.0f%% of training tokens are single letters",
             units.vocab_size - 1, 100 * letters / max(n_tok, 1))

    head_overrides = [f"model.encoder.head={plan.head}", f"model.encoder.head_hidden={plan.head_hidden}"]
    cfg = demo_config(work, assets, [f"output_dir={c / 'run'}", *head_overrides])
    model = build_ctc_model(cfg, seed=plan.seed).eval()
    tok = model.ctc_tokenizer
    enc = model.encoder

    def states(name: str, manifests: list[str]) -> dict:
        per = [(Path(m).parent, A.read_jsonl(m)) for m in manifests]      # one cache file per manifest
        bar = _progress(sum(len(recs) for _, recs in per), f"encoder states ({name})")
        parts = [cache_states(enc, recs, root, c / "states" / f"{name}-{root.name}.pt", progress=bar.update)
                 for root, recs in per]
        bar.close()
        return merge_states(parts)

    train = states("train", data["train_manifests"])
    dev = states("dev", [data["dev_manifest"]])
    heldout = states("heldout", [data["heldout_manifest"]])
    real = states("real", [data["real_manifest"]])
    steps_total = plan.head_training.epochs * -(-len(train["keys"]) // plan.head_training.batch_size)
    bar = _progress(steps_total, "CTC head")
    fit = train_head(enc.ctc_head, tok, train, dev, plan.head_training,
                     on_step=lambda s, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")))
    bar.close()
    carry = c / "head.safetensors"
    save_carry(carry, {f"encoder.ctc_head.{k}": v.detach() for k, v in enc.ctc_head.named_parameters()})
    out = {"head_overrides": head_overrides,
           "units": units.vocab_size - 1, "letter_unit_share": letters / max(n_tok, 1), "carry": str(carry),
           "train_clips": len(train["keys"]), "train_seconds": fit["seconds"], "steps": fit["steps"],
           "best_epoch": fit["best_epoch"], "dev_cer": fit["best_dev_cer"], "history": fit["history"],
           "hypotheses": {}}
    for name, part in (("heldout", heldout), ("real", real)):
        hyps = decode_states(enc.ctc_head, part["states"], tok)
        out[f"wer_{name}"], out[f"cer_{name}"] = wer(part["texts"], hyps), cer(part["texts"], hyps)
        out["hypotheses"][name] = [{"key": k, "reference": r, "hypothesis": h}
                                   for k, r, h in zip(part["keys"], part["texts"], hyps)]
    log.info("CTC head: held-out voices WER %.3f CER %.3f; real speech WER %.3f CER %.3f",
             out["wer_heldout"], out["cer_heldout"], out["wer_real"], out["cer_real"])
    return out


# ---- 4. the TASU systems -------------------------------------------------------------------------------------------
def train_systems(work: Workdir, assets: dict, data: dict, ctc: dict) -> dict:
    from tasu.demo.systems import system_overrides, train_system

    out = {}
    for name in TRAINED:
        run_dir = work.root / "runs" / name
        overrides = system_overrides(name, work.plan, data, ctc, work.root / "runs")
        out[name] = train_system(run_dir, overrides, config_env(work, assets))
    return out


# ---- 5. evaluation -------------------------------------------------------------------------------------------------
def evaluate(work: Workdir, assets: dict, data: dict, ctc: dict, systems: dict) -> dict:
    from tasu.demo.systems import evaluate_system

    scores = {"ctc_greedy": {k: ctc[k] for k in ("wer_heldout", "cer_heldout", "wer_real", "cer_real")}}
    scores["ctc_greedy"].update(train_seconds=ctc["train_seconds"], steps=ctc["steps"])
    ev = work.root / "eval"
    ev.mkdir(exist_ok=True)
    for name in SYSTEMS:
        if name == "ctc_greedy":
            continue
        scores[name] = evaluate_system(name, work, assets, data, ctc, systems.get(name), ev)
    return scores


# ---- 6. report -----------------------------------------------------------------------------------------------------
def write_report(work: Workdir, data: dict, ctc: dict, systems: dict, scores: dict, copy_to: str | None) -> Path:
    from tasu.demo.report import build_report

    paths = build_report(work, data, ctc, systems, scores)
    if copy_to:
        dst = Path(copy_to)
        dst.mkdir(parents=True, exist_ok=True)
        for p in paths:
            shutil.copy2(p, dst / p.name)
    return paths[1]
