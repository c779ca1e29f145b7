"""The model's training path runs through tasu.kernels.get_op, and `kernels.impl` decides which implementation.

For each input mode: the ops the forward + backward fetch are recorded (simulated -> sim_project; posterior ->
ctc_loss and psd_compress; lego -> ctc_loss, psd_compress and posterior_embed), and the loss and the gradients of
the trainable parameters under the vectorised CPU kernels equal those under the reference implementations
(forced through the config key kernels.impl, which the model builder applies).
"""

from __future__ import annotations

import pytest
import torch

from tasu.kernels import KernelsConfig, configure, dispatch
from tasu.model.build import build_speech_llm

from .helpers import text_batch, tiny_config

SENTS = ["the cat sees a letter", "we need the blue sea today", "he reads"]
MODES = {
    "simulated": ([], {"sim_project"}),
    "posterior": (["model.encoder.type=tiny", "model.encoder.ctc_weight=1.0", "psd.blank_threshold=0.5"],
                  {"ctc_loss", "psd_compress"}),
    "lego": (["model.encoder.type=tiny", "model.encoder.ctc_weight=1.0", "psd.blank_threshold=0.5",
              "model.projector.type=lego", "model.ctc_tokenizer.type=llm"],
             {"ctc_loss", "psd_compress", "posterior_embed"}),
}


@pytest.fixture(autouse=True)
def default_kernels():
    yield
    configure(KernelsConfig())          # the builder sets a process-wide selection: do not leak it


class Recorder:
    """Wraps dispatch._load: every (op, implementation family) that get_op hands out."""

    def __init__(self, monkeypatch):
        self.seen: set[tuple[str, str]] = set()
        load = dispatch._load
        table = {target: (op, fam) for op, fams in dispatch._TABLE.items() for fam, target in fams.items()}

        def spy(target):
            self.seen.add(table[target])
            return load(target)

        monkeypatch.setattr(dispatch, "_load", spy)


def _batch(model, cfg, mode: str):
    batch = text_batch(model, SENTS, cfg)
    if mode == "simulated":
        return batch
    g = torch.Generator().manual_seed(7)
    n_mels = model.encoder.n_mels
    batch.posteriors = None
    batch.feats = torch.randn(len(SENTS), 48, n_mels, generator=g)
    batch.feat_lengths = torch.tensor([48, 40, 33])
    batch.ctc_targets = [model.ctc_tokenizer.encode(s)[:10] for s in SENTS]
    return batch


def _loss_and_grads(model, batch, mode):
    model.zero_grad(set_to_none=True)
    loss, _ = model(batch, mode)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


@pytest.mark.parametrize("mode", list(MODES))
def test_model_path_uses_the_kernel_ops_and_reference_gives_the_same_loss(tmp_path, monkeypatch, mode):
    overrides, ops = MODES[mode]
    cfg = tiny_config(tmp_path, f"stages.0.mode={mode}", "kernels.impl=reference", *overrides)
    torch.manual_seed(0)
    model = build_speech_llm(cfg).train()
    assert dispatch.configured_impl() == "reference"            # the builder applied kernels.impl
    for p in model.parameters():                                # gradients everywhere the kernels feed
        p.requires_grad_(True)
    if model.encoder is not None:
        with torch.no_grad():                                   # a blank-heavy encoder: PSD drops and merges
            model.encoder.ctc_head.out.bias[0] += 4.0
    batch = _batch(model, cfg, mode)

    rec = Recorder(monkeypatch)
    ref_loss, ref_grads = _loss_and_grads(model, batch, mode)
    assert {op for op, fam in rec.seen if fam == "reference"} == ops

    configure(KernelsConfig(impl="cpu"))
    rec.seen.clear()
    loss, grads = _loss_and_grads(model, batch, mode)
    assert {op for op, fam in rec.seen if fam == "cpu"} == ops and all(fam == "cpu" for _, fam in rec.seen)

    assert torch.isfinite(loss)
    assert abs(float(loss) - float(ref_loss)) <= 1e-5 * abs(float(ref_loss))
    assert grads.keys() == ref_grads.keys() and grads
    for name, g in grads.items():
        r = ref_grads[name]
        err = float((g - r).abs().max()) / max(float(r.abs().max()), 1e-12)
        assert err <= 1e-4, f"{mode}: gradient of {name} differs by {err:.2e} (relative)"
    if mode != "simulated":                                     # PSD really compressed something
        post = model.encode(batch, mode)
        assert int(post.lengths.sum()) < int(batch.feat_lengths.sum())
