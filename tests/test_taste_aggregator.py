"""TASTE aggregator: one vector per text token, padding independence, word pooling, layer selection."""

import pytest
import torch

from tasu.taste.aggregator import TextAlignedAggregator, pick_key_value, word_pool

V, D, DE, DV = 20, 16, 12, 10


def _agg(word_pooling=False, layers=2, seed=0):
    torch.manual_seed(seed)
    return TextAlignedAggregator(V, D, DE, num_layers=layers, heads=4, word_pooling=word_pooling, value_dim=DV).eval()


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(0, V, (3, 6), generator=g)
    text_len = torch.tensor([6, 4, 2])
    keys = torch.randn(3, 9, DE, generator=g)
    values = torch.randn(3, 9, DV, generator=g)
    frame_len = torch.tensor([9, 5, 3])
    return text, text_len, keys, values, frame_len


@pytest.mark.parametrize("layers", [1, 3])
def test_output_is_aligned_with_text_tokens(layers):
    out = _agg(layers=layers)(*_inputs())
    assert out.shape == (3, 6, D)
    assert torch.isfinite(out).all()


def test_padding_frames_and_tokens_do_not_change_outputs():
    agg = _agg()
    text, text_len, keys, values, frame_len = _inputs()
    ref = agg(text, text_len, keys, values, frame_len)
    # garbage in padded frames, 4 extra padded frames, garbage padded tokens, 2 extra padded tokens
    k2 = torch.cat([keys, torch.randn(3, 4, DE) * 50], 1)
    v2 = torch.cat([values, torch.randn(3, 4, DV) * 50], 1)
    for b, n in enumerate(frame_len.tolist()):
        k2[b, n:] = torch.randn(k2.shape[1] - n, DE) * 50
        v2[b, n:] = torch.randn(v2.shape[1] - n, DV) * 50
    t2 = torch.cat([text, torch.randint(0, V, (3, 2))], 1)
    for b, n in enumerate(text_len.tolist()):
        t2[b, n:] = torch.randint(0, V, (t2.shape[1] - n,))
    out = agg(t2, text_len, k2, v2, frame_len)
    for b, n in enumerate(text_len.tolist()):
        assert torch.allclose(out[b, :n], ref[b, :n], atol=1e-5)


def test_values_come_from_the_value_layer_and_keys_select_frames():
    agg = _agg(layers=1)
    text, text_len, keys, values, frame_len = _inputs()
    base = agg(text, text_len, keys, values, frame_len)
    # changing the values changes the output; the output responds to keys too (they decide the weights)
    assert not torch.allclose(base, agg(text, text_len, keys, values * torch.rand_like(values), frame_len), atol=1e-3)
    assert not torch.allclose(base, agg(text, text_len, keys.flip(1), values, frame_len), atol=1e-3)
    # with a single valid frame every token's output is that frame's (projected) value, whatever the keys
    one = torch.ones(3, dtype=torch.long)
    a = agg(text, text_len, keys, values, one)
    b = agg(text, text_len, torch.randn_like(keys), values, one)
    assert torch.allclose(a, b, atol=1e-5)


def test_word_pooling_averages_tokens_of_a_word():
    text, text_len, keys, values, frame_len = _inputs()
    word_ids = torch.tensor([[0, 0, 1, 2, 2, 2], [5, 5, 5, -1, 0, 0], [7, 7, 0, 0, 0, 0]])
    plain = _agg(word_pooling=False)(text, text_len, keys, values, frame_len)
    pooled = _agg(word_pooling=True)(text, text_len, keys, values, frame_len, word_ids)   # same weights (seed)
    assert torch.allclose(pooled[0, 0], plain[0, :2].mean(0), atol=1e-6)
    assert torch.allclose(pooled[0, 1], pooled[0, 0])
    assert torch.allclose(pooled[0, 2], plain[0, 2], atol=1e-6)                # one-token word unchanged
    assert torch.allclose(pooled[0, 3:6], plain[0, 3:6].mean(0).expand(3, -1), atol=1e-6)
    assert torch.allclose(pooled[1, :3], plain[1, :3].mean(0).expand(3, -1), atol=1e-6)
    assert torch.allclose(pooled[1, 3], plain[1, 3], atol=1e-6)                # word id -1: not pooled
    assert torch.allclose(pooled[2, :2], plain[2, :2].mean(0).expand(2, -1), atol=1e-6)
    # padding tokens (past text_len) never join a word, even with a matching id
    assert torch.allclose(pooled[2, 2:], plain[2, 2:], atol=1e-6)
    with pytest.raises(ValueError, match="word_ids"):
        _agg(word_pooling=True)(text, text_len, keys, values, frame_len)


def test_word_pool_hand_numbers():
    x = torch.tensor([[[1.0], [3.0], [10.0], [4.0]]])
    out = word_pool(x, torch.tensor([[2, 2, -1, 9]]))
    assert out.squeeze().tolist() == [2.0, 2.0, 10.0, 4.0]


def test_gradients_reach_key_and_value_projections():
    agg = _agg().train()
    agg(*_inputs()).pow(2).sum().backward()
    for name in ("key_proj.1.weight", "value_proj.1.weight", "embed.weight"):
        grad = dict(agg.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_pick_key_value_and_errors():
    hs = [torch.full((1, 2, 3), float(i)) for i in range(5)]
    k, v = pick_key_value(hs, -1, 1)
    assert k[0, 0, 0] == 4 and v[0, 0, 0] == 1
    with pytest.raises(IndexError, match="taste.value_layer"):
        pick_key_value(hs, -1, 5)
    agg = _agg()
    text, text_len, keys, values, frame_len = _inputs()
    with pytest.raises(ValueError, match="frame_lengths"):
        agg(text, text_len, keys, values, torch.tensor([10, 1, 1]))
    with pytest.raises(ValueError, match="values"):
        agg(text, text_len, keys, values[:, :, :3], frame_len)
