"""Training: the DeepSpeed engine wrapper, the one training recipe, checkpoints, logging."""
