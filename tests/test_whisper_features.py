"""Whisper encoder in `features` mode (tiny shape): frozen, as LLaSO keeps it, or unfrozen by the stage's trainable
groups; hidden states (not the CTC head) feed the projector; both the true-length and the 30 s padded paths."""

import pytest
import torch

from tasu.config.loader import load_config
from tasu.model.build import build_speech_llm
from tasu.model.freeze import apply_freeze
from tasu.text.prompts import PromptBuilder
from tasu.types import SpeechBatch


def _batch(model, cfg, feats: torch.Tensor, lengths: list[int], texts=("the cat", "a dog runs")) -> SpeechBatch:
    pb = PromptBuilder.from_config(cfg.prompts, model.llm_tokenizer)
    parts = [pb.build("ASR", t) for t in texts]
    return SpeechBatch(keys=list(texts), tasks=["ASR"] * len(texts), prompt_prefix=[p.prefix for p in parts],
                       prompt_suffix=[p.suffix for p in parts], answer=[p.answer for p in parts],
                       references=list(texts), feats=feats, feat_lengths=torch.tensor(lengths))


def _grads(module) -> dict[str, bool]:
    return {n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in module.named_parameters()}


@pytest.mark.parametrize("true_length", [True, False])
def test_whisper_frozen_or_unfrozen_by_trainable_groups(tmp_path, true_length):
    cfg = load_config("llaso-tiny", [f"output_dir={tmp_path}/r", f"model.encoder.true_length={true_length}"])
    torch.manual_seed(0)
    model = build_speech_llm(cfg)
    assert type(model.encoder).__name__ == "WhisperCTCEncoder" and model.encoder.hidden_size == 64
    assert model.projector.in_dim == 64 and model.projector.activation == "gelu" and model.projector.stack == 2
    batch = _batch(model, cfg, torch.randn(2, 50, 80), [50, 37])

    apply_freeze(model, ["projector"])                                        # LLaSO: Whisper frozen
    model(batch, "features")[0].backward()
    assert not any(_grads(model.encoder).values())
    assert all(_grads(model.projector).values())
    model.zero_grad(set_to_none=True)

    summary = apply_freeze(model, ["encoder", "projector"])                   # unfrozen by config
    assert summary["trainable"]["encoder"] > 0
    model(batch, "features")[0].backward()
    body = {n: g for n, g in _grads(model.encoder).items() if n.startswith("encoder.")}
    assert all(g for n, g in body.items() if "embed_positions" not in n), [n for n, g in body.items() if not g]
    # the CTC head does not feed the projector in features mode (and no CTC loss is configured): no gradient
    assert not any(g for n, g in _grads(model.encoder).items() if n.startswith("ctc_head."))
    model.zero_grad(set_to_none=True)


def test_whisper_features_do_not_depend_on_the_rest_of_the_batch(tmp_path):
    cfg = load_config("llaso-tiny", [f"output_dir={tmp_path}/r"])
    torch.manual_seed(0)
    model = build_speech_llm(cfg).eval()
    feats = torch.randn(2, 60, 80)
    both = _batch(model, cfg, feats, [60, 31])
    emb, n = model.speech_embeddings(both, "features")
    assert n.tolist() == [15, 8]                                              # ceil(ceil(F / 2) / 2)
    emb1, _ = model.speech_embeddings(_batch(model, cfg, feats[1:, :31], [31], ("a dog runs",)), "features")
    assert torch.allclose(emb[1, :8], emb1[0, :8], atol=1e-5)
