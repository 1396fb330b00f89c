"""Reference kernel of the gradient-matching objective of gradient-inversion attacks.

For R trial gradients ``g'_r`` (one per restart) and the shared target gradient ``g``, with optional
non-negative per-element weights ``w`` (a layer weight repeated over that layer's entries; zero
drops a layer), it returns the matching loss and its gradient with respect to the trial gradients,
both in closed form (no autograd), so that a fused kernel can replace it one to one:

* ``"cosine"`` (Inverting Gradients / GS): ``d_r = 1 − Σ w g'g / (‖g'‖_w ‖g‖_w)`` with
  ``‖v‖_w = √(Σ w v²)``; the cosine is *global* (all layers summed before normalising), as in
  Geiping et al.'s ``reconstruction_costs``.
  ``∂d_r/∂g' = −w ⊙ (g − (⟨g', g⟩_w / ‖g'‖_w²) g') / (‖g'‖_w ‖g‖_w)``.
* ``"l2"`` (DLG): ``d_r = Σ w (g' − g)²`` and ``∂d_r/∂g' = 2 w ⊙ (g' − g)``.
"""
from __future__ import annotations

import torch

MATCH_KINDS = ("cosine", "l2")


def grad_match_ref(
    trial: torch.Tensor, target: torch.Tensor, kind: str = "cosine", weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Matching loss of R trial gradients against one target, and its gradient.

    Args:
        trial: ``(R, P)`` flat trial gradients ``∇_θ L(x'_r)``, float32 or float64.
        target: ``(P,)`` flat target gradient ``g`` (same dtype and device).
        kind: ``"cosine"`` (1 − weighted global cosine similarity) or ``"l2"`` (weighted squared
            distance).
        weights: ``(P,)`` non-negative per-element weights, or None for all ones.

    Returns:
        ``(loss, grad)``: ``loss`` ``(R,)`` and ``grad = ∂loss_r/∂trial_r`` ``(R, P)``, in ``trial``'s
        dtype. For ``"cosine"``, a row whose trial gradient is zero (or a zero target) has an
        undefined cosine: its loss is 1 and its gradient 0.

    Raises:
        ValueError: ``kind`` unknown or shapes that do not match.
    """
    if kind not in MATCH_KINDS:
        raise ValueError(f"kind must be one of {MATCH_KINDS}, got {kind!r}")
    if trial.dim() != 2 or target.shape != trial.shape[1:]:
        raise ValueError(f"trial must be (R, P) and target (P,), got {tuple(trial.shape)} and {tuple(target.shape)}")
    if weights is not None and weights.shape != target.shape:
        raise ValueError(f"weights must have shape {tuple(target.shape)}, got {tuple(weights.shape)}")
    wt = target if weights is None else weights * target  # w ⊙ g
    if kind == "l2":
        diff = trial - target
        wdiff = diff if weights is None else weights * diff
        return (wdiff * diff).sum(dim=1), 2 * wdiff
    dot = trial @ wt  # (R,)  ⟨g', g⟩_w
    trial_sq = (trial * trial).sum(dim=1) if weights is None else (trial * trial) @ weights  # (R,)
    target_sq = wt @ target
    defined = (trial_sq > 0) & (target_sq > 0)  # the cosine of a zero vector is undefined
    trial_norm = torch.where(defined, trial_sq, 1).sqrt()
    scale = torch.where(defined, 1 / (trial_norm * torch.where(target_sq > 0, target_sq, 1).sqrt()), 0)
    loss = 1 - dot * scale
    wtrial = trial if weights is None else weights * trial
    ratio = (dot / trial_norm.square()).unsqueeze(1)
    grad = -scale.unsqueeze(1) * (wt - ratio * wtrial)
    return loss, grad
