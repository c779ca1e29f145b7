"""The ctc stage's pieces, in process: CTCModel, freezing top-k encoder layers, per-group LRs, ctc data mode,
config checks, posterior shards."""

import json

import pytest
import torch

from tasu.config.fields import ConfigError
from tasu.config.loader import load_config
from tasu.data.loader import eval_batches, resolve_sources
from tasu.data.stages import SampleError, build_stages
from tasu.eval.ctc_decode import greedy_decode
from tasu.eval.posterior_shards import collate_posteriors, expand_topk, export_posteriors, read_index, read_posteriors
from tasu.model.build import build_ctc_model
from tasu.model.ctc_model import ctc_loss, ctc_only
from tasu.model.freeze import apply_freeze, encoder_top_layers_regex
from tasu.train.engine import param_groups
from tasu.types import SpeechBatch

TONE = "pkg://assets/tone_speech/manifest.jsonl"


def _cfg(*overrides):
    return load_config("whisper-ctc-tiny", list(overrides))


def _batches(cfg, model, n=None, batch_size=4):
    out = []
    for b in eval_batches(cfg.data, [TONE], "ctc", model.ctc_tokenizer, None, batch_size):
        out.append(b)
        if n is not None and len(out) == n:
            break
    return out


def test_ctc_model_forward_contract():
    cfg = _cfg()
    assert ctc_only(cfg)
    model = build_ctc_model(cfg)
    batch = _batches(cfg, model, 1)[0]
    assert batch.ctc_targets is not None and batch.prompt_prefix == [[]] * 4 and batch.answer == [[]] * 4
    assert batch.ctc_targets[0] == model.ctc_tokenizer.encode(batch.references[0])
    loss, n = model(batch, "ctc")
    assert torch.isfinite(loss) and n == sum(len(t) for t in batch.ctc_targets)
    loss.backward()
    assert model.encoder.ctc_head.out.weight.grad.abs().sum() > 0
    assert model.encoder.encoder.conv1.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="ctc mode only"):
        model(batch, "posterior")
    with pytest.raises(ValueError, match="ctc_targets"):
        model(SpeechBatch(**{**batch.__dict__, "ctc_targets": None}), "ctc")
    # decode maps ids through the same tokenizer object the CPS simulator uses
    assert len(model.decode(batch, beam=2)) == 4


def test_ctc_loss_on_logits_matches_torch_on_log_probs_and_checks_targets():
    torch.manual_seed(0)
    logits = (3 * torch.randn(2, 12, 5)).requires_grad_()
    lp = logits.log_softmax(-1)
    ref = torch.nn.functional.ctc_loss(lp.transpose(0, 1), torch.tensor([1, 2, 3, 4]), torch.tensor([12, 7]),
                                       torch.tensor([3, 1]), reduction="mean", zero_infinity=True)
    got = ctc_loss(logits, torch.tensor([12, 7]), [[1, 2, 3], [4]])
    torch.testing.assert_close(got, ref)
    (g_ref,) = torch.autograd.grad(ref, logits)
    (g_got,) = torch.autograd.grad(got, logits)
    torch.testing.assert_close(g_got, g_ref)
    # bf16 logits: the op promotes to fp32 itself
    torch.testing.assert_close(ctc_loss(logits.detach().bfloat16(), torch.tensor([12, 7]), [[1, 2, 3], [4]]),
                               ctc_loss(logits.detach().bfloat16().float(), torch.tensor([12, 7]), [[1, 2, 3], [4]]))
    with pytest.raises(ValueError, match="non-empty target"):
        ctc_loss(logits, torch.tensor([12, 7]), [[1], []])


@pytest.mark.parametrize("encoder", ["whisper", "tiny"])
def test_encoder_top_layers(encoder):
    cfg = _cfg(f"model.encoder.type={encoder}")
    model = build_ctc_model(cfg)
    regex = encoder_top_layers_regex(model, 1)
    summary = apply_freeze(model, ["ctc_head"], regex)
    names = set(summary["names"])
    body = model.encoder.encoder
    last = len(body.layers) - 1
    assert any(n.startswith(f"encoder.encoder.layers.{last}.") for n in names)
    assert not any(n.startswith("encoder.encoder.layers.0.") for n in names)
    norm = "layer_norm" if encoder == "whisper" else "norm"
    assert f"encoder.encoder.{norm}.weight" in names
    assert not any("conv" in n for n in names)
    assert all(n.startswith(("encoder.ctc_head.", f"encoder.encoder.layers.{last}.", f"encoder.encoder.{norm}."))
               for n in names)
    assert encoder_top_layers_regex(model, 0) == []
    with pytest.raises(ConfigError, match="encoder_top_layers"):
        encoder_top_layers_regex(model, last + 2)


def test_param_groups_separate_encoder_lr():
    model = build_ctc_model(_cfg())
    apply_freeze(model, ["encoder", "ctc_head"])
    groups = param_groups(model, 1e-3, {"encoder": 1e-4})
    assert [g["lr"] for g in groups] == [1e-3, 1e-4]      # the stage LR first: it is the one logged
    head = {id(p) for p in model.encoder.ctc_head.parameters()}
    assert {id(p) for p in groups[0]["params"]} == head
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert len(param_groups(model, 1e-3)) == 1


def test_config_checks():
    with pytest.raises(ConfigError, match="a ctc stage trains"):
        _cfg("stages.0.trainable=[projector]")
    with pytest.raises(ConfigError, match="data.n_mels"):
        _cfg("model.encoder.n_mels=128")
    with pytest.raises(ConfigError, match="encoder_lr"):
        _cfg("stages.0.encoder_lr=0")
    cfg = _cfg("model.encoder.n_mels=128", "data.n_mels=128", "model.encoder.true_length=false")
    model = build_ctc_model(cfg)
    assert model.encoder.n_mels == 128 and not model.encoder.true_length
    loss, _ = model(_batches(cfg, model, 1, 2)[0], "ctc")       # 128-mel features through the padded path
    assert torch.isfinite(loss)


def test_ctc_data_mode(tmp_path):
    cfg = _cfg()
    tok = build_ctc_model(cfg).ctc_tokenizer
    text = tmp_path / "t.txt"
    text.write_text("hello there\n")
    with pytest.raises(ConfigError, match="ctc mode trains on audio"):
        resolve_sources([str(text)], "ctc", "skip")
    plan = build_stages("ctc", cfg.data, tok, None, cfg.simulation)
    labels = plan.pre["audio"][1]
    with pytest.raises(SampleError, match="no_transcript"):
        labels({"meta": {"GT": " "}})
    with pytest.raises(SampleError, match="empty_ctc"):
        labels({"meta": {"GT": "123"}})
    with pytest.raises(SampleError, match="needs_audio"):
        plan.pre["text"][0]({"__key__": "k"})


@pytest.mark.parametrize("top_k", [None, 3])
def test_posterior_shards_roundtrip(tmp_path, top_k):
    cfg = _cfg()
    model = build_ctc_model(cfg).eval()
    batches = _batches(cfg, model, 2)
    index_path = export_posteriors(model, batches, tmp_path / "post", top_k=top_k, shard_size=3,
                                   meta={"model": "test"})
    index, _ = read_index(tmp_path / "post")
    assert index_path.name == "index.json" and index["total_samples"] == 8
    assert [s["samples"] for s in index["shards"]] == [3, 3, 2]
    assert index["layout"] == ("dense" if top_k is None else "topk") and index["vocab_size"] == 29
    assert index["units"] == model.ctc_tokenizer.units and index["meta"] == {"model": "test"}
    got = list(read_posteriors(tmp_path / "post"))
    keys = [k for b in batches for k in b.keys]
    assert [s.key for s in got] == keys
    with torch.no_grad():
        ref = [model.posteriors(b) for b in batches]
    ref_rows = [p.log_probs[i, : p.lengths[i]] for p in ref for i in range(p.batch_size)]
    for s, r in zip(got, ref_rows):
        assert s.log_probs.shape == r.shape
        torch.testing.assert_close(s.log_probs.exp().sum(-1), torch.ones(r.shape[0]), atol=2e-3, rtol=0)
        if top_k is None:
            torch.testing.assert_close(s.log_probs, r.half().float())
        else:
            vals, ids = r.topk(top_k, -1)
            torch.testing.assert_close(s.log_probs.gather(1, ids), vals.half().float())
        assert s.log_probs.argmax(-1).tolist() == r.argmax(-1).tolist() or top_k is None
    post = collate_posteriors(got[:4])
    assert greedy_decode(post.log_probs, post.lengths) == greedy_decode(ref[0].log_probs, ref[0].lengths)
    assert json.loads((tmp_path / "post" / "index.json").read_text())["format"] == "tasu-posteriors"


def test_expand_topk_spreads_the_rest():
    ids = torch.tensor([[2, 0]])
    logp = torch.tensor([[0.6, 0.3]]).log()
    out = expand_topk(ids, logp, 5).exp()
    torch.testing.assert_close(out, torch.tensor([[0.3, 0.1 / 3, 0.6, 0.1 / 3, 0.1 / 3]]))
