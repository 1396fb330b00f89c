"""``i2f_fast.ops.ce_hvp``: the softmax-cross-entropy Hessian applied per sample,
``scale·(p⊙u − p (p·u))``, as a ``torch.library`` op.

Five places (DESIGN.md §4): the schema in ``_library.py``; this module (public function, argument
checks, routing; its fake kernel is registered from ``_formulas.py``); the reference ``reference/ce_hvp.py``; the C++/OpenMP kernel
``csrc/cpu/ce_hvp_cpu.cpp`` and the CUDA kernel ``csrc/cuda/ce_hvp_cuda.cu`` (per-row math in
``csrc/include/i2f_fast/ce_hvp.h``); the Triton kernel ``triton/ce_hvp.py``.
``torch.ops.i2f_fast.ce_hvp`` runs the compiled kernel of the tensors' device, or the reference
(registered as the CompositeExplicitAutograd kernel) where none is loaded. Not differentiable.
"""
import torch

from .. import _loader  # noqa: F401  (schema, then the compiled kernels when built)
from .. import _formulas
from ..backend import kernel as backend_kernel
from ..reference.ce_hvp import ce_hvp_ref
from ._engine_checks import check_number, check_tensor, register_not_differentiable


@torch.library.impl("i2f_fast::ce_hvp", "CompositeExplicitAutograd")
def _ce_hvp_kernel(p, u, scale):
    return ce_hvp_ref(p, u, scale)


_formulas.register("ce_hvp")  # fake kernel (_formulas.py)
register_not_differentiable("ce_hvp")


def _check(p, u, scale):
    check_tensor("ce_hvp", "p", p)
    check_tensor("ce_hvp", "u", u, p)
    if p.dim() != 2:
        raise ValueError(f"ce_hvp: p must be a 2-D tensor (N, C), got shape {tuple(p.shape)}")
    if u.dim() < 2 or u.shape[u.dim() - 2:] != p.shape:
        raise ValueError(f"ce_hvp: u must have shape (*L, *{tuple(p.shape)}), got {tuple(u.shape)}")
    check_number("ce_hvp", "scale", scale)


def ce_hvp(p, u, scale=1.0):
    """The softmax-cross-entropy Hessian applied to ``u``: ``scale · (p ⊙ u − p (p · u))`` per row.

    For logits of N samples with ``p = softmax(z)``, this is the Hessian of ``scale · Σ_n CE(z_n, y_n)``
    with respect to ``z`` applied row by row (it does not depend on the labels); the engine uses it
    for ``ė_last = H ż_last`` and ``z̄_last = H ē_last``. One pass per row, with the row's dot
    product ``p·u`` reduced in the kernel (in double).

    Args:
        p: ``(N, C)`` softmax probabilities, float32 or float64.
        u: ``(*L, N, C)`` tangents, any leading dims ``L`` (e.g. ``k``); ``p``'s dtype and device.
        scale: ``1/N`` for a batch-mean loss, ``1`` per sample.

    Non-contiguous inputs are copied to contiguous ones; zero-size inputs work. The kernel is
    chosen by :mod:`i2f_fast.backend`; not differentiable.

    Returns:
        ``(*L, N, C)`` tensor of ``u``'s dtype.

    Raises:
        ValueError / TypeError naming the offending argument;
        :class:`i2f_fast.backend.BackendUnavailableError` when the requested backend cannot run.
    """
    _check(p, u, scale)
    kernel = backend_kernel("ce_hvp", u.device)
    if kernel is None:  # the reference backend
        return ce_hvp_ref(p, u, float(scale))
    return kernel(p.contiguous(), u.contiguous(), float(scale))
