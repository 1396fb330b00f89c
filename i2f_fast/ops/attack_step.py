"""``i2f_fast.ops.attack_step``: one (signed) Adam step of the attack's images plus the box, one op.

Five places (DESIGN.md §4): the schema in ``_library.py``; this module (public function, argument
checks, routing; its fake kernel is registered from ``_formulas.py``; an in-place optimiser step is not differentiable); the reference
``reference/attack_step.py``; the C++/OpenMP kernel ``csrc/cpu/attack_step_cpu.cpp`` and the CUDA
kernel ``csrc/cuda/attack_step_cuda.cu``; the Triton kernel ``triton/attack_step.py``.
"""
from __future__ import annotations

import torch

from .. import _loader  # noqa: F401  (schema, then the compiled kernels when built)
from .. import _formulas
from ..backend import kernel as backend_kernel
from ..reference.attack_step import attack_step_ref


def _reference_args(x, lr, lower, upper):
    """The op's flat lr (1 or R values) and one-restart bounds, made broadcastable for the reference."""
    lr = lr.reshape(()) if lr.numel() == 1 else lr.reshape(-1, *([1] * (x.dim() - 1)))
    bounds = [None if b is None else b.reshape(x.shape[1:]) for b in (lower, upper)]
    return lr, *bounds


@torch.library.impl("i2f_fast::attack_step", "CompositeExplicitAutograd")
def _attack_step_kernel(x, grad, exp_avg, exp_avg_sq, lr, bias_correction1, bias_correction2, beta1, beta2, eps,
                        signed, lower, upper):
    lr, lower, upper = _reference_args(x, lr, lower, upper)
    attack_step_ref(x, grad, exp_avg, exp_avg_sq, lr, bias_correction1.reshape(()), bias_correction2.reshape(()),
                    beta1=beta1, beta2=beta2, eps=eps, signed=signed, lower=lower, upper=upper)


_formulas.register("attack_step")  # fake kernel (_formulas.py)

def _prepare(x, grad, exp_avg, exp_avg_sq, lr, bias_correction1, bias_correction2, lower, upper):
    """Check the arguments (errors name them); returns lr ``(1 or R,)`` and bounds ``x.shape[1:]``."""
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ValueError("attack_step: x must be a tensor with a leading restart dimension (R, ...)")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"attack_step: x must be float32 or float64, got {x.dtype}")
    named = {"grad": grad, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq, "lr": lr,
             "bias_correction1": bias_correction1, "bias_correction2": bias_correction2, "lower": lower, "upper": upper}
    for name, t in named.items():
        if t is None and name in ("lower", "upper"):
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"attack_step: {name} must be a tensor, got {type(t).__name__}")
        if t.dtype != x.dtype:
            raise TypeError(f"attack_step: {name} must have x's dtype {x.dtype}, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"attack_step: {name} is on {t.device}, x is on {x.device}")
        if name in ("grad", "exp_avg", "exp_avg_sq") and t.shape != x.shape:
            raise ValueError(f"attack_step: {name} has shape {tuple(t.shape)}, expected {tuple(x.shape)}")
    rows = x.shape[0]
    if lr.numel() not in (1, rows) or lr.dim() > 1 and lr.numel() != lr.shape[0]:
        raise ValueError(f"attack_step: lr must be a 0-d tensor or have shape ({rows},), got {tuple(lr.shape)}")
    for name in ("bias_correction1", "bias_correction2"):
        if named[name].numel() != 1:
            raise ValueError(f"attack_step: {name} must be a 0-d tensor, got shape {tuple(named[name].shape)}")
    bounds = []
    for name in ("lower", "upper"):
        b = named[name]
        if b is not None and b.shape != x.shape[1:]:
            try:
                b = b.expand(x.shape[1:])
            except RuntimeError as err:
                raise ValueError(f"attack_step: {name} does not broadcast to one restart {tuple(x.shape[1:])}: {err}") from err
        bounds.append(b)
    return lr.reshape(-1), *bounds


def attack_step(
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
    """One Adam step (on ``sign(grad)`` when ``signed``) of ``x`` plus the box projection, in place.

    ``m ← β₁m + (1−β₁)u;  v ← β₂v + (1−β₂)u²;  x ← clamp(x − (lr/bc₁)·m/(√v/√bc₂ + eps), lower, upper)``
    with ``u = sign(grad)`` or ``grad``: ``torch.optim.Adam`` (no weight decay, no amsgrad). The
    scalars that change over the iterations are tensors read by the kernel, never by the host, so
    the step has no host sync and can be captured in a CUDA graph.

    Args:
        x: ``(R, ...)`` candidate images of R restarts (e.g. ``(R, N, C, H, W)``), float32/float64;
            updated in place (non-contiguous tensors work through contiguous copies written back).
        grad: the objective's gradient, shaped like ``x``.
        exp_avg, exp_avg_sq: Adam's moments, shaped like ``x``, updated in place.
        lr: 0-d step size, or ``(R,)`` one per restart.
        bias_correction1, bias_correction2: 0-d tensors ``1 − β₁ᵗ``, ``1 − β₂ᵗ`` (step t ≥ 1).
        beta1, beta2, eps: Adam constants. signed: use the sign of ``grad`` (0 at 0).
        lower, upper: box bounds broadcastable to one restart ``x.shape[1:]`` (e.g. ``(C, 1, 1)``),
            or None for no bound.

    Raises:
        ValueError / TypeError naming the argument for bad shapes, dtypes or devices;
        :class:`i2f_fast.backend.BackendUnavailableError` when the requested backend cannot run.
    """
    lr, lower, upper = _prepare(x, grad, exp_avg, exp_avg_sq, lr, bias_correction1, bias_correction2, lower, upper)
    kernel = backend_kernel("attack_step", x.device)
    if kernel is None:  # the reference backend
        lr, lower, upper = _reference_args(x, lr, lower, upper)
        attack_step_ref(x, grad, exp_avg, exp_avg_sq, lr, bias_correction1.reshape(()), bias_correction2.reshape(()),
                        beta1=beta1, beta2=beta2, eps=eps, signed=signed, lower=lower, upper=upper)
        return
    state = (x, exp_avg, exp_avg_sq)
    work = [t.contiguous() for t in state]
    kernel(work[0], grad.contiguous(), work[1], work[2], lr.contiguous(), bias_correction1.reshape(1),
           bias_correction2.reshape(1), float(beta1), float(beta2), float(eps), bool(signed),
           None if lower is None else lower.contiguous(), None if upper is None else upper.contiguous())
    for t, w in zip(state, work):
        if not t.is_contiguous():  # worked on a contiguous copy: write it back
            t.copy_(w)
