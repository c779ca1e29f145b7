"""Training speech from the English TTS voices Debian ships (flite, festival, espeak-ng), converted with sox.

No pretrained English CTC model ships in the package registries, so tasu trains CTC heads on TTS speech and
tests on real speech (NOTES.md §5; install the voices with `launch/install_assets.sh`). Voice variety matters
more than the amount of text: every clip is rendered at 16 kHz mono 16-bit, optionally with a seeded tempo
perturbation per clip.

    voices = available_voices()                       # e.g. ['flite-kal16', 'flite-slt', ..., 'espeak-en-us']
    manifest = build_corpus(sentences, voices, out_dir)   # ps-slm JSON lines: key, task, target, path, GT
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("tasu.tts")

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Voice:
    """engine: flite | festival | espeak-ng; ident: the engine's own voice name."""

    engine: str
    ident: str

    @property
    def name(self) -> str:
        return f"{'espeak' if self.engine == 'espeak-ng' else self.engine}-{self.ident}"


#: English voices of Debian 12 main (packages: flite, festival + festvox-*, espeak-ng), most intelligible first
#: within each engine. Whisper WER of flite 9-17 %, festival slt-hts 6 %, espeak-ng 34-42 % (NOTES.md §5).
VOICES: tuple[Voice, ...] = (
    Voice("flite", "kal16"), Voice("flite", "slt"), Voice("flite", "awb"), Voice("flite", "rms"),
    Voice("flite", "kal"),
    Voice("festival", "cmu_us_slt_arctic_hts"), Voice("festival", "kal_diphone"), Voice("festival", "ked_diphone"),
    Voice("espeak-ng", "en-us"), Voice("espeak-ng", "en-gb+f3"), Voice("espeak-ng", "en-gb-scotland+m4"),
    Voice("espeak-ng", "en-029+f2"), Voice("espeak-ng", "en-gb-x-rp+m7"),
)
_FESTIVAL_VOICE_DIRS = ("/usr/share/festival/voices",)


class TTSError(RuntimeError):
    pass


def voice_by_name(name: str) -> Voice:
    for v in VOICES:
        if v.name == name:
            return v
    raise TTSError(f"unknown voice '{name}'; known: {[v.name for v in VOICES]}")


def available_voices() -> list[str]:
    """Names of the voices of `VOICES` whose engine (and, for festival, voice package) is installed, and sox."""
    if shutil.which("sox") is None:
        return []
    out = []
    flite_voices: set[str] = set()
    if shutil.which("flite"):
        r = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=False)
        flite_voices = set(r.stdout.split(":", 1)[-1].split())
    for v in VOICES:
        if v.engine == "flite" and v.ident in flite_voices:
            out.append(v.name)
        elif v.engine == "festival" and shutil.which("text2wave"):
            if any(p.is_dir() for d in _FESTIVAL_VOICE_DIRS for p in Path(d).glob(f"*/{v.ident}")):
                out.append(v.name)
        elif v.engine == "espeak-ng" and shutil.which("espeak-ng"):
            out.append(v.name)
    return out


def _run(cmd: list[str], what: str, stdin: str | None = None) -> None:
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise TTSError(f"{what} failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-800:]}")


def synthesize(text: str, voice: str, out_path: str | Path, tempo: float = 1.0) -> float:
    """Render `text` with `voice` to `out_path` (16 kHz mono 16-bit wav); returns its duration in seconds."""
    v = voice_by_name(voice)
    out_path = Path(out_path)
    if not text.strip():
        raise TTSError("synthesize: empty text")
    with tempfile.TemporaryDirectory(prefix="tasu-tts-") as tmp:
        raw = Path(tmp) / "raw.wav"
        if v.engine == "flite":
            _run(["flite", "-voice", v.ident, "-t", text, "-o", str(raw)], f"flite {v.ident}")
        elif v.engine == "festival":
            txt = Path(tmp) / "text.txt"
            txt.write_text(text + "\n", encoding="utf-8")
            _run(["text2wave", "-eval", f"(voice_{v.ident})", str(txt), "-o", str(raw)], f"festival {v.ident}")
        else:
            _run(["espeak-ng", "-v", v.ident, "-w", str(raw), text], f"espeak-ng {v.ident}")
        effects = ["tempo", f"{tempo:.3f}"] if abs(tempo - 1.0) > 1e-3 else []
        _run(["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(out_path), *effects], "sox")
    import soundfile as sf

    return float(sf.info(str(out_path)).duration)


_SENT_END = re.compile(r"(?<=[.!?;:])\s+")
# spoken forms of abbreviations whose period would otherwise end a sentence (and that TTS expands anyway)
_ABBREVIATIONS = {"mr.": "mister", "mrs.": "missus", "dr.": "doctor", "st.": "saint", "messrs.": "messieurs"}
_ABBREV_RE = re.compile(r"\b(" + "|".join(re.escape(a) for a in _ABBREVIATIONS) + r")", re.IGNORECASE)


def normalize_for_ctc(text: str) -> str:
    """Lower-case; hyphens and dashes become spaces; keep [a-z' ]; collapse spaces (the char CTC inventory)."""
    text = text.lower().replace("\u2019", "'").replace("-", " ").replace("_", " ")
    text = re.sub(r"[^a-z' ]+", " ", text)
    text = re.sub(r"(^|\s)'+|'+(\s|$)", " ", text)  # quotes, not apostrophes inside words
    return " ".join(text.split())


def tts_sentences(text: str, min_words: int = 4, max_words: int = 20) -> list[str]:
    """Sentences of a prose text (paragraphs joined, split at . ! ? ; :), normalised with `normalize_for_ctc`;
    sentences holding digits (read out in ways the transcript would not match) are dropped; unique, in order."""
    flat = _ABBREV_RE.sub(lambda m: _ABBREVIATIONS[m.group(1).lower()], " ".join(text.split()))
    out, seen = [], set()
    for raw in _SENT_END.split(flat):
        if re.search(r"\d", raw):
            continue
        s = normalize_for_ctc(raw)
        n = len(s.split())
        if min_words <= n <= max_words and s not in seen:
            seen.add(s)
            out.append(s)
    return out


def build_corpus(sentences: list[str], voices: list[str], out_dir: str | Path, task: str = "ASR",
                 per_voice: int | None = None, tempo_range: tuple[float, float] = (1.0, 1.0), seed: int = 0,
                 resume: bool = True) -> Path:
    """Render sentences with every voice into `out_dir` and write `out_dir/manifest.jsonl` (ps-slm records:
    key, task, target, path, GT, plus voice, tempo, sample_rate, num_samples).

    per_voice: each voice reads its own seeded sample of that many sentences (more text per clip budget than
    one shared set); None: every voice reads every sentence. Tempo per clip is drawn uniformly from
    `tempo_range` (seeded by seed, voice, sentence). With `resume`, clips already on disk are kept."""
    import soundfile as sf

    out_dir = Path(out_dir)
    (out_dir / "wav").mkdir(parents=True, exist_ok=True)
    for name in voices:
        voice_by_name(name)
    manifest = out_dir / "manifest.jsonl"
    tmp = manifest.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for vi, voice in enumerate(voices):
            chosen = range(len(sentences))
            if per_voice is not None and per_voice < len(sentences):
                chosen = sorted(random.Random(f"{seed}/{voice}").sample(range(len(sentences)), per_voice))
            for si in chosen:
                text = sentences[si]
                key = f"{voice}-{si:05d}"
                rel = f"wav/{key}.wav"
                tempo = random.Random(f"{seed}/{voice}/{si}").uniform(*tempo_range)
                wav = out_dir / rel
                if not (resume and wav.is_file() and wav.stat().st_size > 44):
                    synthesize(text, voice, wav, tempo)
                info = sf.info(str(wav))
                rec = {"key": key, "task": task, "target": text, "path": rel, "GT": text, "voice": voice,
                       "tempo": round(tempo, 4), "sample_rate": info.samplerate, "num_samples": info.frames}
                f.write(json.dumps(rec) + "\n")
            log.info("tts: voice %d/%d (%s) done: %d clips", vi + 1, len(voices), voice, len(chosen))
    tmp.replace(manifest)
    return manifest


def perturb_corpus(manifest: str | Path, out_dir: str | Path, pitch_cents: tuple[float, float] = (-400.0, 400.0),
                   reverb_prob: float = 0.5, seed: int = 0, resume: bool = True) -> Path:
    """A perturbed copy of every clip of a `build_corpus` manifest (new "speakers" from the same voices, no new
    synthesis): sox `pitch` by a seeded uniform shift in `pitch_cents` (duration kept), then with probability
    `reverb_prob` a `reverb` of seeded reverberance in [10, 50] %. Writes `out_dir/manifest.jsonl` (keys get a
    `-p` suffix; records gain `pitch_cents` and `reverb`)."""
    import soundfile as sf

    manifest, out_dir = Path(manifest), Path(out_dir)
    (out_dir / "wav").mkdir(parents=True, exist_ok=True)
    recs = [json.loads(ln) for ln in manifest.read_text(encoding="utf-8").splitlines() if ln.strip()]
    out = out_dir / "manifest.jsonl"
    tmp = out.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in recs:
            rng = random.Random(f"{seed}/{r['key']}")
            cents = rng.uniform(*pitch_cents)
            reverb = rng.uniform(10.0, 50.0) if rng.random() < reverb_prob else 0.0
            key = f"{r['key']}-p"
            rel = f"wav/{key}.wav"
            wav = out_dir / rel
            if not (resume and wav.is_file() and wav.stat().st_size > 44):
                effects = ["pitch", f"{cents:.0f}"] + (["reverb", f"{reverb:.0f}"] if reverb else [])
                _run(["sox", str(manifest.parent / r["path"]), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16",
                      str(wav), *effects], "sox")
            info = sf.info(str(wav))
            f.write(json.dumps({**r, "key": key, "path": rel, "pitch_cents": round(cents), "reverb": round(reverb),
                                "sample_rate": info.samplerate, "num_samples": info.frames}) + "\n")
    tmp.replace(out)
    return out
