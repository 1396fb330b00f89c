"""``i2f_fast.ops.grad_match``: the gradient-matching loss of an attack and its gradient, one op.

Five places (DESIGN.md §4): the schema in ``_library.py``; this module (public function, argument
checks, routing; its fake kernel and autograd formula are registered from ``_formulas.py``); the reference ``reference/grad_match.py``; the C++/OpenMP kernel
``csrc/cpu/grad_match_cpu.cpp`` and the CUDA kernel ``csrc/cuda/grad_match_cuda.cu``; the Triton
kernel ``triton/grad_match.py``.
"""
from __future__ import annotations

import torch

from .. import _loader  # noqa: F401  (schema, then the compiled kernels when built)
from .. import _formulas
from ..backend import kernel as backend_kernel
from ..reference.grad_match import MATCH_KINDS, grad_match_ref


@torch.library.impl("i2f_fast::grad_match", "CompositeExplicitAutograd")
def _grad_match_kernel(trial, target, weights, kind):
    return grad_match_ref(trial, target, kind, weights)


_formulas.register("grad_match")  # fake kernel and autograd formula (_formulas.py)


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
    kernel = backend_kernel("grad_match", trial.device)
    if kernel is None:  # the reference backend
        return grad_match_ref(trial, target, kind, weights)
    return kernel(trial.contiguous(), target.contiguous(), None if weights is None else weights.contiguous(), kind)
