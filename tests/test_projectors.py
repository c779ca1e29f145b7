"""Projectors: shapes, lengths, sparse == dense, padding independence, references, init=embedding."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from tasu.config.fields import ConfigError
from tasu.model.config import PROJECTOR_TYPES, ProjectorConfig
from tasu.model.projectors import build_projector
from tasu.model.projectors.embedding_init import init_linear_silu_to_embeddings
from tasu.model.projectors.mlp import LinearSiLUProjector
from tasu.types import Posteriors

V, H, D, V_LLM = 30, 16, 12, 50
LLM_IDS = list(range(7, 7 + V - 1))


def _embedding(seed=0, v_llm=V_LLM, h=H):
    torch.manual_seed(seed)
    return nn.Embedding(v_llm, h)


def _proj(kind, input_kind="posteriors", stack=1, hidden=32, emb=None, v=V, llm_ids=None, **kw):
    torch.manual_seed(1)
    cfg = ProjectorConfig(type=kind, hidden=hidden, stack=stack, num_queries=4, num_layers=1, num_heads=4, **kw)
    in_dim = v if input_kind == "posteriors" else D
    return build_projector(cfg, in_dim, H, input_kind, llm_embedding=emb or _embedding(),
                           ctc_to_llm_ids=llm_ids or list(range(7, 7 + v - 1))).eval()


def _sparse(lengths, t=None, v=V, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    t = t or int(lengths.max())
    b = len(lengths)
    ids = torch.randint(0, v, (b, t), generator=g)
    ids[0, 0] = 0                                        # a blank frame
    return Posteriors(lengths=lengths, vocab_size=v, ids=ids, smooth=torch.rand(b, t, generator=g) * 0.2,
                      features=torch.randn(b, t, D, generator=g))


def _dense(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    logits = 3 * torch.randn(len(lengths), int(lengths.max()), V, generator=g)
    return Posteriors(lengths=lengths, vocab_size=V, log_probs=torch.log_softmax(logits, -1),
                      features=torch.randn(len(lengths), int(lengths.max()), D, generator=g))


def _expected_frames(kind, stack, lengths):
    if kind == "qformer":
        return [4] * len(lengths)
    if kind in ("linear", "conv1d"):
        return [-(-n // stack) for n in lengths]
    return list(lengths)


# lego reads posteriors only (its features case is an error, see test_build_errors)
CASES = [(k, i) for k in PROJECTOR_TYPES for i in ("posteriors", "features") if not (k == "lego" and i == "features")]


@pytest.mark.parametrize("kind,input_kind", CASES)
@pytest.mark.parametrize("stack", [1, 3])
def test_shapes_lengths_and_padding(kind, input_kind, stack):
    proj = _proj(kind, input_kind, stack)
    post = _dense([11, 7, 1])
    out, lengths = proj(post)
    want = _expected_frames(kind, stack, [11, 7, 1])
    assert lengths.tolist() == want
    assert out.shape == (3, max(want), H)
    assert torch.isfinite(out).all()
    if kind != "qformer":                                  # padding frames are zero on output
        mask = torch.arange(out.shape[1]) < lengths.unsqueeze(1)
        assert (out[~mask] == 0).all()
    # a row's output does not depend on the rest of the batch, nor on garbage in its padding
    alone, _ = proj(Posteriors(lengths=post.lengths[1:2], vocab_size=V, log_probs=post.log_probs[1:2, :7],
                               features=post.features[1:2, :7]))
    n = want[1]
    torch.testing.assert_close(out[1, :n], alone[0, :n], atol=1e-5, rtol=1e-5)
    noisy = Posteriors(lengths=post.lengths, vocab_size=V, log_probs=post.log_probs.clone(),
                       features=post.features.clone())
    noisy.log_probs[1, 7:] = float("nan")                 # "padding carries undefined values"
    noisy.features[1, 7:] = float("nan")
    noisy_out = proj(noisy)[0]
    torch.testing.assert_close(noisy_out[1, :n], out[1, :n], atol=1e-5, rtol=1e-5)
    params = [p for p in proj.parameters() if p.requires_grad]
    if params:                                            # NaN padding must not poison the gradients
        grads = torch.autograd.grad(noisy_out.sum(), params, allow_unused=True)
        assert all(g is None or torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("kind", PROJECTOR_TYPES)
@pytest.mark.parametrize("stack", [1, 2])
def test_sparse_equals_dense_forward_and_grad(kind, stack):
    proj = _proj(kind, stack=stack)
    sp = _sparse([9, 5])
    a, la = proj(sp)
    b, lb = proj(sp.to_dense())
    assert torch.equal(la, lb)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    params = [p for p in proj.parameters()]
    if params:
        up = torch.randn_like(a)
        ga = torch.autograd.grad((a * up).sum(), params, allow_unused=True)
        gb = torch.autograd.grad((b * up).sum(), params, allow_unused=True)
        for x, y in zip(ga, gb):
            assert (x is None) == (y is None)
            if x is not None:
                torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


class MaxNumel(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.max_numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        return out


@pytest.mark.parametrize("kind", PROJECTOR_TYPES)
def test_sparse_input_never_materialises_frames_times_vocab(kind):
    v = 4000
    b, t = 4, 32                                         # B*T = 128 frames, far above any weight's row count
    proj = _proj(kind, stack=2, hidden=8, v=v, llm_ids=[i % V_LLM for i in range(v - 1)])
    post = _sparse([t] * b, v=v)
    rec = MaxNumel()
    with rec:
        out, _ = proj(post)
        if any(p.requires_grad for p in proj.parameters()):
            out.square().sum().backward()
    # nothing larger than a weight ([hidden, V * taps]) or the gathered embedding rows ([V - 1, H])
    bound = max([p.numel() for p in proj.parameters()] + [v * H])
    assert rec.max_numel <= bound < b * t * v


def test_stack_and_conv_match_references():
    post = _dense([10, 6])
    x = post.dense_probs().masked_fill(~post.frame_mask().unsqueeze(-1), 0.0)      # [B, T, V]
    k = 3
    xp = F.pad(x, (0, 0, 0, (-x.shape[1]) % k))                                    # [B, 12, V]
    lin = _proj("linear", stack=k)
    stacked = xp.reshape(2, -1, k * V)                                             # concat k frames
    ref = lin.fc2(F.relu(lin.fc1(stacked)))
    out, lengths = lin(post)
    assert lengths.tolist() == [4, 2]
    torch.testing.assert_close(out[0], ref[0])
    torch.testing.assert_close(out[1, :2], ref[1, :2])
    conv = _proj("conv1d", stack=k)
    ref = conv.out(F.gelu(conv.conv(xp.transpose(1, 2)).transpose(1, 2)))
    out, _ = conv(post)
    torch.testing.assert_close(out[0], ref[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out[1, :2], ref[1, :2], atol=1e-6, rtol=1e-5)


def test_cross_attention_matches_reference():
    emb = _embedding(3)
    proj = _proj("cross-attention", emb=emb)
    post = _dense([6, 4])
    x = post.dense_probs()
    q = proj.query(x)                                                               # [B, T, H]
    heads, d = 4, H // 4
    qh = q.view(2, 6, heads, d)
    eh = emb.weight.detach().view(V_LLM, heads, d)
    att = torch.softmax(torch.einsum("bthd,vhd->bthv", qh, eh) / d**0.5, dim=-1)
    ref = q + proj.out(torch.einsum("bthv,vhd->bthd", att, eh).reshape(2, 6, H))
    out, _ = proj(post)
    torch.testing.assert_close(out[0], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, :4], ref[1, :4], atol=1e-5, rtol=1e-5)
    # the LLM's embedding is only referenced: not a parameter, not in the state dict, no gradient
    assert all(p is not emb.weight for p in proj.parameters())
    assert not any("embedding" in k for k in proj.state_dict())
    out.sum().backward()
    assert emb.weight.grad is None


@pytest.mark.parametrize("top1", [False, True])
def test_lego_matches_dense_reference(top1):
    emb = _embedding(4)
    proj = _proj("lego", emb=emb, lego_top1=top1)
    assert not list(proj.parameters())
    post = _dense([8, 5])
    p = post.dense_probs()
    p[0, 1] = 0.0
    p[0, 1, 0] = 1.0                                                   # a frame that is all blank
    p[0, 2] = torch.softmax(torch.tensor([9.0] + [0.0] * (V - 1)), 0)  # blank argmax, some non-blank mass
    post = Posteriors(lengths=post.lengths, vocab_size=V, probs=p)
    table = emb.weight.detach()[torch.tensor(LLM_IDS)]                 # [V-1, H]
    if top1:
        ref = table[p[..., 1:].argmax(-1)]
    else:
        q = p[..., 1:] / p[..., 1:].sum(-1, keepdim=True).clamp_min(1e-12)
        ref = torch.einsum("btv,vh->bth", q, table)
    out, lengths = proj(post)
    assert lengths.tolist() == [8, 5]
    torch.testing.assert_close(out[0], ref[0])
    torch.testing.assert_close(out[1, :5], ref[1, :5])
    if not top1:
        assert (out[0, 1] == 0).all()                                  # no non-blank mass -> zero vector
        # blank-argmax frame: the renormalised non-blank mixture (here uniform -> mean embedding)
        torch.testing.assert_close(out[0, 2], table.mean(0))


@pytest.mark.parametrize("hidden,exact", [(2 * H + 5, True), (H + 3, False)])
def test_init_embedding_lands_on_llm_embeddings(hidden, exact):
    emb = _embedding(5)
    proj = _proj("linear-silu", hidden=hidden, emb=emb, init="embedding")
    target = emb.weight.detach()[torch.tensor(LLM_IDS)]                # [V-1, H]
    for smooth in (0.0, 0.1):
        post = Posteriors(lengths=torch.tensor([V]), vocab_size=V, ids=torch.arange(V).unsqueeze(0),
                          smooth=torch.full((1, V), smooth))
        for p in (post, post.to_dense()):
            out, _ = proj(p)
            cos = F.cosine_similarity(out[0, 1:], target, dim=-1)
            assert cos.min() > (0.999 if smooth == 0 else 0.9)
            if smooth == 0:
                err = (out[0, 1:] - target).abs().max()
                assert err < (1e-5 if exact else 1e-2 * target.abs().max())
                assert out[0, 0].abs().max() < (1e-5 if exact else 1e-2)  # blank -> ~zero vector
    # a random init is nowhere near (the test can fail)
    rand = _proj("linear-silu", hidden=hidden, emb=emb)
    out, _ = rand(Posteriors(lengths=torch.tensor([V]), vocab_size=V, ids=torch.arange(V).unsqueeze(0),
                             smooth=torch.zeros(1, V)))
    assert F.cosine_similarity(out[0, 1:], target, dim=-1).mean() < 0.5


def test_init_embedding_reports_mode_and_trains():
    emb = _embedding(6)
    proj = LinearSiLUProjector(V, 2 * H, H)
    assert init_linear_silu_to_embeddings(proj, emb.weight.detach(), LLM_IDS) == "exact"
    out, _ = proj(_sparse([5]))
    out.sum().backward()
    assert all(p.grad is not None for p in proj.parameters())


def test_build_errors():
    emb = _embedding()
    with pytest.raises(ConfigError, match="model.projector.init"):
        _proj("linear", init="embedding")
    with pytest.raises(ConfigError, match="model.projector.init"):
        _proj("linear-silu", input_kind="features", init="embedding")
    with pytest.raises(ConfigError, match="hidden"):
        _proj("linear-silu", hidden=H - 1, init="embedding")
    with pytest.raises(ConfigError, match="lego reads posteriors"):
        _proj("lego", input_kind="features")
    with pytest.raises(ConfigError, match="needs the LLM's input embedding"):
        build_projector(ProjectorConfig(type="lego"), V, H, ctc_to_llm_ids=LLM_IDS)
    with pytest.raises(ConfigError, match="ctc_to_llm_ids has 3 entries"):
        build_projector(ProjectorConfig(type="lego"), V, H, llm_embedding=emb, ctc_to_llm_ids=[1, 2, 3])
    with pytest.raises(ConfigError, match="LLM vocabulary"):
        build_projector(ProjectorConfig(type="lego"), V, H, llm_embedding=emb, ctc_to_llm_ids=[V_LLM] * (V - 1))
    with pytest.raises(ConfigError, match="divisible"):
        build_projector(ProjectorConfig(type="cross-attention", num_heads=5), V, H, llm_embedding=emb)
    with pytest.raises(ConfigError, match="input kind"):
        build_projector(ProjectorConfig(), V, H, input_kind="audio")
    proj = _proj("linear-silu")
    with pytest.raises(ValueError, match="in_dim 30 but got CTC vocabulary size 31"):
        proj(_sparse([3], v=31))
    with pytest.raises(ValueError, match="carry none"):
        _proj("linear-silu", input_kind="features")(Posteriors(lengths=torch.tensor([2]), vocab_size=V,
                                                               probs=torch.full((1, 2, V), 1.0 / V)))
