"""`tasu tokenizer train`: sentencepiece BPE / unigram CTC vocabularies trained in well under a second."""

from __future__ import annotations

import random
import time

import pytest

from tasu.text.ctc_tokenizer import SentencePieceCTCTokenizer
from tasu.text.spm_train import tokenizer_main, train_sentencepiece

SENTENCES = ["the model reads the speech and writes the text", "a quick brown fox jumps over the lazy dog",
             "posteriors from the encoder are simulated from text"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """~1,500 lines of pseudo-words from syllables (enough distinct pieces for a 100-piece unigram model)."""
    rng = random.Random(0)
    syl = ["ka", "to", "ri", "sen", "mo", "la", "pe", "qu", "zi", "an", "bel", "dor", "ish", "ung", "ew", "oy",
           "th", "ch", "str", "ight"]
    words = ["".join(rng.choice(syl) for _ in range(rng.randint(1, 3))) for _ in range(300)]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) for _ in range(1500)]
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text("\n".join(lines + SENTENCES * 20) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_train_and_roundtrip(tmp_path, corpus, model_type):
    start = time.perf_counter()
    model = train_sentencepiece([str(corpus)], str(tmp_path / "sub" / model_type), 100, model_type=model_type)
    assert time.perf_counter() - start < 2.0
    assert model == str(tmp_path / "sub" / f"{model_type}.model")
    tok = SentencePieceCTCTokenizer(model)
    assert tok.vocab_size == 101  # 100 pieces + the CTC blank
    assert tok.sp.id_to_piece(0) == "<unk>" and tok.sp.bos_id() == -1 and tok.sp.eos_id() == -1
    for text in SENTENCES + ["kato sendor ishung"]:
        ids = tok.encode(text)
        assert ids and min(ids) >= 1 and max(ids) < tok.vocab_size  # never the blank
        assert tok.decode(ids) == text
        # a CTC alignment of the ids (each unit held two frames, then a blank) collapses back to the text
        frames = [f for i in ids for f in (i, i, 0)]
        assert tok.ctc_collapse(frames) == ids and tok.decode(tok.ctc_collapse(frames)) == text
    # subwords: on text like the corpus the vocabulary needs well under one unit per character
    line = corpus.read_text(encoding="utf-8").splitlines()[0]
    assert len(tok.encode(line)) < len(line) / 2


def test_lowercase_and_many_files(tmp_path, corpus):
    upper = tmp_path / "upper.txt"
    upper.write_text("\n".join(s.upper() for s in SENTENCES) + "\n", encoding="utf-8")
    model = train_sentencepiece([str(corpus), str(upper)], str(tmp_path / "lc"), 80, lowercase=True)
    tok = SentencePieceCTCTokenizer(model)
    assert tok.decode(tok.encode("The Model READS")) == "the model reads"


def test_errors_name_the_culprit(tmp_path, corpus):
    with pytest.raises(FileNotFoundError, match="text file not found: .*missing.txt"):
        train_sentencepiece([str(corpus), str(tmp_path / "missing.txt")], str(tmp_path / "m"), 50)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="no text .*empty.txt"):
        train_sentencepiece([str(empty)], str(tmp_path / "m"), 50)
    with pytest.raises(ValueError, match=r"Vocabulary size too high .*lower --vocab"):
        train_sentencepiece([str(corpus)], str(tmp_path / "m"), 100_000)
    with pytest.raises(ValueError, match="unknown sentencepiece model type 'wordpiece'"):
        train_sentencepiece([str(corpus)], str(tmp_path / "m"), 50, model_type="wordpiece")
    with pytest.raises(ValueError, match="no text files"):
        train_sentencepiece([], str(tmp_path / "m"), 50)


def test_cli(tmp_path, corpus, capsys):
    out = tmp_path / "cli" / "spm"
    assert tokenizer_main(["train", str(corpus), "--vocab", "64", "--type", "unigram", "--out", str(out)]) == 0
    assert f"wrote {out}.model" in capsys.readouterr().out
    assert SentencePieceCTCTokenizer(f"{out}.model").vocab_size == 65
    assert tokenizer_main(["train", str(tmp_path / "nope.txt"), "--vocab", "64", "--out", str(out)]) == 2
    assert "tasu tokenizer: text file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: --vocab is required
        tokenizer_main(["train", str(corpus), "--out", str(out)])
