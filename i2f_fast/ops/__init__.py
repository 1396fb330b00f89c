"""Fused tensor ops, one module each (public function + fake kernel + routing)."""
from .cg_step import cg_step

__all__ = ["cg_step"]
from .grad_match import grad_match  # noqa: E402  (the attack loop's fused ops, issue 5)
from .tv import tv  # noqa: E402
from .attack_step import attack_step  # noqa: E402

__all__ += ["grad_match", "tv", "attack_step"]
