"""The fused kernels the engine's node rules call, through their public ops (routed by
``i2f_fast.backend``: CUDA / C++ / Triton kernel, or the pure-torch reference)."""
from __future__ import annotations

from ..ops import ce_hvp, dual_act, gram_apply

__all__ = ["ce_hvp", "dual_act", "gram_apply"]
