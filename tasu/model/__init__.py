"""Model side: CTC encoders, projectors, LLM, and the SpeechLLM that composes them."""
