"""The causal LLM: any local HF `AutoModelForCausalLM` folder, or a tiny Llama preset built from a config.

The tiny preset trains a byte-free BPE tokenizer on a small text file (ChatML template, like SmolLM2/Qwen) and can
pre-train the tiny LLM on that text for a few hundred steps so that "frozen LLM" tests have a real language model
to align to. Everything is deterministic given the seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path

import torch

from tasu.config.fields import ConfigError
from tasu.config.loader import resolve_path
from tasu.model.config import LLMConfig, LoRAConfig

log = logging.getLogger("tasu.model")

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<|im_start|>", "<|im_end|>", "<unk>"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def read_lines(path: str) -> list[str]:
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    return [ln for ln in lines if ln]


def build_tiny_tokenizer(text_file: str, vocab_size: int):
    """A small BPE tokenizer trained on `text_file` (whitespace-aware, ChatML specials)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    lines = read_lines(text_file)
    if not lines:
        raise ConfigError(f"config key 'model.llm.tokenizer_text': no text in {text_file}")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=list("abcdefghijklmnopqrstuvwxyz'ABCDEFGHIJKLMNOPQRSTUVWXYZ.,?!:"))
    tok.train_from_iterator(lines + [ln.lower() for ln in lines], trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>",
                                 bos_token="<|im_start|>", unk_token="<unk>")
    hf.chat_template = CHATML_TEMPLATE
    return hf


def build_tiny_llm(cfg: LLMConfig, tokenizer, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=cfg.hidden_size,
                         intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
                         num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
                         max_position_embeddings=1024, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    return LlamaForCausalLM(config)


def pretrain_lm(llm, tokenizer, lines: list[str], steps: int, seed: int, batch_size: int = 16, lr: float = 3e-3):
    """Pre-train the tiny LLM on a copy task: "Transcribe the speech: <words as text>" -> the words, where the
    words are random sequences over the vocabulary of `lines` (so nothing can be memorised: the answer must be
    read from the prompt). A real instruction LLM can read and repeat what its prompt holds; this gives the tiny
    stand-in that ability, so frozen-LLM alignment tests mean something. Returns the final loss."""
    from tasu.text.prompts import SPEECH_PLACEHOLDER, load_prompts

    asr = load_prompts()["ASR"]
    rng = random.Random(seed)
    words = sorted({w for line in lines for w in line.lower().split()})
    opt = torch.optim.AdamW(llm.parameters(), lr=lr)

    def encode(user: str, answer: str) -> tuple[list[int], list[int]]:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                               add_generation_prompt=True)
        return (tokenizer.encode(prompt, add_special_tokens=False),
                tokenizer.encode(answer + tokenizer.eos_token, add_special_tokens=False))

    llm.train()
    for _ in range(steps):
        rows = []
        for _ in range(batch_size):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(3, 8)))
            rows.append(encode(asr.replace(SPEECH_PLACEHOLDER, text), text))
        width = max(len(p) + len(a) for p, a in rows)
        ids = torch.full((batch_size, width), tokenizer.pad_token_id)
        labels = torch.full((batch_size, width), -100)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for r, (p, a) in enumerate(rows):
            ids[r, : len(p) + len(a)] = torch.tensor(p + a)
            labels[r, len(p): len(p) + len(a)] = torch.tensor(a)
            mask[r, : len(p) + len(a)] = 1
        loss = llm(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    llm.eval()
    return float(loss.detach())


# LLMConfig fields that do not change the pre-trained tiny weights (the cache stores fp32 weights; dtype is applied
# after loading): left out of the cache key so that toggling them reuses the cached model
_NOT_IN_WEIGHTS = {"compile", "dtype", "random_init"}


def _tiny_cache_dir(cfg: LLMConfig, text: str, seed: int) -> Path:
    """Cache folder for a pre-trained tiny LLM: keyed by its config, the text's content and the seed."""
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_IN_WEIGHTS}
    h = hashlib.sha256(json.dumps([fields, seed], sort_keys=True, default=str).encode())
    h.update(Path(text).read_bytes())
    root = Path(os.environ.get("TASU_CACHE", Path.home() / ".cache" / "tasu"))
    return root / "tiny_llm" / h.hexdigest()[:16]


def _load_tiny(cfg: LLMConfig, seed: int):
    from transformers import AutoTokenizer, LlamaForCausalLM

    if cfg.tokenizer_text is None:
        raise ConfigError("config key 'model.llm.tokenizer_text': the tiny LLM needs a text file for its tokenizer")
    text = resolve_path(cfg.tokenizer_text)
    cache = _tiny_cache_dir(cfg, text, seed) if cfg.pretrain_steps else None
    if cache is not None and (cache / "config.json").is_file():
        tok = AutoTokenizer.from_pretrained(cache)
        llm = LlamaForCausalLM.from_pretrained(cache, dtype=torch.float32)
        return llm.to(_DTYPES[cfg.dtype]), tok
    tok = build_tiny_tokenizer(text, cfg.vocab_size)
    llm = build_tiny_llm(cfg, tok, seed)
    if cfg.pretrain_steps:
        loss = pretrain_lm(llm, tok, read_lines(text), cfg.pretrain_steps, seed)
        log.info("tiny LLM pre-trained for %d steps (final LM loss %.3f); cached in %s", cfg.pretrain_steps, loss,
                 cache)
        # atomic publish: several ranks may build it at once
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache.parent))
        llm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, cache)
        except OSError:  # another rank won the race: same content
            shutil.rmtree(tmp, ignore_errors=True)
    return llm.to(_DTYPES[cfg.dtype]), tok


def load_llm(cfg: LLMConfig, seed: int = 0):
    """(model, tokenizer) for the configured LLM."""
    if cfg.type == "tiny":
        return _load_tiny(cfg, seed)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_path(cfg.path)
    if not Path(path).is_dir():
        raise ConfigError(f"config key 'model.llm.path': not a local model folder: {path}")
    kwargs = {"gguf_file": cfg.gguf_file} if cfg.gguf_file else {}
    tok = AutoTokenizer.from_pretrained(path, **kwargs)
    if cfg.random_init:
        from transformers import AutoConfig

        torch.manual_seed(seed)
        llm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=_DTYPES[cfg.dtype])
    else:
        llm = AutoModelForCausalLM.from_pretrained(path, dtype=_DTYPES[cfg.dtype], **kwargs)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return llm, tok


def compile_decoder_layers(llm) -> int:
    """torch.compile every decoder layer in place (`nn.Module.compile` keeps the module and its parameters, so the
    freeze policy, LoRA, DeepSpeed and checkpoints see the same names); returns the number of layers compiled."""
    layers = getattr(llm.get_decoder(), "layers", None)
    if layers is None:
        raise ConfigError("config key 'model.llm.compile': the LLM's decoder has no `layers` to compile")
    for layer in layers:
        layer.compile()
    return len(layers)


def apply_lora(llm, cfg: LoRAConfig):
    """Wrap the LLM with PEFT LoRA adapters (no-op when r == 0)."""
    if cfg.r == 0:
        return llm
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in llm.named_modules()}
    missing = [m for m in cfg.target_modules if m not in names]
    if missing:
        raise ConfigError(f"config key 'model.lora.target_modules': no module named {missing} in the LLM")
    lcfg = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.target_modules,
                      task_type="CAUSAL_LM")
    return get_peft_model(llm, lcfg)
