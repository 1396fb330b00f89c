"""``i2f_fast.ops.cg_step``: one batched conjugate-gradient iteration, as a ``torch.library`` op.

Five places (DESIGN.md §4): the schema in ``_library.py``; this module (public function, argument
checks, routing; its fake kernel is registered from ``_formulas.py``); the reference ``reference/cg_step.py``; the C++/OpenMP kernel
``csrc/cpu/cg_step_cpu.cpp`` and the CUDA kernel ``csrc/cuda/cg_step_cuda.cu`` (registered for the
CPU / CUDA dispatch keys when the extensions load); the Triton kernel ``triton/cg_step.py``.
``torch.ops.i2f_fast.cg_step`` runs the compiled kernel of the tensors' device, or the reference
(registered as the CompositeExplicitAutograd kernel) where none is loaded.
"""
import torch

from .. import _loader  # noqa: F401  (schema, then the compiled kernels when built)
from .. import _formulas
from ..backend import kernel as backend_kernel
from ..reference.cg_step import cg_step_ref


@torch.library.impl("i2f_fast::cg_step", "CompositeExplicitAutograd")
def _cg_step_kernel(x, r, p, Ap, rr, active):
    return cg_step_ref(x, r, p, Ap, rr, active)


_formulas.register("cg_step")  # fake kernel (_formulas.py)
def _check(x, r, p, Ap, rr, active):
    mats = {"x": x, "r": r, "p": p, "Ap": Ap}
    for name, t in mats.items():
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            raise ValueError(f"cg_step: {name} must be a 2-D tensor (B, D)")
        if t.shape != x.shape:
            raise ValueError(f"cg_step: {name} has shape {tuple(t.shape)}, expected {tuple(x.shape)}")
        if t.dtype not in (torch.float32, torch.float64) or t.dtype != x.dtype:
            raise TypeError(f"cg_step: {name} must be float32 or float64 like x, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"cg_step: {name} is on {t.device}, x is on {x.device}")
    if not isinstance(rr, torch.Tensor) or rr.shape != (x.shape[0],) or rr.dtype != x.dtype or rr.device != x.device:
        raise ValueError(f"cg_step: rr must be a ({x.shape[0]},) {x.dtype} tensor on {x.device}")
    if (
        not isinstance(active, torch.Tensor)
        or active.shape != (x.shape[0],)
        or active.dtype != torch.bool
        or active.device != x.device
    ):
        raise ValueError(f"cg_step: active must be a ({x.shape[0]},) bool tensor on {x.device}")


def cg_step(x, r, p, Ap, rr, active):
    """One conjugate-gradient iteration for B independent systems, with no host sync.

    Args:
        x, r, p: ``(B, D)`` float32/float64 iterate, residual, search direction (updated in place;
            non-contiguous tensors work: the compiled kernels then run on contiguous copies that
            are written back).
        Ap: ``(B, D)`` operator applied to ``p`` (same dtype and device).
        rr: ``(B,)`` current ``r·r`` per row (same dtype).
        active: ``(B,)`` bool mask of rows that take a step.

    Per active row: ``pAp = p·Ap``; ``α = rr/pAp``; ``x += αp``; ``r -= αAp``; ``rr' = r·r``;
    ``β = rr'/rr``; ``p = r + βp``. The kernel is chosen by :mod:`i2f_fast.backend`.

    Returns:
        ``(rr_new, active_new)``, both ``(B,)``. A row with ``p·Ap <= 0`` or a non-finite ``p·Ap``
        is frozen and drops out of ``active_new`` (breakdown); inactive rows are untouched.

    Raises:
        ValueError / TypeError naming the offending argument for bad shapes, dtypes or devices;
        :class:`i2f_fast.backend.BackendUnavailableError` when the requested backend cannot run.
    """
    _check(x, r, p, Ap, rr, active)
    kernel = backend_kernel("cg_step", x.device)
    if kernel is None:  # the reference backend
        return cg_step_ref(x, r, p, Ap, rr, active)
    state = (x, r, p)
    if all(t.is_contiguous() for t in state):
        return kernel(x, r, p, Ap.contiguous(), rr.contiguous(), active.contiguous())
    xc, rc, pc = (t.contiguous() for t in state)
    out = kernel(xc, rc, pc, Ap.contiguous(), rr.contiguous(), active.contiguous())
    for t, c in zip(state, (xc, rc, pc)):
        if not t.is_contiguous():  # worked on a contiguous copy: write it back
            t.copy_(c)
    return out
