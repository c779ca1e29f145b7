"""LLaSO prompting and splicing: a record's own human turn, the three modality configurations, several <audio> in one
turn in order, audio wrapper tokens (added, mean-initialised, trainable by freeze group), loss on the answer only,
and the LLM length guard after the speech is expanded."""

import pytest
import torch

from tasu.config.loader import load_config
from tasu.model.audio_tokens import add_audio_tokens
from tasu.model.build import build_speech_llm
from tasu.model.freeze import apply_freeze
from tasu.model.llm import build_tiny_llm, build_tiny_tokenizer
from tasu.model.speech_llm import IGNORE_INDEX
from tasu.text.prompts import PromptBuilder
from tasu.types import SpeechBatch

BOS, EOS = "<|audio_bos|>", "<|audio_eos|>"


@pytest.fixture(scope="module")
def model_cfg(tmp_path_factory):
    cfg = load_config("llaso-tiny", [f"output_dir={tmp_path_factory.mktemp('m')}/run"])
    torch.manual_seed(0)
    return build_speech_llm(cfg).eval(), cfg


@pytest.fixture(scope="module")
def pb(model_cfg):
    model, cfg = model_cfg
    return PromptBuilder.from_config(cfg.prompts, model.llm_tokenizer)


def _ids(tok, *tokens):
    return [tok.convert_tokens_to_ids(t) for t in tokens]


def _whole_turn(tok, human: str) -> list[int]:
    """The turn tokenised in one go with each <audio> written as the wrapper pair (an independent reference)."""
    text = tok.apply_chat_template([{"role": "user", "content": human}], tokenize=False, add_generation_prompt=True)
    return tok.encode(text.replace("<audio>", BOS + EOS), add_special_tokens=False)


@pytest.mark.parametrize("human, before, after", [
    ("Transcribe the audio. <audio>", "transcribe the audio", ""),          # text instruction + audio
    ("<audio> the cat sees a letter", "", "the cat sees a letter"),         # audio instruction + text
    ("<audio>", "", ""),                                                    # pure audio
])
def test_modality_configurations_place_the_speech_where_the_tag_is(pb, model_cfg, human, before, after):
    tok = model_cfg[0].llm_tokenizer
    bos, eos = _ids(tok, BOS, EOS)
    p = pb.build_turn(human, "yes")
    assert p.middle == [] and p.prefix[-1] == bos and p.suffix[0] == eos
    assert p.prefix + p.suffix == _whole_turn(tok, human)                   # nothing lost, nothing added
    text_before = tok.decode(p.prefix, skip_special_tokens=True).lower()
    text_after = tok.decode(p.suffix, skip_special_tokens=True).lower()
    assert (before in text_before) and (after == "" or after not in text_before)
    assert (after in text_after) and (before == "" or before not in text_after)
    assert p.answer == tok.encode("yes", add_special_tokens=False) + [tok.eos_token_id]
    assert pb.build_turn(human, None).answer == []                           # generation: no answer ids


def test_several_audio_tags_give_ordered_segments_with_middle_pieces(pb, model_cfg):
    tok = model_cfg[0].llm_tokenizer
    bos, eos = _ids(tok, BOS, EOS)
    human = "Compare <audio> with <audio> and then <audio> please"
    p = pb.build_turn(human, "first")
    assert len(p.middle) == 2
    assert all(m[0] == eos and m[-1] == bos for m in p.middle)
    assert "with" in tok.decode(p.middle[0]) and "and then" in tok.decode(p.middle[1])
    assert p.prefix + [x for m in p.middle for x in m] + p.suffix == _whole_turn(tok, human)


def test_task_prompts_get_the_wrappers_too_and_no_wrapper_config_keeps_the_old_prompt(pb, model_cfg):
    tok = model_cfg[0].llm_tokenizer
    bos, eos = _ids(tok, BOS, EOS)
    p = pb.build("ASR", "hello")
    assert p.prefix[-1] == bos and p.suffix[0] == eos and p.middle == []
    plain = PromptBuilder(tok, pb.prompts).build("ASR", "hello")
    assert plain.prefix == p.prefix[:-1] and plain.suffix == p.suffix[1:]
    with pytest.raises(ValueError, match="no <audio>"):
        pb.build_turn("no tag here", "x")


def _batch(pb, turns: list[str], answers: list[str | None], counts: list[int]) -> SpeechBatch:
    parts = [pb.build_turn(h, a) for h, a in zip(turns, answers)]
    return SpeechBatch(keys=[f"k{i}" for i in range(len(turns))], tasks=["t"] * len(turns),
                       prompt_prefix=[p.prefix for p in parts], prompt_suffix=[p.suffix for p in parts],
                       answer=[p.answer for p in parts], references=[a or "" for a in answers],
                       speech_counts=counts, prompt_middle=[p.middle for p in parts])


def test_splice_interleaves_segments_in_order_and_labels_only_the_answer(pb, model_cfg):
    model, _ = model_cfg
    h = model.llm.config.hidden_size
    batch = _batch(pb, ["Compare <audio> with <audio>", "<audio>"], ["first", "two"], [2, 1])
    lengths = torch.tensor([3, 2, 4])
    speech = torch.stack([torch.full((4, h), float(r + 1)) for r in range(3)])   # row r filled with r + 1
    x = model.splice(batch, speech, lengths)
    assert x.speech_frames.tolist() == [5, 4]
    emb = model.embed_tokens.weight
    seq = x.embeds[0]
    p0, m0 = batch.prompt_prefix[0], batch.prompt_middle[0][0]
    a = len(p0)
    assert torch.all(seq[a:a + 3] == 1.0)                                   # segment 0, its 3 frames
    assert torch.allclose(seq[a + 3], emb[m0[0]] + model.audio_tokens.delta[1])   # <|audio_eos|> starts middle
    b = a + 3 + len(m0)
    assert torch.all(seq[b:b + 2] == 2.0)                                   # segment 1 after the middle piece
    assert torch.all(x.embeds[1, len(batch.prompt_prefix[1]):len(batch.prompt_prefix[1]) + 4] == 3.0)
    for i in range(2):
        n = int(x.attention_mask[i].sum())
        assert x.labels[i][x.labels[i] != IGNORE_INDEX].tolist() == batch.answer[i]
        assert x.labels[i, n - len(batch.answer[i]):n].tolist() == batch.answer[i]
    with pytest.raises(ValueError, match="speech rows"):
        model.splice(batch, speech[:2], lengths[:2])


def test_loss_and_generation_with_segments(pb, model_cfg):
    model, _ = model_cfg
    tok = model.llm_tokenizer
    batch = _batch(pb, ["Compare <audio> with <audio>", "Is it fast? <audio>"], ["first", "slow"], [2, 1])
    batch.feats = torch.randn(3, 40, 80)
    batch.feat_lengths = torch.tensor([40, 25, 33])
    loss, n_tok = model(batch, "features")
    assert torch.isfinite(loss) and n_tok == len(batch.answer[0]) + len(batch.answer[1])
    gen = _batch(pb, ["Compare <audio> with <audio>", "Is it fast? <audio>"], [None, None], [2, 1])
    gen.feats, gen.feat_lengths = batch.feats, batch.feat_lengths
    together = model.generate(gen, "features", max_new_tokens=6)
    alone = [model.generate(_one(gen, i, rows), "features", max_new_tokens=6)[0]
             for i, rows in ((0, slice(0, 2)), (1, slice(2, 3)))]
    assert together == alone and all(isinstance(s, str) for s in together)
    assert all(BOS not in s and EOS not in s for s in together) and tok is model.llm_tokenizer


def _one(b: SpeechBatch, i: int, rows: slice) -> SpeechBatch:
    return SpeechBatch(keys=[b.keys[i]], tasks=[b.tasks[i]], prompt_prefix=[b.prompt_prefix[i]],
                       prompt_suffix=[b.prompt_suffix[i]], answer=[b.answer[i]], references=[b.references[i]],
                       feats=b.feats[rows], feat_lengths=b.feat_lengths[rows], speech_counts=[b.speech_counts[i]],
                       prompt_middle=[b.prompt_middle[i]])


def test_wrapper_embeddings_train_only_with_their_group(pb, model_cfg):
    model, _ = model_cfg
    batch = _batch(pb, ["Is it fast? <audio>"], ["slow"], [1])
    batch.feats, batch.feat_lengths = torch.randn(1, 30, 80), torch.tensor([30])
    for groups, trained in ((["projector"], False), (["projector", "audio_tokens"], True)):
        apply_freeze(model, groups)
        model.zero_grad(set_to_none=True)
        model(batch, "features")[0].backward()
        g = model.audio_tokens.delta.grad
        assert (g is not None and bool(g.abs().sum() > 0)) == trained
        assert model.projector.fc1.weight.grad is not None
        assert all(p.grad is None for p in model.llm.parameters())          # the LLM stays frozen
    model.zero_grad(set_to_none=True)


def test_audio_tokens_are_added_once_with_mean_rows(tmp_path):
    from tasu.config.loader import resolve_path

    tok = build_tiny_tokenizer(resolve_path("pkg://assets/tiny_text.txt"), 64)
    llm = build_tiny_llm(load_config("tiny").model.llm, tok, 0)
    old = llm.get_input_embeddings().weight.detach().clone()                   # [64, H]
    ids = add_audio_tokens(llm, tok, [BOS, EOS])
    assert ids == [64, 65] and len(tok) == 66
    w = llm.get_input_embeddings().weight
    assert w.shape[0] == 66 and torch.equal(w[:64], old)
    assert torch.allclose(w[64], old.mean(0)) and torch.allclose(w[65], old.mean(0))
    assert llm.get_output_embeddings().weight.shape[0] == 66                  # tied head grew with it
    assert add_audio_tokens(llm, tok, [BOS, EOS]) == ids and len(tok) == 66   # present: nothing added
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path).encode(BOS, add_special_tokens=False) == [64]
    assert tok.decode([64, 10, 65], skip_special_tokens=True) == tok.decode([10], skip_special_tokens=True)


def test_length_guard_names_the_sample_and_the_length(pb, model_cfg):
    model, _ = model_cfg
    limit = model.max_positions
    batch = _batch(pb, ["Is it fast? <audio>"], ["slow"], [1])
    h = model.llm.config.hidden_size
    with pytest.raises(ValueError, match=r"sample 'k0'.*max_position_embeddings " + str(limit)):
        model.splice(batch, torch.zeros(1, limit, h), torch.tensor([limit]))
