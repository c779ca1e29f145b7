"""TASLM pieces: delayed speech codes, per-codebook heads, speech embedding, weighted joint loss."""

import pytest
import torch
import torch.nn.functional as F

from tasu.taste.taslm import PAD_CODE, SpeechEmbedding, SpeechHeads, delay_codes, taslm_loss, undelay_codes


def test_delay_codes_hand_example():
    codes = torch.tensor([[[1, 10], [2, 20], [3, 30]], [[4, 40], [5, 50], [9, 90]]])    # [B=2, L=3, N=2]
    lengths = torch.tensor([3, 2])                                        # row 1: position 2 is padding
    out = delay_codes(codes, lengths, delay=1)
    p = PAD_CODE
    assert out.tolist() == [[[p, p], [1, 10], [2, 20], [3, 30]],
                            [[p, p], [4, 40], [5, 50], [p, p]]]
    assert torch.equal(undelay_codes(out, lengths, 1), codes.masked_fill(torch.tensor([[0, 0, 0], [0, 0, 1]]).bool()
                                                                         .unsqueeze(-1), p))


@pytest.mark.parametrize("delay", [0, 2, 5])
def test_delay_round_trip(delay):
    codes = torch.randint(0, 8, (4, 6, 3))
    lengths = torch.tensor([6, 1, 4, 0])
    out = delay_codes(codes, lengths, delay, pad_code=99)
    assert out.shape == (4, 6 + delay, 3)
    assert (out[:, :delay] == 99).all()
    back = undelay_codes(out, lengths, delay, pad_code=99)
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(back[b, :n], codes[b, :n]) and (back[b, n:] == 99).all()
    with pytest.raises(ValueError, match="text_lengths"):
        delay_codes(codes, torch.tensor([7, 1, 1, 1]), delay)


def test_heads_and_embedding():
    heads = SpeechHeads(hidden=12, num_codebooks=3, codebook_size=5)
    logits = heads(torch.randn(2, 4, 12))
    assert len(logits) == 3 and all(x.shape == (2, 4, 5) for x in logits)
    emb = SpeechEmbedding(hidden=12, num_codebooks=3, codebook_size=5)
    codes = torch.tensor([[[0, 1, 2], [PAD_CODE] * 3]])
    e = emb(codes)
    assert e.shape == (1, 2, 12)
    want = sum(emb.tables[n].weight[codes[0, 0, n]] for n in range(3))
    assert torch.allclose(e[0, 0], want) and (e[0, 1] == 0).all()
    with pytest.raises(ValueError, match="codebook_size"):
        emb(torch.full((1, 1, 3), 5))


def test_weighted_loss_matches_manual_and_ignores_padding():
    g = torch.Generator().manual_seed(0)
    text_logits = torch.randn(2, 4, 7, generator=g)
    text_tgt = torch.tensor([[1, 2, 3, -100], [4, 5, -100, -100]])
    speech_logits = [torch.randn(2, 4, 5, generator=g) for _ in range(3)]
    speech_tgt = torch.randint(0, 5, (2, 4, 3), generator=g)
    speech_tgt[:, 0] = PAD_CODE
    loss = taslm_loss(text_logits, text_tgt, speech_logits, speech_tgt, w_text=0.3, w_speech=2.0)
    ce_text = F.cross_entropy(text_logits.reshape(-1, 7), text_tgt.reshape(-1), ignore_index=-100)
    ce_n = [F.cross_entropy(speech_logits[n][:, 1:].reshape(-1, 5), speech_tgt[:, 1:, n].reshape(-1))
            for n in range(3)]
    assert torch.isclose(loss.text, ce_text)
    assert torch.allclose(loss.per_codebook, torch.stack(ce_n))
    assert torch.isclose(loss.total, 0.3 * ce_text + 2.0 * torch.stack(ce_n).mean())
    # logits at ignored positions do not matter
    speech_logits[0][:, 0] += 100.0
    assert torch.isclose(taslm_loss(text_logits, text_tgt, speech_logits, speech_tgt, 0.3, 2.0).total, loss.total)


def test_loss_with_no_speech_target_is_zero_and_differentiable():
    speech_logits = [torch.randn(1, 2, 4, requires_grad=True)]
    out = taslm_loss(torch.randn(1, 2, 3), torch.tensor([[0, 1]]), speech_logits, torch.full((1, 2, 1), PAD_CODE))
    assert out.speech == 0
    out.total.backward()
    assert speech_logits[0].grad is not None and (speech_logits[0].grad == 0).all()
    with pytest.raises(ValueError, match="N=1"):
        taslm_loss(torch.randn(1, 2, 3), torch.tensor([[0, 1]]), speech_logits, torch.zeros(1, 2, 2, dtype=torch.long))
