"""Prompts: task instruction + `<speech>` placeholder, rendered with the LLM's chat template.

A prompt file is JSON lines `{"task": str, "prompt": str}`; each prompt holds exactly one `<speech>`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tasu.config.fields import ConfigError

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
    """LLM token ids around the speech: [prefix] <speech frames> [suffix] [answer]."""

    prefix: list[int]
    suffix: list[int]
    answer: list[int]


class PromptBuilder:
    """Renders (task, answer) into token ids with the LLM tokenizer's chat template."""

    def __init__(self, llm_tokenizer, prompts: dict[str, str], system: str | None = None):
        self.tok = llm_tokenizer
        self.prompts = prompts
        self.system = system
        self._cache: dict[str, tuple[list[int], list[int]]] = {}
        eos = llm_tokenizer.eos_token_id
        if eos is None:
            raise ConfigError("the LLM tokenizer has no eos token; answers need one to stop generation")
        self.eos_id = eos

    def _around_speech(self, task: str) -> tuple[list[int], list[int]]:
        if task not in self.prompts:
            raise ConfigError(f"unknown task '{task}': not in the prompt file (known: {sorted(self.prompts)})")
        if task not in self._cache:
            msgs = ([{"role": "system", "content": self.system}] if self.system else [])
            msgs.append({"role": "user", "content": self.prompts[task]})
            text = self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            before, after = text.split(SPEECH_PLACEHOLDER)
            self._cache[task] = (self.tok.encode(before, add_special_tokens=False),
                                 self.tok.encode(after, add_special_tokens=False))
        return self._cache[task]

    def build(self, task: str, answer: str | None) -> PromptParts:
        """Ids for one sample; `answer=None` for generation (no answer ids)."""
        prefix, suffix = self._around_speech(task)
        ans = [] if answer is None else self.tok.encode(answer, add_special_tokens=False) + [self.eos_id]
        return PromptParts(list(prefix), list(suffix), ans)
