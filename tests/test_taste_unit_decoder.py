"""TASTE unit decoder: shapes, padding independence, speaker conditioning, lengths, the Vocoder protocol."""

import pytest
import torch

from tasu.taste.unit_decoder import UnitDecoder, Vocoder

V, D, U = 15, 16, 11


def _dec(speaker_dim=0, width=1.0, seed=0):
    torch.manual_seed(seed)
    return UnitDecoder(V, D, U, num_layers=2, heads=4, speaker_dim=speaker_dim, align_prior_width=width).eval()


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(0, V, (3, 5), generator=g)
    text_len = torch.tensor([5, 3, 1])
    speech = torch.randn(3, 5, D, generator=g)
    unit_len = torch.tensor([12, 7, 2])
    return text, text_len, speech, unit_len


@pytest.mark.parametrize("width", [0.0, 1.0])
def test_logits_shape(width):
    out = _dec(width=width)(*_inputs())
    assert out.logits.shape == (3, 12, U) and out.log_ratio.shape == (3,)
    assert torch.isfinite(out.logits).all()


def test_padding_does_not_change_valid_logits():
    dec = _dec()
    text, text_len, speech, unit_len = _inputs()
    ref = dec(text, text_len, speech, unit_len)
    t2 = torch.cat([text, torch.randint(0, V, (3, 3))], 1)
    s2 = torch.cat([speech, 100 * torch.randn(3, 3, D)], 1)
    for b, n in enumerate(text_len.tolist()):
        t2[b, n:] = torch.randint(0, V, (t2.shape[1] - n,))
        s2[b, n:] = 100 * torch.randn(s2.shape[1] - n, D)
    out = dec(t2, text_len, s2, unit_len, max_units=15)                  # more padded unit positions too
    assert out.logits.shape[1] == 15
    for b, n in enumerate(unit_len.tolist()):
        assert torch.allclose(out.logits[b, :n], ref.logits[b, :n], atol=1e-5)
    assert torch.allclose(out.log_ratio, ref.log_ratio, atol=1e-5)


def test_speech_vectors_change_the_units():
    dec = _dec()
    text, text_len, speech, unit_len = _inputs()
    a = dec(text, text_len, speech, unit_len).logits
    b = dec(text, text_len, torch.randn_like(speech), unit_len).logits
    assert not torch.allclose(a, b, atol=1e-3)


def test_speaker_embedding_is_used_and_checked():
    dec = _dec(speaker_dim=6)
    text, text_len, speech, unit_len = _inputs()
    a = dec(text, text_len, speech, unit_len, speaker=torch.randn(3, 6)).logits
    b = dec(text, text_len, speech, unit_len, speaker=torch.randn(3, 6)).logits
    assert not torch.allclose(a, b, atol=1e-3)
    with pytest.raises(ValueError, match="speaker_dim"):
        dec(text, text_len, speech, unit_len)
    with pytest.raises(ValueError, match="speaker_dim is 0"):
        _dec()(text, text_len, speech, unit_len, speaker=torch.randn(3, 6))


def test_loss_ignores_padding_and_checks_ids():
    dec = _dec()
    text, text_len, speech, unit_len = _inputs()
    out = dec(text, text_len, speech, unit_len)
    units = torch.randint(0, U, (3, 12))
    ce, length = dec.loss(out, units, unit_len, text_len)
    units2 = units.clone()
    units2[1, 7:] = (units2[1, 7:] + 1) % U                               # change padding targets only
    assert torch.equal(ce, dec.loss(out, units2, unit_len, text_len)[0])
    target = (unit_len.float() / text_len.float()).log()
    assert torch.isclose(length, ((out.log_ratio - target) ** 2).mean())
    units[0, 0] = U
    with pytest.raises(ValueError, match="unit_vocab"):
        dec.loss(out, units, unit_len, text_len)


def test_length_head_learns_the_unit_rate_and_generate_uses_it():
    torch.manual_seed(0)
    dec = UnitDecoder(V, D, U, num_layers=1, heads=4).train()
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    text, text_len, speech, _ = _inputs()
    unit_len = text_len * 3                                               # 3 units per token
    units = torch.randint(0, U, (3, 15))
    for _ in range(60):
        out = dec(text, text_len, speech, unit_len)
        ce, length = dec.loss(out, units, unit_len, text_len)
        opt.zero_grad()
        (ce + length).backward()
        opt.step()
    dec.eval()
    gen, gen_len = dec.generate(text, text_len, speech)
    assert gen_len.tolist() == unit_len.tolist()
    assert gen.shape == (3, 15) and int(gen.max()) < U
    fixed, fixed_len = dec.generate(text, text_len, speech, unit_lengths=torch.tensor([4, 4, 4]))
    assert fixed.shape == (3, 4) and fixed_len.tolist() == [4, 4, 4]


def test_vocoder_protocol():
    class UnitVocoder:
        sample_rate = 16000

        def __call__(self, units, unit_lengths, speaker=None):
            return torch.zeros(units.shape[0], 320 * units.shape[1]), unit_lengths * 320

    class NotAVocoder:
        def __call__(self, units, unit_lengths, speaker=None):
            return units, unit_lengths

    assert isinstance(UnitVocoder(), Vocoder)
    assert not isinstance(NotAVocoder(), Vocoder)                          # no sample_rate
