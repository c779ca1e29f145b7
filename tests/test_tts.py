"""tasu.tts: sentence preparation for TTS prompts, and rendering when the Debian voices are installed."""

import json
import shutil

import pytest
import soundfile as sf

from tasu.text.ctc_tokenizer import CharCTCTokenizer
from tasu.tts import TTSError, available_voices, build_corpus, normalize_for_ctc, synthesize, tts_sentences


def test_normalize_for_ctc_keeps_the_char_inventory():
    assert normalize_for_ctc("'Well-known,' he said: \u201cDon\u2019t!\u201d") == "well known he said don't"
    s = normalize_for_ctc("Chapter 12 -- Tom's dog_house? Yes.")
    assert s == "chapter tom's dog house yes"
    tok = CharCTCTokenizer()
    assert tok.decode(tok.encode(s)) == s          # every character survives the CTC vocabulary


def test_tts_sentences_split_filter_dedupe():
    text = ("Mr. Smith came home late. He had 3 dogs. Short one. "
            "The rain fell on the quiet town all night!  The rain fell on the quiet town all night! "
            "Dr. Brown said nothing at all; then he left the room slowly.")
    assert tts_sentences(text) == ["mister smith came home late", "the rain fell on the quiet town all night",
                                   "doctor brown said nothing at all", "then he left the room slowly"]
    assert tts_sentences(text, min_words=7) == ["the rain fell on the quiet town all night"]


def test_unknown_voice_is_a_clear_error(tmp_path):
    with pytest.raises(TTSError, match="unknown voice 'nope'"):
        synthesize("hello", "nope", tmp_path / "x.wav")
    with pytest.raises(TTSError, match="unknown voice"):
        build_corpus(["hello there"], ["nope"], tmp_path)


@pytest.mark.skipif(shutil.which("flite") is None or shutil.which("sox") is None,
                    reason="needs the Debian flite and sox packages (launch/install_assets.sh)")
def test_build_corpus_with_flite(tmp_path):
    assert "flite-kal16" in available_voices()
    sents = ["the cat sat on the mat", "a quiet evening by the river", "he opened the door"]
    manifest = build_corpus(sents, ["flite-kal16", "flite-slt"], tmp_path, per_voice=2, tempo_range=(0.9, 1.1))
    recs = [json.loads(ln) for ln in manifest.read_text().splitlines()]
    assert len(recs) == 4 and {r["voice"] for r in recs} == {"flite-kal16", "flite-slt"}
    for r in recs:
        info = sf.info(str(tmp_path / r["path"]))
        assert info.samplerate == 16000 and info.channels == 1 and info.frames == r["num_samples"] > 8000
        assert r["GT"] == r["target"] in sents and 0.9 <= r["tempo"] <= 1.1
    again = build_corpus(sents, ["flite-kal16", "flite-slt"], tmp_path, per_voice=2, tempo_range=(0.9, 1.1))
    assert again.read_text() == manifest.read_text()    # seeded choice and tempo: the same corpus
