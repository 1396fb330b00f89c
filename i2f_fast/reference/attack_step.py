"""Reference kernel of one optimiser step of a gradient-inversion attack: (signed) Adam + box.

One fused update of the R·N candidate images of all restarts, with every scalar that changes
over the iterations (learning rate, Adam bias corrections) passed as a tensor, so the step has no
host synchronisation and a compiled kernel can replace it one to one. Matches ``torch.optim.Adam``
(no weight decay, no amsgrad) applied to the gradient, or to its sign when ``signed`` (the
"signed gradients" of Inverting Gradients), followed by the projection onto a box.
"""
from __future__ import annotations

import torch


def attack_step_ref(
    x: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    lr: torch.Tensor,
    bias_correction1: torch.Tensor,
    bias_correction2: torch.Tensor,
    *,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    signed: bool = False,
    lower: torch.Tensor | None = None,
    upper: torch.Tensor | None = None,
) -> None:
    """Update ``x``, ``exp_avg`` and ``exp_avg_sq`` in place by one Adam step.

    With ``u = sign(grad)`` if ``signed`` else ``grad``::

        m ← β₁ m + (1 − β₁) u;   v ← β₂ v + (1 − β₂) u²
        x ← x − (lr / bc₁) · m / (√v / √bc₂ + eps);   x ← clamp(x, lower, upper)

    Args:
        x: ``(R, N, C, H, W)`` candidate images (any shape works; all tensors below broadcast to it).
        grad: gradient of the attack objective, shaped like ``x``.
        exp_avg, exp_avg_sq: Adam's first and second moments, shaped like ``x``.
        lr: 0-d (or broadcastable, e.g. ``(R, 1, 1, 1, 1)``) learning rate tensor.
        bias_correction1, bias_correction2: 0-d tensors ``1 − β₁ᵗ`` and ``1 − β₂ᵗ`` for step t ≥ 1.
        beta1, beta2, eps: Adam constants.
        signed: use the sign of the gradient.
        lower, upper: box bounds broadcastable to ``x`` (e.g. ``(C, 1, 1)``), or None for no bound.

    Returns:
        None; ``x``, ``exp_avg`` and ``exp_avg_sq`` are updated in place.
    """
    u = grad.sign() if signed else grad
    exp_avg.lerp_(u, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(u, u, value=1 - beta2)
    denom = (exp_avg_sq.sqrt() / bias_correction2.sqrt()).add_(eps)
    x.addcdiv_(exp_avg * (lr / bias_correction1), denom, value=-1)
    if lower is not None or upper is not None:
        torch.clamp_(x, min=lower, max=upper)
