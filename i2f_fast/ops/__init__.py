"""Fused tensor ops, one module each (public function + fake kernel + routing)."""
from .cg_step import cg_step

__all__ = ["cg_step"]
