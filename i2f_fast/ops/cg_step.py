"""``i2f_fast.ops.cg_step``: one batched conjugate-gradient iteration, as a ``torch.library`` op.

The op ``i2f_fast::cg_step`` is defined in ``i2f_fast/_library.py``. Its kernel is currently the
pure-PyTorch reference (``i2f_fast/reference/cg_step.py``) for every device; compiled CPU / CUDA /
Triton kernels register behind the same op without changing this function.
"""
import torch

from .. import _library  # noqa: F401  (defines the schema)
from ..reference.cg_step import cg_step_ref


@torch.library.impl("i2f_fast::cg_step", "CompositeExplicitAutograd")
def _cg_step_kernel(x, r, p, Ap, rr, active):
    return cg_step_ref(x, r, p, Ap, rr, active)


@torch.library.register_fake("i2f_fast::cg_step")
def _cg_step_fake(x, r, p, Ap, rr, active):
    return torch.empty_like(rr), torch.empty_like(active)


def cg_step(x, r, p, Ap, rr, active):
    """One conjugate-gradient iteration for B independent systems, with no host sync.

    Args:
        x, r, p: ``(B, D)`` float32/float64 iterate, residual, search direction (updated in place).
        Ap: ``(B, D)`` operator applied to ``p`` (same dtype and device).
        rr: ``(B,)`` current ``r·r`` per row (same dtype).
        active: ``(B,)`` bool mask of rows that take a step.

    Returns:
        ``(rr_new, active_new)``, both ``(B,)``. A row with ``p·Ap <= 0`` or a non-finite ``p·Ap``
        is frozen and drops out of ``active_new`` (breakdown); inactive rows are untouched.

    Raises:
        ValueError / TypeError naming the offending argument for bad shapes, dtypes or devices.
    """
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
    if rr.shape != (x.shape[0],) or rr.dtype != x.dtype or rr.device != x.device:
        raise ValueError(f"cg_step: rr must be a ({x.shape[0]},) {x.dtype} tensor on {x.device}")
    if active.shape != (x.shape[0],) or active.dtype != torch.bool or active.device != x.device:
        raise ValueError(f"cg_step: active must be a ({x.shape[0]},) bool tensor on {x.device}")
    return torch.ops.i2f_fast.cg_step(x, r, p, Ap, rr, active)
