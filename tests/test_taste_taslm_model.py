"""TaslmModel: the joint text/speech row layout (bos, delay, eos), the loss against its log-likelihoods, and the
selection scorers."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tasu.taste.taslm import PAD_CODE
from tasu.taste.taslm_model import IGNORE, TaslmModel, continuation_scores, speech_selection_scores

BOS, EOS, PAD = 1, 2, 0


def _model(delay: int = 1, lora: bool = False) -> TaslmModel:
    torch.manual_seed(0)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=24, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=2))
    if lora:
        from peft import LoraConfig, get_peft_model

        llm = get_peft_model(llm, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    return TaslmModel(llm, num_codebooks=2, codebook_size=5, delay=delay, bos_id=BOS, eos_id=EOS, pad_id=PAD,
                      w_text=0.5, w_speech=2.0)


def _batch():
    text = torch.tensor([[5, 6, 7], [8, 9, PAD]])
    lengths = torch.tensor([3, 2])
    codes = torch.tensor([[[1, 1], [2, 2], [3, 3]], [[4, 4], [0, 1], [PAD_CODE, PAD_CODE]]])
    return text, lengths, codes


def test_row_layout_with_delay_two():
    q = _model(delay=2).sequences(*_batch())
    p = PAD_CODE
    # row 0: bos t0 t1 t2 eos | speech c0 at position 1 + 2 = 3; S = 1 + max(4, 5) = 6 (inputs / targets: 5)
    assert q["text"][0].tolist() == [BOS, 5, 6, 7, EOS]
    assert q["speech"][0].tolist() == [[p, p], [p, p], [p, p], [1, 1], [2, 2]]
    assert q["text_targets"][0].tolist() == [5, 6, 7, EOS, IGNORE]
    assert q["speech_targets"][0].tolist() == [[p, p], [p, p], [1, 1], [2, 2], [3, 3]]
    assert q["attention"][0].tolist() == [1, 1, 1, 1, 1]
    # row 1 (2 tokens): its row is 1 + max(3, 4) = 5 long (the batch's 6); its last code is the last target
    assert q["text"][1].tolist() == [BOS, 8, 9, EOS, PAD]
    assert q["text_targets"][1].tolist() == [8, 9, EOS, IGNORE, IGNORE]
    assert q["speech_targets"][1].tolist() == [[p, p], [p, p], [4, 4], [0, 1], [p, p]]
    assert q["attention"][1].tolist() == [1, 1, 1, 1, 1]
    # a 1-token row beside it: 1 + max(2, 3) = 4 positions, the rest is masked padding
    text, _, codes = _batch()
    q = _model(delay=2).sequences(text, torch.tensor([3, 1]), codes)
    assert q["attention"][1].tolist() == [1, 1, 1, 1, 0]
    assert q["text_targets"][1].tolist() == [8, EOS, IGNORE, IGNORE, IGNORE]
    assert q["speech_targets"][1].tolist() == [[p, p], [p, p], [4, 4], [p, p], [p, p]]


@pytest.mark.parametrize("lora", [False, True])
def test_loss_is_the_weighted_mean_of_the_log_likelihoods(lora):
    m = _model(lora=lora)
    batch = _batch()
    out = m(*batch)
    text_ll, speech_ll = m.log_likelihoods(*batch)
    q = m.sequences(*batch)
    n_text = int((q["text_targets"] != IGNORE).sum())
    n_speech = int((q["speech_targets"][..., 0] >= 0).sum())        # both codebooks have the same targets here
    assert torch.isclose(out.text, -text_ll.sum() / n_text, atol=1e-5)
    assert torch.isclose(out.speech, -speech_ll.sum() / (2 * n_speech), atol=1e-5)
    assert torch.isclose(out.total, 0.5 * out.text + 2.0 * out.speech)
    out.total.backward()
    trained = [n for n, p in m.named_parameters() if p.grad is not None]
    assert any(n.startswith("speech_embed.") for n in trained) and any(n.startswith("speech_heads.") for n in trained)
    if lora:
        assert any("lora_" in n for n in trained)


def test_selection_scores():
    m = _model()
    text, lengths, codes = _batch()
    s = speech_selection_scores(m, text, lengths, codes, 3, torch.Generator().manual_seed(0))
    assert s.shape == (2, 3)
    tl, sl = m.log_likelihoods(text, lengths, codes)
    assert torch.allclose(s[:, 0], tl.sum(1) + sl.sum(1), atol=1e-5)          # candidate 0: the true codes
    c, keep = continuation_scores(m, text, lengths, codes, 2)
    assert c.shape == (2, 2) and keep.all() and torch.isfinite(c).all() and (c < 0).all()
    with pytest.raises(ValueError, match="need >= 3"):
        continuation_scores(m, text, lengths, codes, 3)
    with pytest.raises(ValueError, match="delay"):
        TaslmModel(m.llm, 2, 5, delay=0, bos_id=BOS, eos_id=EOS, pad_id=PAD)
