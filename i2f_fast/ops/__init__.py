"""Fused tensor ops, one module each (public function + fake kernel + routing)."""
from .cg_step import cg_step
from .ce_hvp import ce_hvp
from .dual_act import dual_act
from .gram_apply import gram_apply
from .grad_match import grad_match
from .tv import tv
from .attack_step import attack_step

__all__ = ["cg_step", "ce_hvp", "dual_act", "gram_apply", "grad_match", "tv", "attack_step"]
