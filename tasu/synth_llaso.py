"""A tiny generated LLaSO-style corpus in tone speech (`tasu.synth`), covering the three modality configurations.

    python -m tasu.synth_llaso OUT_DIR [--tone-dir DIR]     (the shipped set: tasu/assets/llaso_tiny)

Files: align.jsonl (the ASR training records: LLaSO-Align's role), train.jsonl (every task: LLaSO-Instruct's
role), eval.jsonl, and the new clips.

Records are LLaSO JSON lines ({"id", "task", "voice": [...], "conversations": [human, gpt], "GT"}); the human turn
is the instruction of its record. Tasks (tone speech: every character is a tone, `tasu.synth`):
    ASR            (t,a)  "Transcribe the audio. <audio>" (3 wordings) -> the transcript (the tone_speech clips)
    speed          (t,a)  "Is the speech fast or slow? <audio>" -> fast | slow (a phrase at 35 or 100 ms per char)
    word_pick      (a,t)  "<audio> <text>": the audio says "first word" or "last word" -> that word of the text
    spoken_qa      (a)    "<audio>": the audio says "after one" ... -> "two" ...
    speed_compare  (t,a)  two clips, "Which clip is faster, the first or the second? <audio> <audio>" -> first |
                          second (several <audio> in one turn, in order)
Score them with `tasu eval report --task-kind word_pick=exact --task-kind spoken_qa=exact --task-kind
speed_compare=label` (ASR and speed are LLaSO task names). The eval split holds out ASR clips; the other tasks'
eval records reuse training clips in new combinations (a tiny set for pipeline tests, not a benchmark).
ASR voices are the shipped tone_speech clips, referenced by relative path; only the new clips are written here.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

from tasu.synth import SAMPLE_RATE, render

ASR_WORDINGS = ("Transcribe the audio.", "Write down what is said.", "What does the speaker say?")
SPEED_PHRASES = ("a dog", "the sea", "we read", "my tree")
SPEED_MS = {"fast": 35, "slow": 100}
PICK_INSTRUCTIONS = ("first word", "last word")
QA = (("after one", "two"), ("after two", "three"), ("after three", "four"), ("after four", "five"),
      ("after five", "six"), ("after six", "seven"))
ASR_TRAIN, ASR_EVAL = range(0, 30), range(30, 40)


def _clip(out_dir: Path, name: str, text: str, char_ms: int = 60) -> str:
    import soundfile as sf

    sf.write(out_dir / name, render(text, char_ms=char_ms), SAMPLE_RATE, subtype="PCM_16")
    return name


def _rec(rid: str, task: str, voices: list[str], human: str, answer: str, gt: str = "") -> dict:
    return {"id": rid, "task": task, "voice": voices, "GT": gt,
            "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]}


def build_records(out_dir: Path, tone_dir: Path) -> tuple[list[dict], list[dict]]:
    """Write the new clips into `out_dir`; returns (train, eval) records (voice paths relative to out_dir)."""
    rng = random.Random(0)
    tone = [json.loads(x) for x in (tone_dir / "manifest.jsonl").read_text(encoding="utf-8").splitlines() if x]
    rel = os.path.relpath(tone_dir, out_dir)
    sentences = [t["target"] for t in tone]
    speed = {(p, s): _clip(out_dir, f"speed-{s}-{i}.flac", p, ms) for i, p in enumerate(SPEED_PHRASES)
             for s, ms in SPEED_MS.items()}
    pick = {w: _clip(out_dir, f"pick-{i}.flac", w) for i, w in enumerate(PICK_INSTRUCTIONS)}
    qa = [(_clip(out_dir, f"qa-{i}.flac", q), a) for i, (q, a) in enumerate(QA)]

    def asr(i: int) -> dict:
        t = tone[i]
        return _rec(f"asr-{i:02d}", "ASR", [f"{rel}/{t['path']}"], f"{rng.choice(ASR_WORDINGS)} <audio>",
                    t["target"], t["GT"])

    def pick_rec(rid: str, which: str, sentence: str) -> dict:
        words = sentence.split()
        return _rec(rid, "word_pick", [pick[which]], f"<audio> {sentence}", words[0 if which == "first word" else -1])

    def compare(rid: str, phrase_a: str, phrase_b: str, first_fast: bool) -> dict:
        a, b = (speed[phrase_a, "fast"], speed[phrase_b, "slow"]) if first_fast else \
            (speed[phrase_a, "slow"], speed[phrase_b, "fast"])
        return _rec(rid, "speed_compare", [a, b], "Which clip is faster, the first or the second? <audio> <audio>",
                    "first" if first_fast else "second")

    train = [asr(i) for i in ASR_TRAIN]
    train += [_rec(f"speed-{s}-{i}", "speed", [speed[p, s]], "Is the speech fast or slow? <audio>", s)
              for i, p in enumerate(SPEED_PHRASES) for s in SPEED_MS]
    train += [pick_rec(f"pick-{n:02d}", PICK_INSTRUCTIONS[n % 2], sentences[n]) for n in range(20)]
    train += [_rec(f"qa-{i}", "spoken_qa", [clip], "<audio>", a) for i, (clip, a) in enumerate(qa)]
    n = len(SPEED_PHRASES)
    train += [compare(f"cmp-{i}", SPEED_PHRASES[i], SPEED_PHRASES[(i + 1) % n], i % 2 == 0) for i in range(n)]
    train += [compare(f"cmp-{n + i}", SPEED_PHRASES[i], SPEED_PHRASES[(i + 2) % n], i % 2 == 1) for i in range(n)]
    rng.shuffle(train)

    ev = [asr(i) for i in ASR_EVAL]
    ev += [_rec(f"ev-speed-{s}-{i}", "speed", [speed[p, s]], "Is the speed of the speech fast or slow? <audio>", s)
           for i, p in enumerate(SPEED_PHRASES[:2]) for s in SPEED_MS]
    ev += [pick_rec(f"ev-pick-{n:02d}", PICK_INSTRUCTIONS[n % 2], sentences[n]) for n in range(30, 34)]
    ev += [_rec(f"ev-qa-{i}", "spoken_qa", [qa[i][0]], "<audio>", qa[i][1]) for i in (0, 3)]
    ev += [compare(f"ev-cmp-{i}", SPEED_PHRASES[i], SPEED_PHRASES[(i + 3) % n], i % 2 == 0) for i in range(2)]
    return train, ev


def write_llaso_tiny(out_dir: str | Path, tone_dir: str | Path) -> dict[str, Path]:
    """Write clips + align.jsonl (the ASR records: stage 1) + train.jsonl (every task: stage 2) + eval.jsonl into
    `out_dir`; returns {"align" | "train" | "eval": path}."""
    out_dir, tone_dir = Path(out_dir), Path(tone_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, ev = build_records(out_dir, tone_dir)
    align = [r for r in train if r["task"] == "ASR"]
    paths = {}
    for name, recs in (("align", align), ("train", train), ("eval", ev)):
        paths[name] = out_dir / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tasu.synth_llaso", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--tone-dir", default=str(Path(__file__).parent / "assets" / "tone_speech"),
                   help="the tone_speech corpus whose clips the ASR records use (default: the shipped one)")
    args = p.parse_args(argv)
    paths = write_llaso_tiny(args.out_dir, args.tone_dir)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
