"""Pure-PyTorch reference kernels: the oracle for tests and the fallback implementation of every op."""
from .attack_step import attack_step_ref
from .cg_step import cg_step_ref
from .grad_match import grad_match_ref
from .tv import tv_ref

__all__ = ["attack_step_ref", "cg_step_ref", "grad_match_ref", "tv_ref"]
