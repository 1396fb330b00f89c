"""Pure-PyTorch reference kernels: the oracle for tests and the fallback implementation of every op."""
from .cg_step import cg_step_ref

__all__ = ["cg_step_ref"]
