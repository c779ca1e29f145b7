"""TASTE stage tasks: what a stage builds, how a step computes its loss, what it carries on and evaluates.

    TokenizerTask   taste_text / taste_novq / taste_vq: `TasteAutoencoder(mode)` reconstructing units
    TaslmTask       taslm: the corpus tokenized by the trained tokenizer, then `TaslmModel` (LLM + LoRA + speech
                    embedding + per-codebook heads)
Each task has `model`, `step(engine, batch) -> (loss, logged floats)`, `carry(module) -> extra tensors` and
`evaluate(module, corpus) -> metrics` (rank 0). Weights move between stages by name prefix (`load_component`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tasu.config.fields import ConfigError
from tasu.taste.data import Utterance, eval_batches
from tasu.taste.layers import lengths_to_mask
from tasu.taste.metrics import bitrate, next_speech_selection_accuracy, tokens_per_second, unit_accuracy
from tasu.taste.model import TasteAutoencoder
from tasu.taste.taslm_model import TaslmModel, continuation_scores, speech_selection_scores

TOKENIZER_PREFIXES = ("aggregator.", "rvq.", "unit_decoder.")
TASLM_PREFIXES = ("llm.", "speech_embed.", "speech_heads.")
ENCODER_PREFIX = "encoder."


@dataclass
class Corpus:
    """Tokenized, encoded utterances: `train` is this rank's share; `eval` is filled on rank 0 only."""

    tokenizer: object
    pad_id: int
    train: list[Utterance]
    eval: list[Utterance]
    eval_name: str
    encoder_dim: int


def load_component(model: torch.nn.Module, weights: dict, prefixes: tuple[str, ...], source) -> int:
    """Copy the tensors of `weights` under `prefixes` into model (parameters and buffers); returns how many.
    Names outside every TASTE component are an error naming `source`."""
    known = TOKENIZER_PREFIXES + TASLM_PREFIXES + (ENCODER_PREFIX,)
    foreign = sorted(k for k in weights if not k.startswith(known))
    if foreign:
        raise ValueError(f"{source}: weights {foreign[:5]} belong to no TASTE component (encoder, tokenizer, TASLM)")
    own = model.state_dict()
    mine = {k: v for k, v in weights.items() if k.startswith(prefixes)}
    unknown = sorted(k for k, v in mine.items() if k not in own or own[k].shape != v.shape)
    if unknown:
        raise ValueError(f"{source}: weights {unknown[:5]} do not fit the model built from the config (missing or "
                         "of another shape)")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in mine.items()}, strict=False)
    return len(mine)


class TokenizerTask:
    """taste_text / taste_novq / taste_vq: the TASTE autoencoder reconstructing units."""

    def __init__(self, cfg, stage, corpus: Corpus, prev: dict, prev_path):
        self.cfg, self.mode = cfg, stage.mode[len("taste_"):]
        self.model = TasteAutoencoder(cfg.taste, len(corpus.tokenizer), corpus.encoder_dim, corpus.encoder_dim)
        load_component(self.model, prev, TOKENIZER_PREFIXES, prev_path)

    def step(self, engine, batch) -> tuple[torch.Tensor, dict[str, float]]:
        out = engine.forward(**batch.tokenizer_inputs(), mode=self.mode)
        mask = lengths_to_mask(batch.unit_lengths, batch.units.shape[1], "unit_lengths")
        parts = {"unit_loss": out.unit_loss.item(), "commit_loss": out.commit_loss.item(),
                 "length_loss": out.length_loss.item(),
                 "unit_acc": unit_accuracy(out.logits.detach().argmax(-1), batch.units, mask)}
        if out.rvq is not None:
            parts["rvq_perplexity"] = float(out.rvq.perplexity.mean())
            parts["rvq_used"] = float(out.rvq.used_fraction.mean())
        return out.loss, parts

    def carry(self, module) -> dict[str, torch.Tensor]:
        """Buffers to pass on besides the trained parameters: the RVQ codebooks once a vq stage trained them."""
        if self.mode != "vq":
            return {}
        return {f"rvq.{k}": v.detach().cpu().clone() for k, v in module.rvq.state_dict().items()}

    @torch.no_grad()
    def evaluate(self, module, corpus: Corpus) -> dict:
        was = module.training
        module.eval()
        hit = total = 0
        loss = 0.0
        for batch in eval_batches(corpus.eval, self.cfg.eval.batch_size, corpus.pad_id):
            batch = batch.to(next(module.parameters()).device)
            out = module(**batch.tokenizer_inputs(), mode=self.mode)
            mask = lengths_to_mask(batch.unit_lengths, batch.units.shape[1], "unit_lengths")
            hit += int(((out.logits.argmax(-1) == batch.units) & mask).sum())
            total += int(mask.sum())
            loss += float(out.unit_loss) * int(mask.sum())
        module.train(was)
        res = {"eval_set": corpus.eval_name, "utterances": len(corpus.eval), "unit_acc": hit / total,
               "unit_loss": loss / total}
        res.update(rate_metrics(self.cfg.taste, corpus.eval))
        if self.mode == "vq":
            res["rvq_initialised"] = bool(module.rvq.is_initialised)
        return res


class TaslmTask:
    """taslm: LLM (+ LoRA) over text tokens and the tokenizer's codes."""

    def __init__(self, cfg, stage, corpus: Corpus, prev: dict, prev_path, seed: int):
        from tasu.model.llm import apply_lora, load_llm

        self.cfg = cfg
        tokenize_corpus(cfg, corpus, prev, prev_path)
        llm, llm_tok = load_llm(cfg.model.llm, seed)
        if llm_tok.get_vocab() != corpus.tokenizer.get_vocab():
            raise ConfigError("config key 'model.llm': the LLM's tokenizer differs from the one the TASTE data was "
                              "tokenized with")
        t = cfg.taste
        eos = llm_tok.eos_token_id
        bos = llm_tok.bos_token_id if llm_tok.bos_token_id is not None else eos
        self.model = TaslmModel(apply_lora(llm, cfg.model.lora), t.codebooks, t.codebook_size, t.delay, bos, eos,
                                corpus.pad_id, t.text_loss_weight, t.speech_loss_weight)
        load_component(self.model, prev, TASLM_PREFIXES, prev_path)

    def step(self, engine, batch) -> tuple[torch.Tensor, dict[str, float]]:
        out = engine.forward(batch.text_ids, batch.text_lengths, batch.codes)
        return out.total, {"text_loss": out.text.item(), "speech_loss": out.speech.item()}

    def carry(self, module) -> dict[str, torch.Tensor]:
        return {}

    @torch.no_grad()
    def evaluate(self, module, corpus: Corpus) -> dict:
        was = module.training
        module.eval()
        c = self.cfg.taste.selection_candidates
        g = torch.Generator().manual_seed(self.cfg.train.seed)
        dev = next(module.parameters()).device
        text = speech = 0.0
        n_batches = 0
        sel, cont = [], []
        for batch in eval_batches(corpus.eval, max(self.cfg.eval.batch_size, c), corpus.pad_id):
            batch = batch.to(dev)
            out = module(batch.text_ids, batch.text_lengths, batch.codes)
            text, speech, n_batches = text + float(out.text), speech + float(out.speech), n_batches + 1
            sel.append(speech_selection_scores(module, batch.text_ids, batch.text_lengths, batch.codes, c, g))
            if int((batch.text_lengths >= 2).sum()) >= c:
                cont.append(continuation_scores(module, batch.text_ids, batch.text_lengths, batch.codes, c)[0])
        module.train(was)
        sel_t = torch.cat(sel)
        res = {"eval_set": corpus.eval_name, "utterances": len(corpus.eval), "text_ce": text / n_batches,
               "speech_ce": speech / n_batches, "candidates": c, "chance": 1.0 / c,
               "speech_selection_acc": next_speech_selection_accuracy(sel_t, torch.zeros(len(sel_t), dtype=torch.long))}
        if cont:
            cont_t = torch.cat(cont)
            res["next_speech_selection_acc"] = next_speech_selection_accuracy(
                cont_t, torch.zeros(len(cont_t), dtype=torch.long))
        res.update(rate_metrics(self.cfg.taste, corpus.eval))
        return res


def rate_metrics(t, utts: list[Utterance]) -> dict:
    """Speech tokens (one per text token) per second of audio, and the bitrate of their N x log2(K) bit codes."""
    tps = tokens_per_second([len(u.text_ids) for u in utts], [u.seconds for u in utts])
    return {"speech_tokens_per_s": tps, "bitrate_bps": bitrate([t.codebook_size] * t.codebooks, tps)}


def require_tokenizer(prev: dict, prev_path) -> None:
    """A taslm stage's starting weights must hold a trained tokenizer (initialised RVQ codebooks)."""
    initted = prev.get("rvq.initted")
    if initted is None or not bool(initted):
        raise ConfigError("config key 'stages': a taslm stage needs a trained TASTE tokenizer: a finished taste_vq "
                          f"stage before it (or train.init_from such a run); {prev_path or 'no earlier weights'} "
                          "holds no initialised RVQ codebooks")


def tokenize_corpus(cfg, corpus: Corpus, prev: dict, prev_path) -> None:
    """utt.codes [L, N] for every utterance, from the tokenizer trained by an earlier taste_vq stage."""
    require_tokenizer(prev, prev_path)
    model = TasteAutoencoder(cfg.taste, len(corpus.tokenizer), corpus.encoder_dim, corpus.encoder_dim)
    load_component(model, prev, TOKENIZER_PREFIXES, prev_path)
    groups = [corpus.train] + ([corpus.eval] if corpus.eval is not corpus.train else [])
    for utts in groups:
        for s in range(0, len(utts), cfg.eval.batch_size):
            chunk = utts[s:s + cfg.eval.batch_size]
            b = next(eval_batches(chunk, len(chunk), corpus.pad_id))
            codes = model.tokenize(b.text_ids, b.text_lengths, b.keys, b.values, b.frame_lengths, b.word_ids)
            for i, u in enumerate(chunk):
                u.codes = codes[i, : len(u.text_ids)].clone()
