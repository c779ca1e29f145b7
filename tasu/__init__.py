"""tasu: DeepSpeed-based distributed training of Speech LLMs (CTC encoder -> projector -> causal LLM)."""

__version__ = "0.1.0"
