"""Fused tensor ops, one module each (public function + fake kernel + routing)."""
from .cg_step import cg_step
from .grad_match import grad_match
from .tv import tv
from .attack_step import attack_step

__all__ = ["cg_step", "grad_match", "tv", "attack_step"]
