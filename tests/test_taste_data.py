"""TASTE data pieces: frequency shift, frame stacking, word ids, padded batches, infinite seeded batches; and the
autoencoder's three modes (text only, without VQ, with VQ)."""

import numpy as np
import pytest
import torch

from tasu.config.loader import load_config
from tasu.data.config import SourceConfig
from tasu.taste.config import TasteConfig
from tasu.taste.data import Utterance, collate, frequency_shift, stack_frames, text_tokenizer, tokenize, train_batches
from tasu.taste.model import TasteAutoencoder
from tasu.taste.taslm import PAD_CODE


def test_frequency_shift_moves_a_tone_and_keeps_the_length():
    sr = 16000
    t = np.arange(sr // 2) / sr
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    out = frequency_shift(tone, 70.0, sr)
    assert out.shape == tone.shape and out.dtype == np.float32
    freqs = np.fft.rfftfreq(len(out), 1 / sr)
    assert abs(freqs[np.abs(np.fft.rfft(out)).argmax()] - 510.0) < 3.0
    assert frequency_shift(tone, 0.0, sr) is tone


def test_stack_frames():
    f = torch.arange(10.0).view(5, 2)                          # 5 frames of 2 bins
    s = stack_frames(f, 3)                                     # ceil(5 / 3) = 2 frames per row, zero-padded
    assert s.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 0]]


def test_tokenize_gives_word_ids():
    tok = text_tokenizer(load_config("taste-tiny").model.llm)
    ids, words = tokenize(tok, "she opens a warm coat", "k")
    assert ids.shape == words.shape and len(ids) > 5
    pieces = tok.convert_ids_to_tokens(ids.tolist())
    # a new word starts at every '▁'-prefixed piece; 5 words
    assert words.tolist() == sorted(words.tolist()) and int(words.max()) == 4
    assert all((p.startswith("▁")) == (i == 0 or words[i] != words[i - 1]) for i, p in enumerate(pieces))
    with pytest.raises(ValueError, match="no text token"):
        tokenize(tok, "", "empty")


def _utt(key, n_tok, n_frames, codes=True):
    return Utterance(key, "x", torch.arange(3, 3 + n_tok), torch.arange(n_tok), torch.randn(n_frames, 4),
                     torch.randn(n_frames, 4), torch.randn(n_frames, 6), n_frames / 50,
                     units=torch.arange(n_frames) % 5, codes=torch.ones(n_tok, 2, dtype=torch.long) if codes else None)


def test_collate_pads_every_field():
    b = collate([_utt("a", 3, 7), _utt("b", 1, 4)], pad_id=0)
    assert b.text_ids.tolist() == [[3, 4, 5], [3, 0, 0]] and b.text_lengths.tolist() == [3, 1]
    assert b.word_ids[1].tolist() == [0, -1, -1]
    assert b.keys.shape == (2, 7, 4) and (b.keys[1, 4:] == 0).all() and b.frame_lengths.tolist() == [7, 4]
    assert b.unit_lengths.tolist() == [7, 4] and (b.units[1, 4:] == 0).all()
    assert (b.codes[1, 1:] == PAD_CODE).all() and (b.codes[1, 0] == 1).all()
    assert collate([_utt("a", 3, 7, codes=False)], 0).codes is None
    assert b.to("cpu", torch.float64).keys.dtype == torch.float64


def test_train_batches_cover_each_epoch_once():
    utts = [_utt(str(i), 2, 3) for i in range(7)]
    it = train_batches(utts, 3, 0, seed=1)
    epoch = [k for _ in range(3) for k in next(it).keys_]        # batches of 3, 3, 1
    assert sorted(epoch) == [str(i) for i in range(7)]
    again = train_batches(utts, 3, 0, seed=1)
    assert [k for _ in range(3) for k in next(again).keys_] == epoch  # seeded
    with pytest.raises(ValueError, match="no training utterance"):
        next(train_batches([], 3, 0, seed=1))


def test_autoencoder_modes():
    torch.manual_seed(0)
    cfg = TasteConfig(codebooks=2, codebook_size=4, dim=16, heads=2, aggregator_layers=1, decoder_layers=1,
                      unit_vocab=5, kmeans_init=False)
    m = TasteAutoencoder(cfg, text_vocab=10, encoder_dim=4)
    b = collate([_utt("a", 3, 7), _utt("b", 2, 5)], pad_id=0)
    for mode in ("text", "novq", "vq"):
        m.zero_grad()
        out = m(**b.tokenizer_inputs(), mode=mode)
        out.loss.backward()
        agg = [p.grad for p in m.aggregator.parameters()]
        assert all(g is None for g in agg) == (mode == "text"), mode     # text only: the aggregator is not run
        assert (out.rvq is None) == (mode != "vq") and (out.commit_loss > 0) == (mode == "vq")
    with pytest.raises(ValueError, match="unknown mode"):
        m(**b.tokenizer_inputs(), mode="bogus")


def _audio_manifest(tmp_path, n_good: int, n_corrupt: int):
    import json

    import soundfile as sf

    recs = []
    for i in range(n_good):
        sf.write(tmp_path / f"g{i}.wav", 0.1 * np.sin(2 * np.pi * 300 * np.arange(3200) / 16000), 16000)
        recs.append({"key": f"g{i}", "task": "ASR", "target": f"word {i}", "path": str(tmp_path / f"g{i}.wav"),
                     "GT": f"word {i}"})
    for i in range(n_corrupt):
        (tmp_path / f"c{i}.wav").write_bytes(b"RIFF not audio at all")
        recs.append({"key": f"c{i}", "task": "ASR", "target": "lost", "path": str(tmp_path / f"c{i}.wav"),
                     "GT": "lost"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (tmp_path / "t.txt").write_text("a text only sentence\n")
    return [SourceConfig(path=str(tmp_path / "m.jsonl")), SourceConfig(path=str(tmp_path / "t.txt"))]


def test_read_records_counts_bad_audio_and_enforces_the_skip_ratio(tmp_path, caplog):
    import logging

    from tasu.data.config import DataConfig
    from tasu.data.faults import DataError
    from tasu.taste.data import read_records

    sources = _audio_manifest(tmp_path, n_good=3, n_corrupt=1)
    with caplog.at_level(logging.WARNING):
        got = list(read_records(sources, DataConfig(max_skip_ratio=0.5, skip_check_after=1), 0, 1, "taste.data"))
    assert [k for k, _, _ in got] == ["g0", "g1", "g2"] and got[0][1] == "word 0" and got[0][2].shape == (3200,)
    assert "'c0' (corrupt_audio)" in caplog.text and "1 text-only record" in caplog.text
    # 1 bad of 4 read is over a 1 % ratio: the run stops naming the key that governs it
    with pytest.raises(DataError, match="data.max_skip_ratio"):
        list(read_records(sources, DataConfig(max_skip_ratio=0.01, skip_check_after=1), 0, 1, "taste.data"))
    with pytest.raises(DataError, match="data.on_error=fail"):
        list(read_records(sources, DataConfig(on_error="fail"), 0, 1, "taste.data"))
