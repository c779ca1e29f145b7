"""Train a sentencepiece vocabulary for a CTC head: `tasu tokenizer train TEXT... --vocab N --out PREFIX`.

The model has no bos/eos pieces (a CTC head never emits them); piece 0 is <unk>. `SentencePieceCTCTokenizer`
shifts every piece id by one so that CTC id 0 is the blank: the CTC head predicts `vocab_size + 1` classes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

MODEL_TYPES = ("bpe", "unigram", "char", "word")


def train_sentencepiece(
    texts: list[str],
    out_prefix: str,
    vocab_size: int,
    model_type: str = "bpe",
    character_coverage: float = 1.0,
    lowercase: bool = False,
    max_sentences: int = 0,
    num_threads: int | None = None,
    quiet: bool = True,
) -> str:
    """Train on the lines of `texts` (plain-text files) -> path of `<out_prefix>.model` (+ `.vocab` beside it).

    `vocab_size` counts sentencepiece pieces (<unk> included, no blank); `character_coverage` < 1 maps rare
    characters to <unk> (0.9995 suits large CJK inventories); `lowercase` folds case in the model's own
    normaliser, so encoding applies it too; `max_sentences` > 0 trains on a random sample of that many lines.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown sentencepiece model type '{model_type}' (one of {MODEL_TYPES})")
    if vocab_size < 2:
        raise ValueError(f"vocab size must be >= 2, got {vocab_size}")
    if not 0.0 < character_coverage <= 1.0:
        raise ValueError(f"character coverage must lie in (0, 1], got {character_coverage}")
    if not texts:
        raise ValueError("no text files given")
    paths = [Path(t) for t in texts]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"text file not found: {p}")
        if not _has_text(p):
            raise ValueError(f"text file has no text (empty or whitespace only): {p}")
    out = Path(out_prefix)
    out.parent.mkdir(parents=True, exist_ok=True)

    import sentencepiece as spm

    options = dict(
        sentence_iterator=_lines(paths), model_prefix=str(out), vocab_size=vocab_size, model_type=model_type,
        character_coverage=character_coverage, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
        normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
        num_threads=num_threads or min(4, os.cpu_count() or 1), minloglevel=2 if quiet else 0,
    )
    if max_sentences > 0:
        options.update(input_sentence_size=max_sentences, shuffle_input_sentence=True)
    try:
        spm.SentencePieceTrainer.train(**options)
    except RuntimeError as e:
        # sentencepiece prefixes its message with the failed C++ check ("INTERNAL: file(line) [cond] msg")
        msg = str(e).split("] ", 1)[-1].strip()
        hint = (" (lower --vocab or add text)" if "too high" in msg
                else " (raise --vocab or lower --coverage)" if "required_chars" in msg else "")
        raise ValueError(f"sentencepiece training on {', '.join(map(str, paths))} failed: {msg}{hint}") from e
    return str(out) + ".model"


def _has_text(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as f:
        return any(line.strip() for line in f)


def _lines(paths: list[Path]) -> Iterator[str]:
    """Non-empty lines of every file, in order (sentencepiece's `input=` would split paths on commas)."""
    for p in paths:
        with open(p, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if line:
                    yield line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tasu tokenizer", description="CTC tokenizers")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a sentencepiece vocabulary on text files (one sentence per line)")
    t.add_argument("texts", nargs="+", metavar="TEXT", help="plain-text files")
    t.add_argument("--vocab", type=int, required=True, help="number of pieces (the CTC head adds one blank)")
    t.add_argument("--type", choices=MODEL_TYPES, default="bpe", help="sentencepiece model type (default bpe)")
    t.add_argument("--out", required=True, metavar="PREFIX", help="writes PREFIX.model and PREFIX.vocab")
    t.add_argument("--coverage", type=float, default=1.0, help="character coverage (default 1.0; 0.9995 for CJK)")
    t.add_argument("--lowercase", action="store_true", help="fold case in the model's normaliser")
    t.add_argument("--max-sentences", type=int, default=0, help="train on a random sample of N lines (0: all)")
    t.add_argument("--threads", type=int, default=None, help="trainer threads (default min(4, cores))")
    t.add_argument("--verbose", action="store_true", help="show sentencepiece's training log")
    return p


def tokenizer_main(argv: list[str]) -> int:
    """`tasu tokenizer ...` (argv without the leading `tokenizer`); returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        model = train_sentencepiece(
            args.texts, args.out, args.vocab, model_type=args.type, character_coverage=args.coverage,
            lowercase=args.lowercase, max_sentences=args.max_sentences, num_threads=args.threads,
            quiet=not args.verbose,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"tasu tokenizer: {e}", file=sys.stderr)
        return 2
    print(f"wrote {model} ({args.vocab} pieces; CTC vocabulary {args.vocab + 1} with the blank)")
    print(f"use it with: model.ctc_tokenizer.type=sentencepiece model.ctc_tokenizer.path={model}")
    return 0
