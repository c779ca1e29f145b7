"""Prompts: task instruction + `<speech>` placeholder, rendered with the LLM's chat template.

A prompt file is JSON lines `{"task": str, "prompt": str}`; each prompt holds exactly one `<speech>`.
Conversation records (LLaSO) bring their own user turn instead: its text is the instruction of that record, and
each `<audio>` in it is a speech segment, in order (`PromptBuilder.build_turn`). The three LLaSO modality
configurations are just where the tags sit: "Transcribe this. <audio>" (text instruction + audio), "<audio> some
text" (audio instruction + text), "<audio>" (pure audio).

With audio wrapper tokens (`prompts.audio_bos` / `audio_eos`), every speech segment is framed by them:
    ... <|audio_bos|> [speech frames] <|audio_eos|> ...
they end the text piece before the segment and start the piece after it (ids, never re-tokenised text).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tasu.config.fields import ConfigError
from tasu.data.manifests import AUDIO_TAG

SPEECH_PLACEHOLDER = "<speech>"
DEFAULT_PROMPT_FILE = Path(__file__).with_name("prompts.jsonl")


def load_prompts(path: str | Path | None = None) -> dict[str, str]:
    """task -> instruction text; errors name the file and line."""
    path = Path(path) if path else DEFAULT_PROMPT_FILE
    if not path.is_file():
        raise ConfigError(f"config key 'prompts.file': prompt file not found: {path}")
    prompts: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            task, prompt = rec["task"], rec["prompt"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ConfigError(f"{path}:{n}: bad prompt record ({e!r}); expected {{\"task\", \"prompt\"}}") from None
        if prompt.count(SPEECH_PLACEHOLDER) != 1:
            raise ConfigError(f"{path}:{n}: prompt for task '{task}' must contain exactly one {SPEECH_PLACEHOLDER}")
        prompts[task] = prompt
    return prompts


@dataclass
class PromptParts:
    """LLM token ids around the speech: [prefix] <speech frames> [suffix] [answer]; with several speech segments,
    `middle` holds the pieces between them: [prefix] <speech 0> [middle 0] <speech 1> ... [suffix] [answer]."""

    prefix: list[int]
    suffix: list[int]
    answer: list[int]
    middle: list[list[int]] = field(default_factory=list)


class PromptBuilder:
    """Renders (task, answer) or a record's own user turn into token ids with the LLM tokenizer's chat template."""

    def __init__(self, llm_tokenizer, prompts: dict[str, str], system: str | None = None,
                 audio_bos: str | None = None, audio_eos: str | None = None):
        self.tok = llm_tokenizer
        self.prompts = prompts
        self.system = system
        self._cache: dict[str, tuple[list[int], list[int]]] = {}
        eos = llm_tokenizer.eos_token_id
        if eos is None:
            raise ConfigError("the LLM tokenizer has no eos token; answers need one to stop generation")
        self.eos_id = eos
        self.bos_ids = self._wrapper_ids(audio_bos, "prompts.audio_bos")   # [] or [id]
        self.eos_ids = self._wrapper_ids(audio_eos, "prompts.audio_eos")

    @classmethod
    def from_config(cls, prompt_cfg, llm_tokenizer) -> PromptBuilder:
        """From the `prompts:` config section (file, system message, audio wrapper tokens)."""
        return cls(llm_tokenizer, load_prompts(prompt_cfg.file), prompt_cfg.system, prompt_cfg.audio_bos,
                   prompt_cfg.audio_eos)

    def _wrapper_ids(self, token: str | None, key: str) -> list[int]:
        if not token:
            return []
        ids = self.tok.encode(token, add_special_tokens=False)
        if len(ids) != 1:
            raise ConfigError(f"config key '{key}': {token!r} is not a single token of the LLM tokenizer (encodes "
                              f"to {ids}); the model adds it when it builds the LLM: use that model's tokenizer")
        return ids

    def _render(self, content: str, marker: str) -> list[list[int]]:
        """Ids of the text pieces around each `marker` in the chat-templated user turn `content`, with the audio
        wrapper ids closing every piece before a segment and opening every piece after one (S + 1 pieces)."""
        msgs = ([{"role": "system", "content": self.system}] if self.system else [])
        msgs.append({"role": "user", "content": content})
        text = self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        parts = text.split(marker)
        if len(parts) != content.count(marker) + 1:
            raise ConfigError(f"the chat template (or system message) adds or removes {marker!r}: cannot place the "
                              "speech")
        pieces = [self.tok.encode(p, add_special_tokens=False) for p in parts]
        last = len(pieces) - 1
        return [(self.eos_ids if i > 0 else []) + p + (self.bos_ids if i < last else []) for i, p in enumerate(pieces)]

    def _around_speech(self, task: str) -> tuple[list[int], list[int]]:
        if task not in self.prompts:
            raise ConfigError(f"unknown task '{task}': not in the prompt file (known: {sorted(self.prompts)})")
        if task not in self._cache:
            before, after = self._render(self.prompts[task], SPEECH_PLACEHOLDER)
            self._cache[task] = (before, after)
        return self._cache[task]

    def _answer(self, answer: str | None) -> list[int]:
        return [] if answer is None else self.tok.encode(answer, add_special_tokens=False) + [self.eos_id]

    def build(self, task: str, answer: str | None) -> PromptParts:
        """Ids for one sample; `answer=None` for generation (no answer ids)."""
        prefix, suffix = self._around_speech(task)
        return PromptParts(list(prefix), list(suffix), self._answer(answer))

    def build_turn(self, human: str, answer: str | None) -> PromptParts:
        """Ids for a conversation record whose user turn `human` holds one `<audio>` per speech segment, in order
        (LLaSO): the turn's own text is the instruction. `answer=None` for generation."""
        if AUDIO_TAG not in human:
            raise ValueError(f"the user turn holds no {AUDIO_TAG}: {human[:80]!r}")
        pieces = self._render(human, AUDIO_TAG)
        return PromptParts(pieces[0], pieces[-1], self._answer(answer), pieces[1:-1])
