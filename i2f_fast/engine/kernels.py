"""The fused kernels the engine's node rules call (routed by ``i2f_fast.backend``).

One indirection so that the rules name the op, not the backend: each entry goes through the op's
public function in :mod:`i2f_fast.ops` when the op is registered there, else its pure-torch
reference.
"""
from __future__ import annotations

from ..reference.ce_hvp import ce_hvp_ref as ce_hvp
from ..reference.dual_act import dual_act_ref as dual_act
from ..reference.gram_apply import gram_apply_ref as gram_apply

__all__ = ["ce_hvp", "dual_act", "gram_apply"]
