"""Text side: CTC tokenizers, prompts."""
