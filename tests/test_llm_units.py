"""LLM-token CTC units (tasu.text.llm_units) on small BPE tokenizers built here: byte-level (GPT-2 / SmolLM2 style)
and Metaspace (sentencepiece style)."""

import json

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tasu.config.fields import ConfigError
from tasu.text.ctc_tokenizer import CTCTokenizerConfig, build_ctc_tokenizer
from tasu.text.llm_units import LLMUnitTokenizer, word_marker

CORPUS = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the mat was red",
          "he sat there and the cat ran", "she ran to the red mat"] * 20


def _tokenizer(kind: str) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=None if kind == "bytelevel" else "<unk>"))
    if kind == "bytelevel":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        alphabet = []
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<|im_end|>"], initial_alphabet=alphabet)
    letters = [" ".join("abcdefghijklmnopqrstuvwxyz'")]   # every letter, alone and word-initial
    tok.train_from_iterator(CORPUS + letters, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>")


@pytest.fixture(params=["bytelevel", "metaspace"])
def hf(request):
    return _tokenizer(request.param)


def test_word_marker():
    assert word_marker(_tokenizer("bytelevel")) == "Ġ"
    assert word_marker(_tokenizer("metaspace")) == "▁"


def test_select_keeps_frequent_tokens_and_letters(hf):
    tok = LLMUnitTokenizer.select(hf, CORPUS, min_count=10)
    marker = word_marker(hf)
    assert marker + "the" in tok.units and marker + "cat" in tok.units
    for word in ("q", "x", "zq", "qqx"):   # every letter stays writable, word-initial or not
        assert tok.decode(tok.encode(word)) == word
    assert tok.vocab_size == len(tok.units) + 1
    assert len(set(tok.hf_ids)) == len(tok.hf_ids)


def test_known_words_keep_their_own_llm_tokens(hf):
    tok = LLMUnitTokenizer.select(hf, CORPUS, min_count=10)
    text = "the cat sat on the mat"
    ids = tok.encode(text)
    assert tok.to_llm_ids(ids) == hf.encode(" " + text, add_special_tokens=False)
    assert tok.decode(ids) == text


def test_unknown_words_use_fewest_units_and_round_trip(hf):
    tok = LLMUnitTokenizer.select(hf, CORPUS, min_count=10)
    for text in ("zebra quiz", "the catmat", "xylophone's"):
        ids = tok.encode(text)
        assert all(0 < i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    # 'catmat' is cheaper as the units 'cat' + 'mat' than letter by letter
    marker = word_marker(hf)
    pieces = [tok.units[i - 1] for i in tok.encode("catmat")]
    assert len(pieces) < len("catmat")
    assert "".join(pieces) == marker + "catmat"


def test_min_count_controls_inventory_size(hf):
    small = LLMUnitTokenizer.select(hf, CORPUS, min_count=100)
    large = LLMUnitTokenizer.select(hf, CORPUS, min_count=2)
    assert small.vocab_size < large.vocab_size
    capped = LLMUnitTokenizer.select(hf, CORPUS, min_count=1, max_units=60)
    assert capped.vocab_size - 1 <= 60


def test_save_load_and_config_type(hf, tmp_path):
    tok = LLMUnitTokenizer.select(hf, CORPUS, min_count=10)
    path = tok.save(tmp_path / "units.json")
    again = build_ctc_tokenizer(CTCTokenizerConfig(type="llm-units", path=str(path)), llm_tokenizer=hf)
    assert again.units == tok.units and again.encode("the red dog") == tok.encode("the red dog")


def test_bad_unit_lists_name_the_problem(hf, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(["not-a-token-of-this-tokenizer"]))
    with pytest.raises(ConfigError, match="not tokens of the LLM tokenizer"):
        LLMUnitTokenizer.load(hf, bad)
    bad.write_text("{oops")
    with pytest.raises(ConfigError, match="not a JSON list"):
        LLMUnitTokenizer.load(hf, bad)
    with pytest.raises(ConfigError, match="not found"):
        LLMUnitTokenizer.load(hf, tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="needs the LLM tokenizer"):
        build_ctc_tokenizer(CTCTokenizerConfig(type="llm-units", path=str(bad)))
    with pytest.raises(ConfigError, match="path"):
        CTCTokenizerConfig(type="llm-units")
    with pytest.raises(ConfigError, match="no words"):
        LLMUnitTokenizer.select(hf, ["", "  "])
