"""CTC encoders (tiny transformer, Whisper + CTC head) and CTC heads."""

import sys
import types

import pytest
import torch
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from tasu.config.fields import ConfigError
from tasu.model.config import EncoderConfig
from tasu.model.encoders import build_encoder
from tasu.model.encoders.heads import build_head
from tasu.model.encoders.whisper import WhisperCTCEncoder, whisper_config, whisper_pad_value

V = 29
HEADS = ["linear", "mlp", "bigru", "conformer"]


def _encoder(kind: str, head: str = "linear", **kw):
    cfg = EncoderConfig(type=kind, head=head, head_hidden=32, whisper_size="tiny-test", **kw)
    torch.manual_seed(0)
    return build_encoder(cfg, V).eval()


def _feats(lengths, n_mels=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    return torch.randn(len(lengths), int(lengths.max()), n_mels, generator=g), lengths


@pytest.mark.parametrize("kind", ["tiny", "whisper"])
@pytest.mark.parametrize("head", HEADS)
def test_shapes_lengths_posteriors(kind, head):
    enc = _encoder(kind, head)
    feats, lengths = _feats([57, 30, 1])
    out = enc(feats, lengths, hidden_layers=[0, 1, -1])
    t = (57 + 1) // 2
    assert out.logits.shape == (3, t, V)
    assert out.lengths.tolist() == [29, 15, 1] == enc.output_lengths(lengths).tolist()
    assert [h.shape for h in out.hidden] == [(3, t, enc.hidden_size)] * 3
    assert not enc(feats, lengths).hidden
    post = enc.posteriors(feats, lengths, hidden_layers=[1, -1])
    assert post.vocab_size == V and post.features.shape == (3, t, 2 * enc.hidden_size)
    torch.testing.assert_close(post.probs.sum(-1), torch.ones(3, t))
    torch.testing.assert_close(post.log_probs, torch.log_softmax(out.logits, -1))
    assert enc.posteriors(feats, lengths, hidden_layers=[-1]).features.shape == (3, t, enc.hidden_size)
    assert enc.frame_rate_hz == 50.0
    # final hidden state is what the head reads
    torch.testing.assert_close(enc.ctc_head(out.hidden[-1], out.lengths), out.logits)


@pytest.mark.parametrize("kind,true_length", [("tiny", True), ("whisper", True), ("whisper", False)])
@pytest.mark.parametrize("head", HEADS)
def test_row_independent_of_batch(kind, true_length, head):
    enc = _encoder(kind, head, true_length=true_length)
    feats, lengths = _feats([41, 23])
    both = enc(feats, lengths, hidden_layers=[0]).logits
    alone = enc(feats[1:, :23], lengths[1:]).logits
    n = int(enc.output_lengths(lengths)[1])
    torch.testing.assert_close(both[1, :n], alone[0, :n], atol=1e-5, rtol=1e-5)
    # garbage in the padding changes nothing either
    noisy = feats.clone()
    noisy[1, 23:] = 1e3
    torch.testing.assert_close(enc(noisy, lengths).logits[1, :n], both[1, :n], atol=1e-5, rtol=1e-5)


def test_padding_mask_is_needed():
    # without the mask the short row would see the long row's padding: check the test above can fail
    enc = _encoder("tiny")
    feats, lengths = _feats([41, 23])
    both = enc(feats, torch.tensor([41, 41])).logits
    alone = enc(feats[1:, :23], lengths[1:]).logits
    assert (both[1, :12] - alone[0, :12]).abs().max() > 1e-3


def test_whisper_padded_path_equals_hf_encoder():
    enc = _encoder("whisper", true_length=False)
    hf = WhisperEncoder(enc.config).eval()
    hf.load_state_dict(enc.encoder.state_dict())
    # a full 30 s input: identical to HF's own forward
    feats, lengths = _feats([3000, 3000], seed=1)
    out = enc(feats, lengths, hidden_layers=[-1])
    ref = hf(feats.transpose(1, 2)).last_hidden_state
    assert out.logits.shape[1] == 1500
    assert torch.equal(out.hidden[0], ref)
    # a short clip: HF on the input padded with Whisper's silence value, first ceil(F/2) frames
    feats, lengths = _feats([777], seed=2)
    pad = whisper_pad_value(feats, lengths)
    padded = torch.cat([feats, pad.view(1, 1, 1).expand(1, 3000 - 777, 80)], dim=1)
    ref = hf(padded.transpose(1, 2)).last_hidden_state[:, :389]
    assert torch.equal(enc(feats, lengths, hidden_layers=[-1]).hidden[0], ref)


def test_whisper_true_length():
    enc = _encoder("whisper", true_length=True)
    for f in (3000, 777, 776, 1):
        feats, lengths = _feats([f])
        out = enc(feats, lengths)
        assert out.logits.shape[1] == out.lengths.item() == (f + 1) // 2
    # with nothing to pad the two paths agree (only the masking / slicing differ)
    feats, lengths = _feats([3000], seed=3)
    padded = _encoder("whisper", true_length=False)
    torch.testing.assert_close(enc(feats, lengths).logits, padded(feats, lengths).logits, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="at most 3000"):
        enc(*_feats([3001]))


def test_whisper_pad_value_is_whisper_silence():
    feats = torch.tensor([[[0.5, 1.0], [0.2, -0.1]], [[-1.3, -1.0], [-1.4, -1.45]]])
    torch.testing.assert_close(whisper_pad_value(feats, torch.tensor([2, 2])), torch.tensor([-1.0, -1.5]))


def test_load_encoder_state_strict_errors():
    enc = _encoder("whisper")
    other = WhisperEncoder(enc.config)
    state = other.state_dict()
    enc.load_encoder_state(state)
    assert torch.equal(enc.encoder.conv1.weight, other.conv1.weight)
    bad = dict(state)
    bad.pop("layers.0.fc1.weight")
    bad["decoder.embed_tokens.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys \['layers.0.fc1.weight'\].*decoder.embed_tokens.weight"):
        enc.load_encoder_state(bad)
    wrong = dict(state)
    wrong["conv1.weight"] = torch.zeros(64, 128, 3)
    with pytest.raises(ValueError, match="conv1.weight.*n_mels"):
        enc.load_encoder_state(wrong)


def test_build_whisper_with_weights(monkeypatch):
    wcfg = whisper_config("tiny-test")
    torch.manual_seed(1)
    src = WhisperEncoder(wcfg)
    calls = []

    def load(path, fmt):
        calls.append((path, fmt))
        return src.state_dict(), wcfg

    fake = types.ModuleType("tasu.model.encoders.whisper_weights")
    fake.load_whisper_encoder_state = load
    monkeypatch.setitem(sys.modules, "tasu.model.encoders.whisper_weights", fake)
    enc = build_encoder(EncoderConfig(type="whisper", path="/w", weights_format="ct2"), V)
    assert calls == [("/w", "ct2")] and isinstance(enc, WhisperCTCEncoder)
    assert torch.equal(enc.encoder.layers[1].fc2.weight, src.layers[1].fc2.weight)
    with pytest.raises(ConfigError, match="n_mels"):
        build_encoder(EncoderConfig(type="whisper", path="/w", n_mels=128), V)


def test_build_and_input_errors():
    assert build_encoder(EncoderConfig(type="none"), V) is None
    with pytest.raises(ConfigError, match="whisper_size"):
        build_encoder(EncoderConfig(type="whisper", whisper_size="huge"), V)
    enc = _encoder("tiny")
    assert {n.split(".")[0] for n, _ in enc.named_parameters()} == {"encoder", "ctc_head"}
    with pytest.raises(ValueError, match="hidden layer 3 out of range"):
        enc(*_feats([10]), hidden_layers=[3])
    with pytest.raises(ValueError, match="n_mels"):
        enc(torch.zeros(1, 10, 40), torch.tensor([10]))
    with pytest.raises(ValueError, match="feat_lengths must lie"):
        enc(torch.zeros(1, 10, 80), torch.tensor([11]))
    with pytest.raises(ValueError, match="unknown CTC head"):
        build_head("lstm", 8, V, 8)


@pytest.mark.parametrize("subsample", [1, 3, 4])
def test_tiny_subsampling_and_training(subsample):
    enc = _encoder("tiny", "bigru", subsample=subsample).train()
    feats, lengths = _feats([50, 13])
    out = enc(feats, lengths)
    assert out.lengths.tolist() == [-(-50 // subsample), -(-13 // subsample)]
    assert out.logits.shape[1] == -(-50 // subsample)
    assert enc.frame_rate_hz == 100.0 / subsample
    log_probs = torch.log_softmax(out.logits, -1).transpose(0, 1)
    loss = torch.nn.functional.ctc_loss(log_probs, torch.tensor([[1, 2, 3], [4, 5, 6]]), out.lengths,
                                        torch.tensor([3, 2]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in enc.parameters())
