"""Pure-PyTorch implementations: each op's reference (its definition) and its vectorised `cpu` path (device
agnostic, autograd.Function with a hand-written backward). One module per op.
"""
