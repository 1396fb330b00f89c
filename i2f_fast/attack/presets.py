"""The attacks' settings: names accepted by :func:`~i2f_fast.attack.invert`, the
:class:`AttackConfig` of each preset, and the Adam schedule they imply (step decay milestones,
bias corrections) as one device table."""
from __future__ import annotations

from dataclasses import dataclass

import torch

ATTACKS = ("gs", "dlg")
"""Names accepted by :func:`invert`'s ``attack``."""

INITS = ("randn", "rand", "zeros")
"""Initialisations of the candidate images: N(0, 1), U(−1, 1) (breaching's ``rand``), zeros."""

OPTIMIZERS = ("adam", "lbfgs")
LBFGS_LR = 1.0  # the original DLG's L-BFGS step (PyTorch's default)
LINE_SEARCHES = (None, "strong_wolfe")
"""L-BFGS step rules of :func:`invert`: the fixed step ``lr`` (DLG's) or torch's strong-Wolfe line search."""
LINE_SEARCH_EVALS = 25  # objective evaluations a strong-Wolfe line search may spend per iteration


@dataclass(frozen=True)
class AttackConfig:
    """The settings that define an attack (see the module docstring).

    Attributes:
        match: ``"l2"`` or ``"cosine"`` (the :func:`grad_match_ref` kind).
        signed: Adam on the sign of the gradient.
        decay: step size ×0.1 at ⌊T/2.667⌋, ⌊T/1.6⌋, ⌊T/1.142⌋.
        lr: Adam step size.
        tv: weight α_TV of the total-variation prior.
    """

    match: str
    signed: bool
    decay: bool
    lr: float
    tv: float


PRESETS = {
    # DLG as run by the paper's code (--inv_goal l2): Adam lr 0.1, no sign, no decay, TV 0.
    "dlg": AttackConfig(match="l2", signed=False, decay=False, lr=0.1, tv=0.0),
    # Inverting Gradients (--inv_goal sim): TV 0 is the paper scripts' default (PAPER.md §1.2).
    "gs": AttackConfig(match="cosine", signed=True, decay=True, lr=0.1, tv=0.0),
}
"""Attack name → its default :class:`AttackConfig`; every field can be overridden in :func:`invert`."""


def _milestones(iterations: int) -> set[int]:
    """inversefed's MultiStepLR milestones: the iterations from which the step is ×0.1 smaller."""
    return {int(iterations // 2.667), int(iterations // 1.6), int(iterations // 1.142)}


ADAM_BETAS = (0.9, 0.999)


def _adam_schedule(config: AttackConfig, iterations: int, dtype: torch.dtype) -> torch.Tensor:
    """``(T, 3)``: per iteration the step size (×0.1 from each decay milestone on) and the bias
    corrections ``1 − β₁ᵗ``, ``1 − β₂ᵗ`` (t = iteration + 1), formed in ``dtype`` by the same
    sequential products as ``torch.optim.Adam``'s running powers. A table read by the kernels
    makes the schedule free per iteration and lets a captured CUDA graph index it on the device."""
    lr = torch.full((iterations,), config.lr, dtype=dtype)
    for milestone in sorted(_milestones(iterations)) if config.decay else ():
        lr[milestone:] *= 0.1
    powers = [torch.full((iterations,), beta, dtype=dtype).cumprod(0) for beta in ADAM_BETAS]
    return torch.stack([lr, 1 - powers[0], 1 - powers[1]], dim=1)
