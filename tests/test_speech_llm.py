"""SpeechLLM: splicing, label masking, loss, and batched vs one-by-one decoding."""

import pytest
import torch

from tasu.model.build import build_speech_llm
from tasu.model.speech_llm import IGNORE_INDEX

from .helpers import text_batch, tiny_config

SENTS = ["the cat sees a letter", "we need the blue sea today", "he reads"]


@pytest.fixture(scope="module")
def model_and_cfg(tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("m"))
    torch.manual_seed(0)
    return build_speech_llm(cfg).eval(), cfg


def test_splice_layout_and_labels(model_and_cfg):
    model, cfg = model_and_cfg
    batch = text_batch(model, SENTS, cfg)
    speech, lengths = model.speech_embeddings(batch, "simulated")
    assert speech.shape[0] == 3 and speech.shape[-1] == model.llm.config.hidden_size
    assert torch.equal(lengths, batch.posteriors.lengths)
    x = model.splice(batch, speech, lengths)
    for i in range(3):
        n = len(batch.prompt_prefix[i]) + int(lengths[i]) + len(batch.prompt_suffix[i]) + len(batch.answer[i])
        assert int(x.attention_mask[i].sum()) == n
        assert x.attention_mask[i, :n].all()                       # right padding
        labelled = x.labels[i][x.labels[i] != IGNORE_INDEX].tolist()
        assert labelled == batch.answer[i]                          # loss on the answer only
        assert x.labels[i, n - len(batch.answer[i]):n].tolist() == batch.answer[i]
    left = model.splice(batch, speech, lengths, left_pad=True)
    assert left.attention_mask[:, -1].all()                          # left padding for generation


def test_loss_is_finite_and_has_grad_on_projector(model_and_cfg):
    model, cfg = model_and_cfg
    batch = text_batch(model, SENTS, cfg)
    loss, n_tok = model(batch, "simulated")
    assert torch.isfinite(loss) and n_tok == sum(len(a) for a in batch.answer)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.projector.parameters())
    model.zero_grad(set_to_none=True)


def test_answer_only_logits_give_the_full_llm_loss_and_grads(model_and_cfg, monkeypatch):
    """The LM head on answer positions only must equal the loss of the whole LLM's logits (what it replaces)."""
    model, cfg = model_and_cfg
    assert model._decoder_and_head()[0] is not None                # the tiny Llama takes the answer-only path
    batch = text_batch(model, SENTS, cfg)
    results = []
    for answer_only in (True, False):
        if not answer_only:                                        # the fallback: the whole LLM's logits
            monkeypatch.setattr(model, "_decoder_and_head", lambda: (None, None))
        loss, n_tok = model(batch, "simulated")
        grads = torch.autograd.grad(loss, list(model.projector.parameters()))
        results.append((loss.detach(), n_tok, grads))
    monkeypatch.undo()
    (fast, n_fast, g_fast), (full, n_full, g_full) = results
    assert n_fast == n_full == sum(len(a) for a in batch.answer)
    torch.testing.assert_close(fast, full, rtol=1e-6, atol=1e-6)
    for a, b in zip(g_fast, g_full):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("beams", [1, 3])
def test_batched_generation_equals_one_by_one(model_and_cfg, beams):
    model, cfg = model_and_cfg
    batch = text_batch(model, SENTS, cfg, with_answer=False)
    together = model.generate(batch, "simulated", max_new_tokens=12, num_beams=beams)
    alone = [model.generate(text_batch(model, [s], cfg, with_answer=False), "simulated", max_new_tokens=12,
                            num_beams=beams)[0] for s in SENTS]
    assert together == alone


def test_repetition_controls_reach_generation(model_and_cfg, monkeypatch):
    """eval.no_repeat_ngram_size / repetition_penalty are passed to the LLM's generate only when set, and act."""
    model, cfg = model_and_cfg
    batch = text_batch(model, SENTS, cfg, with_answer=False)
    seen, orig = [], model.llm.generate

    def spy(**kw):
        out = orig(**kw)
        seen.append((kw, out))
        return out

    monkeypatch.setattr(model.llm, "generate", spy)
    model.generate(batch, "simulated", max_new_tokens=24)
    assert "no_repeat_ngram_size" not in seen[-1][0] and "repetition_penalty" not in seen[-1][0]
    model.generate(batch, "simulated", max_new_tokens=24, no_repeat_ngram_size=1, repetition_penalty=1.3)
    kw, out = seen[-1]
    assert kw["no_repeat_ngram_size"] == 1 and kw["repetition_penalty"] == 1.3
    stop = {model.llm_tokenizer.pad_token_id, model.llm_tokenizer.eos_token_id}
    for row in out.tolist():                       # unigrams may not repeat: every generated id is new
        ids = [i for i in row if i not in stop]
        assert len(ids) == len(set(ids)), row


def test_text_batch_without_posteriors_is_rejected(model_and_cfg):
    model, cfg = model_and_cfg
    batch = text_batch(model, SENTS[:1], cfg)
    batch.posteriors = None
    with pytest.raises(ValueError, match="posteriors"):
        model(batch, "simulated")
