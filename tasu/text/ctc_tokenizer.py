"""CTC tokenizers: one object shared by the CTC head (its output vocabulary) and the CPS simulator.

Every CTC tokenizer reserves id 0 for the CTC blank; real units are ids 1..vocab_size-1.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from tasu.config.fields import ConfigError, check, doc_field

BLANK_ID = 0

#: The default character inventory (lower-case English + space + apostrophe), as in NOTES.md §5.
DEFAULT_CHARS = " abcdefghijklmnopqrstuvwxyz'"
TOKENIZER_TYPES = ("char", "sentencepiece", "hf", "list", "llm", "llm-units")
#: types whose units are the LLM's own tokens (the LLM tokenizer is needed to build them)
LLM_TOKENIZER_TYPES = ("llm", "llm-units")


@dataclass
class CTCTokenizerConfig:
    """Which unit inventory the CTC head predicts and CPS simulates."""

    type: str = doc_field("char", "char | sentencepiece | hf | list | llm | llm-units")
    path: str | None = doc_field(None, "sentencepiece .model, HF tokenizer folder, token-list file (one per line), "
                                       "or for llm-units a JSON list of the LLM's tokens to keep")
    chars: str = doc_field(DEFAULT_CHARS, "the inventory for type=char (text is lower-cased, other chars dropped)")
    lowercase: bool = doc_field(True, "lower-case text before encoding (char / list)")

    def __post_init__(self) -> None:
        check(self.type in TOKENIZER_TYPES, "model.ctc_tokenizer.type",
              f"unknown tokenizer type '{self.type}' ({' | '.join(TOKENIZER_TYPES)})")
        if self.type in ("sentencepiece", "hf", "list", "llm-units"):
            check(self.path is not None, "model.ctc_tokenizer.path", f"is required for type={self.type}")
        if self.type == "char":
            check(len(set(self.chars)) == len(self.chars) and len(self.chars) > 0, "model.ctc_tokenizer.chars",
                  "must be non-empty with no repeated character")


class CTCTokenizer:
    """Base: maps text <-> unit ids (1..V-1); id 0 is the CTC blank."""

    blank_id = BLANK_ID

    def __init__(self, units: list[str]):
        # units[i] is the surface string of id i+1
        self.units = list(units)

    @property
    def vocab_size(self) -> int:
        """Number of CTC classes, blank included."""
        return len(self.units) + 1

    def encode(self, text: str) -> list[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, ids) -> str:
        """Ids (blank and out-of-range ignored) back to text."""
        return "".join(self.units[i - 1] for i in ids if 0 < int(i) < self.vocab_size)

    def ctc_collapse(self, ids) -> list[int]:
        """Greedy CTC rule: merge runs of the same id, then remove blanks."""
        out, prev = [], None
        for i in ids:
            i = int(i)
            if i != prev and i != self.blank_id:
                out.append(i)
            prev = i
        return out


class CharCTCTokenizer(CTCTokenizer):
    """One unit per character of a fixed inventory."""

    def __init__(self, chars: str = DEFAULT_CHARS, lowercase: bool = True):
        super().__init__(list(chars))
        self.lowercase = lowercase
        self._index = {c: i + 1 for i, c in enumerate(chars)}

    def encode(self, text: str) -> list[int]:
        if self.lowercase:
            text = text.lower()
        text = re.sub(r"\s+", " ", text).strip()
        return [self._index[c] for c in text if c in self._index]


class ListCTCTokenizer(CTCTokenizer):
    """A custom token list; text is split greedily into the longest listed tokens (unknown chars dropped)."""

    def __init__(self, tokens: list[str], lowercase: bool = True):
        if len(set(tokens)) != len(tokens):
            raise ConfigError("model.ctc_tokenizer.path: token list has duplicates")
        super().__init__(tokens)
        self.lowercase = lowercase
        # character trie of the tokens (None marks a token's end -> its id): the longest token at a position is
        # found in one walk over its characters instead of one slice + lookup per candidate length
        self._trie: dict = {}
        for i, t in enumerate(tokens):
            node = self._trie
            for ch in t:
                node = node.setdefault(ch, {})
            node[None] = i + 1

    def encode(self, text: str) -> list[int]:
        if self.lowercase:
            text = text.lower()
        out, i, n = [], 0, len(text)
        while i < n:
            node, j, best, end = self._trie, i, None, i + 1
            while j < n:
                node = node.get(text[j])
                if node is None:
                    break
                j += 1
                if None in node:
                    best, end = node[None], j
            if best is not None:
                out.append(best)
            i = end                                   # no listed token starts here: drop the character
        return out


class SentencePieceCTCTokenizer(CTCTokenizer):
    """A sentencepiece model; piece p has CTC id p+1 (sentencepiece's own ids shift by one for the blank)."""

    def __init__(self, model_path: str):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=model_path)
        super().__init__([self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())])

    def encode(self, text: str) -> list[int]:
        return [i + 1 for i in self.sp.encode(text)]

    def decode(self, ids) -> str:
        return self.sp.decode([int(i) - 1 for i in ids if 0 < int(i) < self.vocab_size])


class HFCTCTokenizer(CTCTokenizer):
    """Any HF tokenizer (e.g. the LLM's BPE). CTC id i+1 <-> HF id `hf_ids[i]`.

    With `compact_ids` (the ids actually used by a corpus) the CTC head only predicts those units; the map
    back to HF ids is kept in `hf_ids` (used by LegoSLM to index the LLM embedding matrix).
    """

    def __init__(self, hf_tokenizer, compact_ids: list[int] | None = None):
        self.hf = hf_tokenizer
        special = set(getattr(hf_tokenizer, "all_special_ids", []) or [])
        # added special tokens (e.g. audio wrapper tokens) are not text units either
        special |= {i for i, t in (getattr(hf_tokenizer, "added_tokens_decoder", None) or {}).items()
                    if getattr(t, "special", False)}
        if compact_ids is None:
            compact_ids = [i for i in range(len(hf_tokenizer)) if i not in special]
        self.hf_ids = list(compact_ids)
        self._to_ctc = {h: i + 1 for i, h in enumerate(self.hf_ids)}
        super().__init__([hf_tokenizer.convert_ids_to_tokens(h) for h in self.hf_ids])

    def encode(self, text: str) -> list[int]:
        ids = self.hf.encode(text, add_special_tokens=False)
        return [self._to_ctc[h] for h in ids if h in self._to_ctc]

    def decode(self, ids) -> str:
        return self.hf.decode([self.hf_ids[int(i) - 1] for i in ids if 0 < int(i) < self.vocab_size])

    def to_llm_ids(self, ctc_ids):
        """CTC ids (no blanks) -> HF/LLM token ids."""
        return [self.hf_ids[int(i) - 1] for i in ctc_ids]


def build_ctc_tokenizer(cfg: CTCTokenizerConfig, llm_tokenizer=None) -> CTCTokenizer:
    """Build the CTC tokenizer named by the config (type=llm reuses the LLM's own tokenizer)."""
    if cfg.type == "char":
        return CharCTCTokenizer(cfg.chars, cfg.lowercase)
    if cfg.type == "list":
        p = Path(cfg.path)
        if not p.is_file():
            raise ConfigError(f"config key 'model.ctc_tokenizer.path': file not found: {p}")
        tokens = [line.rstrip("\n") for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        if p.suffix == ".json":
            tokens = json.loads(p.read_text(encoding="utf-8"))
        return ListCTCTokenizer(tokens, cfg.lowercase)
    if cfg.type == "sentencepiece":
        if not Path(cfg.path).is_file():
            raise ConfigError(f"config key 'model.ctc_tokenizer.path': sentencepiece model not found: {cfg.path}")
        return SentencePieceCTCTokenizer(cfg.path)
    if cfg.type == "hf":
        from transformers import AutoTokenizer

        if not Path(cfg.path).exists():
            raise ConfigError(f"config key 'model.ctc_tokenizer.path': tokenizer folder not found: {cfg.path}")
        return HFCTCTokenizer(AutoTokenizer.from_pretrained(cfg.path))
    if cfg.type in LLM_TOKENIZER_TYPES and llm_tokenizer is None:
        raise ConfigError(f"config key 'model.ctc_tokenizer.type': '{cfg.type}' needs the LLM tokenizer")
    if cfg.type == "llm":
        return HFCTCTokenizer(llm_tokenizer)
    if cfg.type == "llm-units":
        from tasu.text.llm_units import LLMUnitTokenizer

        return LLMUnitTokenizer.load(llm_tokenizer, cfg.path)
    raise ConfigError(f"config key 'model.ctc_tokenizer.type': unknown type '{cfg.type}'")
