"""Triton implementations (the `triton` family of tasu.kernels; the CUDA path).

Imported only by `tasu.kernels.get_op` when the triton family is selected, so the package works without Triton.
Kernels use only long-stable `triton.language` features (load/store with masks, dot, atomic_add, reductions,
runtime-bounded loops) and are meant for triton 3.6 and 3.9. The tests run them on CPU tensors through the
Triton interpreter (TRITON_INTERPRET=1 set before the kernels are defined); GPU timings are not claimed here.
Inputs in float64 are routed to the vectorised PyTorch path (Triton kernels compute in fp32).
"""
