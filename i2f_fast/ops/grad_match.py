"""``i2f_fast.ops.grad_match``: the gradient-matching loss of an attack and its gradient, one op.

Five places (DESIGN.md §4): the schema in ``_library.py``; this module (public function, fake
kernel, autograd, routing); the reference ``reference/grad_match.py``; the C++/OpenMP kernel
``csrc/cpu/grad_match_cpu.cpp`` and the CUDA kernel ``csrc/cuda/grad_match_cuda.cu``; the Triton
kernel ``triton/grad_match.py``.
"""
from __future__ import annotations

import torch

from .. import _loader  # noqa: F401  (schema, then the compiled kernels when built)
from ..backend import resolve
from ..reference.grad_match import MATCH_KINDS, grad_match_ref


@torch.library.impl("i2f_fast::grad_match", "CompositeExplicitAutograd")
def _grad_match_kernel(trial, target, weights, kind):
    return grad_match_ref(trial, target, kind, weights)


def _fake(trial, target, weights, kind):
    return trial.new_empty(trial.shape[0]), torch.empty_like(trial)


torch.library.register_fake("i2f_fast::grad_match")(_fake)


def _setup_context(ctx, inputs, output):
    trial, target, weights, kind = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(trial, target, weights, output[1])
    ctx.kind = kind


def _backward(ctx, grad_loss, _grad_of_grad):
    """Gradients of ``loss`` with respect to ``trial`` (the fused ``grad`` output) and ``target``;
    ``weights`` and ``kind`` are not differentiable."""
    trial, target, weights, grad = ctx.saved_tensors
    d_trial = grad_loss.unsqueeze(1) * grad if ctx.needs_input_grad[0] else None
    d_target = None
    if ctx.needs_input_grad[1]:
        if ctx.kind == "l2":
            d_target = -(grad_loss @ grad)
        else:  # ∂loss_r/∂g = −scale_r · w ⊙ (g'_r − (⟨g'_r, g⟩_w / ‖g‖²_w) g) on rows with a defined cosine
            wt = target if weights is None else weights * target
            wtrial = trial if weights is None else weights * trial
            dot, trial_sq, target_sq = trial @ wt, (wtrial * trial).sum(dim=1), wt @ target
            defined = (trial_sq > 0) & (target_sq > 0)
            scale = torch.where(defined, (torch.where(defined, trial_sq * target_sq, 1)).rsqrt(), 0) * grad_loss
            ratio = dot / torch.where(target_sq > 0, target_sq, 1)
            d_target = -(scale @ wtrial) + (scale * ratio).sum() * wt
    return d_trial, d_target, None, None


torch.library.register_autograd("i2f_fast::grad_match", _backward, setup_context=_setup_context)


def _check(trial, target, kind, weights):
    if kind not in MATCH_KINDS:
        raise ValueError(f"grad_match: kind must be one of {MATCH_KINDS}, got {kind!r}")
    if not isinstance(trial, torch.Tensor) or trial.dim() != 2:
        raise ValueError("grad_match: trial must be a 2-D tensor (R, P)")
    if trial.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"grad_match: trial must be float32 or float64, got {trial.dtype}")
    named = {"target": target} if weights is None else {"target": target, "weights": weights}
    for name, t in named.items():
        if not isinstance(t, torch.Tensor) or t.shape != trial.shape[1:]:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"grad_match: {name} must have shape ({trial.shape[1]},), got {shape}")
        if t.dtype != trial.dtype:
            raise TypeError(f"grad_match: {name} must have trial's dtype {trial.dtype}, got {t.dtype}")
        if t.device != trial.device:
            raise ValueError(f"grad_match: {name} is on {t.device}, trial is on {trial.device}")
    if weights is not None and weights.requires_grad and torch.is_grad_enabled():
        raise ValueError("grad_match: weights must not require grad (the loss is differentiable in trial and target)")


def _triton_kernel():
    from ..triton.grad_match import grad_match_triton

    return grad_match_triton


def grad_match(
    trial: torch.Tensor, target: torch.Tensor, kind: str = "cosine", weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Matching loss of R trial gradients against one target and, in the same pass, its gradient.

    Args:
        trial: ``(R, P)`` flat trial gradients (one row per restart; a :class:`~i2f_fast.flat.FlatLayout`
            buffer), float32 or float64.
        target: ``(P,)`` flat target gradient, same dtype and device.
        kind: ``"cosine"`` (1 − weighted *global* cosine, GS) or ``"l2"`` (weighted squared distance, DLG).
        weights: ``(P,)`` non-negative per-element weights (a layer weight repeated over its
            entries), or None for all ones.

    Returns:
        ``(loss, grad)``: ``loss`` ``(R,)`` and ``grad = ∂loss_r/∂trial_r`` ``(R, P)`` (the vector
        the attack feeds into ``Jᵀ``). Zero gradients: a row whose weighted trial norm is zero, or a
        zero target, has an undefined cosine; its loss is 1 and its gradient 0 (never NaN).
        ``loss`` is differentiable in ``trial`` and ``target`` (``grad`` is not).

    Raises:
        ValueError / TypeError naming the argument for an unknown ``kind``, bad shapes, dtypes or
        devices; :class:`i2f_fast.backend.BackendUnavailableError` when the requested backend cannot run.
    """
    _check(trial, target, kind, weights)
    backend = resolve(trial.device)
    if backend == "reference":
        return grad_match_ref(trial, target, kind, weights)
    kernel = torch.ops.i2f_fast.grad_match if backend == "native" else _triton_kernel()
    return kernel(trial.contiguous(), target.contiguous(), None if weights is None else weights.contiguous(), kind)
