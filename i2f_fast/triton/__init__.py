"""Triton kernels, one module per op; imported lazily by ``i2f_fast/ops`` when the ``triton``
backend runs (``triton`` itself is optional: it comes with torch's CUDA builds)."""
