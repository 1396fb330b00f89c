"""Pure-PyTorch reference kernels: the oracle for tests and the fallback implementation of every op."""
from .attack_step import attack_step_ref
from .ce_hvp import ce_hvp_ref
from .cg_step import cg_step_ref
from .dual_act import dual_act_ref
from .grad_match import grad_match_ref
from .gram_apply import gram_apply_ref
from .tv import tv_ref

__all__ = [
    "attack_step_ref", "ce_hvp_ref", "cg_step_ref", "dual_act_ref", "grad_match_ref", "gram_apply_ref", "tv_ref",
]
