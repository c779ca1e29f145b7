"""CTC units taken from the LLM's own tokenizer: a compact subset of its BPE tokens (LegoSLM-style).

A CTC head cannot learn 49k BPE classes from a few hours of speech, and a frozen LLM does not read words spelled
one character at a time (NOTES.md §7). So the inventory is the LLM tokens that occur often enough in the training
transcripts to be learnt acoustically, plus every single letter (with and without the word-start marker) so that
any word can still be written. A word whose own BPE tokens are all in the inventory keeps them (the LLM sees its
usual tokens); any other word is split into the fewest inventory pieces (dynamic programming), which are still LLM
tokens. Units are stored as the tokenizer's token strings ('Ġthe' for byte-level BPE, '▁the' for Metaspace);
CTC id i+1 <-> LLM id `hf_ids[i]`.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

from tasu.config.fields import ConfigError
from tasu.text.ctc_tokenizer import HFCTCTokenizer

LETTERS = "abcdefghijklmnopqrstuvwxyz'"
_MAX_PIECE = 24   # longest unit considered by the segmentation DP, in byte-level characters


def word_marker(hf_tokenizer) -> str:
    """The token-string prefix that marks a word start: 'Ġ' (byte-level BPE) or '▁' (sentencepiece / Metaspace)."""
    toks = hf_tokenizer.convert_ids_to_tokens(hf_tokenizer.encode(" a", add_special_tokens=False))
    if not toks or not toks[-1].endswith("a"):
        raise ConfigError("model.ctc_tokenizer: cannot find the LLM tokenizer's word-start marker (' a' -> "
                          f"{toks})")
    return toks[-1][:-1]


class LLMUnitTokenizer(HFCTCTokenizer):
    """Text <-> CTC ids over a subset of an LLM tokenizer's tokens (id 0 is the blank): the HF tokenizer with
    `compact_ids` = the units' ids, and an encoder that cuts words the subset lacks into the fewest units."""

    def __init__(self, hf_tokenizer, units: list[str]):
        if len(set(units)) != len(units) or not units:
            raise ConfigError("model.ctc_tokenizer.path: the LLM unit list is empty or has duplicates")
        vocab = hf_tokenizer.get_vocab()
        missing = [u for u in units if u not in vocab]
        if missing:
            raise ConfigError(f"model.ctc_tokenizer.path: {len(missing)} units are not tokens of the LLM tokenizer, "
                              f"e.g. {missing[:5]}")
        super().__init__(hf_tokenizer, [vocab[u] for u in units])    # units, hf, hf_ids, to_llm_ids, _to_ctc
        self._by_str = {u: i + 1 for i, u in enumerate(units)}
        self._cache: dict[str, list[int]] = {}

    def _word(self, word: str) -> list[int]:
        """CTC ids of one word (written with its leading space)."""
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        full = self.hf.encode(" " + word, add_special_tokens=False)
        if all(h in self._to_ctc for h in full):
            out = [self._to_ctc[h] for h in full]
        else:
            # the word as the tokenizer writes it ('Ġword' / '▁word'), cut into the fewest inventory units
            out = self._fewest_pieces("".join(self.hf.convert_ids_to_tokens(full)))
        self._cache[word] = out
        return out

    def _fewest_pieces(self, s: str) -> list[int]:
        # best[j]: fewest units covering s[:j] (None: not coverable); O(len * _MAX_PIECE)
        best: list[list[int] | None] = [None] * (len(s) + 1)
        best[0] = []
        for j in range(1, len(s) + 1):
            for i in range(max(0, j - _MAX_PIECE), j):
                tid = self._by_str.get(s[i:j])
                if tid is not None and best[i] is not None and (best[j] is None or len(best[i]) + 1 < len(best[j])):
                    best[j] = best[i] + [tid]
        if best[-1] is None:   # a character with no unit: drop it, keep the rest (like the char tokenizer)
            return [t for ch in s if (t := self._by_str.get(ch)) is not None]
        return best[-1]

    def encode(self, text: str) -> list[int]:
        return [t for w in text.lower().split() for t in self._word(w)]

    def decode(self, ids) -> str:
        return super().decode(ids).strip()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.units, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, hf_tokenizer, path: str | Path) -> LLMUnitTokenizer:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config key 'model.ctc_tokenizer.path': LLM unit list not found: {p}")
        try:
            units = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"config key 'model.ctc_tokenizer.path': {p} is not a JSON list of tokens: {e}") from e
        if not isinstance(units, list) or not all(isinstance(u, str) for u in units):
            raise ConfigError(f"config key 'model.ctc_tokenizer.path': {p} must hold a JSON list of token strings")
        return cls(hf_tokenizer, units)

    @classmethod
    def select(cls, hf_tokenizer, texts: list[str], min_count: int = 3, max_units: int = 0,
               rounds: int = 3) -> LLMUnitTokenizer:
        """The inventory for a corpus: LLM tokens used at least `min_count` times (after re-segmenting with the
        inventory itself, `rounds` times, since dropping a token moves its words onto smaller pieces), the most
        frequent first, capped at `max_units` (0: no cap), plus the letters."""
        space = word_marker(hf_tokenizer)
        # every letter, in-word and word-initial, and the bare word marker: any [a-z'] word stays writable
        letters = [space] + [c for ch in LETTERS for c in (ch, space + ch)]
        words = collections.Counter(w for t in texts for w in t.lower().split())
        if not words:
            raise ConfigError("LLM unit selection: no words in the given texts")
        vocab = hf_tokenizer.get_vocab()
        letters = [u for u in letters if u in vocab]
        counts: collections.Counter = collections.Counter()
        for w, n in words.items():
            for h in hf_tokenizer.encode(" " + w, add_special_tokens=False):
                counts[h] += n
        inv = {i: t for t, i in vocab.items()}
        for _ in range(rounds):
            keep = [inv[h] for h, n in counts.most_common() if n >= min_count]
            if max_units:
                keep = keep[: max(0, max_units - len(letters))]
            tok = cls(hf_tokenizer, list(dict.fromkeys(keep + letters)))
            counts = collections.Counter()
            for w, n in words.items():
                for t in tok._word(w):
                    counts[tok.hf_ids[t - 1]] += n
        return tok

