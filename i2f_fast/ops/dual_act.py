"""``i2f_fast.ops.dual_act``: the engine's activation rule ``σ'(z)⊙t + σ''(z)⊙da⊙s``, as a
``torch.library`` op.

Five places (DESIGN.md §4): the schema in ``_library.py``; this module (public function, argument
checks, routing; its fake kernel is registered from ``_formulas.py``); the reference ``reference/dual_act.py``; the C++/OpenMP kernel
``csrc/cpu/dual_act_cpu.cpp`` and the CUDA kernel ``csrc/cuda/dual_act_cuda.cu`` (the derivative
formulas in ``csrc/include/i2f_fast/dual_act.h``, shared by both); the Triton kernel
``triton/dual_act.py``. ``torch.ops.i2f_fast.dual_act`` runs the compiled kernel of the tensors'
device, or the reference (registered as the CompositeExplicitAutograd kernel) where none is loaded.
The op is not differentiable (the engine never differentiates through it): its backward raises.
"""
import torch

from .. import _loader  # noqa: F401  (schema, then the compiled kernels when built)
from .. import _formulas
from ..backend import kernel as backend_kernel
from ..reference.dual_act import ACTIVATIONS, dual_act_ref
from ._engine_checks import check_number, check_tensor, register_not_differentiable


@torch.library.impl("i2f_fast::dual_act", "CompositeExplicitAutograd")
def _dual_act_kernel(z, t, s, da, act, alpha, threshold):
    return dual_act_ref(z, t, s, da, act, alpha, threshold)


_formulas.register("dual_act")  # fake kernel (_formulas.py)
register_not_differentiable("dual_act")


def _check(z, t, s, da, act, alpha, threshold):
    op = "dual_act"
    check_tensor(op, "z", z)
    check_tensor(op, "t", t, z)
    if t.dim() < z.dim() or t.shape[t.dim() - z.dim():] != z.shape:
        raise ValueError(f"dual_act: t must have shape (*L, *{tuple(z.shape)}), got {tuple(t.shape)}")
    if (s is None) != (da is None):
        raise ValueError("dual_act: s and da must be given together (or neither)")
    if s is not None:
        check_tensor(op, "s", s, z)
        check_tensor(op, "da", da, z)
        if s.shape != t.shape:
            raise ValueError(f"dual_act: s must have t's shape {tuple(t.shape)}, got {tuple(s.shape)}")
        if da.shape != z.shape:
            raise ValueError(f"dual_act: da must have z's shape {tuple(z.shape)}, got {tuple(da.shape)}")
    if act not in ACTIVATIONS:
        raise ValueError(f"dual_act: act must be one of {', '.join(ACTIVATIONS)}, got {act!r}")
    check_number(op, "alpha", alpha)
    check_number(op, "threshold", threshold)


def dual_act(z, t, s=None, da=None, act="tanh", alpha=0.0, threshold=20.0):
    """``σ'(z) ⊙ t + σ''(z) ⊙ da ⊙ s`` in one pass (the second term only when ``s`` and ``da`` are given).

    The three elementwise combinations of an activation node of the structured engine: the
    forward tangent ``σ'⊙ż`` (no ``s``/``da``), the backward tangent ``σ'⊙δȧ + σ''⊙ż⊙δa`` and
    the downward adjoint ``σ'⊙ā + σ''⊙δa⊙ē``.

    Args:
        z: ``(*M)`` cached pre-activation, float32 or float64.
        t: ``(*L, *M)`` tangent or adjoint; any leading dims ``L`` (e.g. the ``k`` tangents) share
            ``z`` and ``da``. Same dtype and device as ``z``.
        s: ``(*L, *M)`` second tangent/adjoint (``ż`` or ``ē``), or None.
        da: ``(*M)`` primal adjoint ``∂L/∂a`` of the activation's output, or None.
        act: one of :data:`i2f_fast.reference.dual_act.ACTIVATIONS`.
        alpha: leaky ReLU's negative slope, ELU's alpha or softplus's beta (ignored otherwise).
        threshold: softplus's threshold (ignored otherwise).

    Derivatives follow PyTorch's autograd, including its one-sided values at the kinks. Non-contiguous
    inputs are copied to contiguous ones; zero-size inputs give zero-size outputs. The kernel
    (reference, C++/OpenMP, CUDA or Triton) is chosen by :mod:`i2f_fast.backend`; not differentiable.

    Returns:
        ``(*L, *M)`` tensor of ``t``'s dtype, on ``t``'s device.

    Raises:
        ValueError / TypeError naming the offending argument for bad shapes, dtypes, devices or
        activation names; :class:`i2f_fast.backend.BackendUnavailableError` when the requested
        backend cannot run.
    """
    _check(z, t, s, da, act, alpha, threshold)
    kernel = backend_kernel("dual_act", t.device)
    alpha, threshold = float(alpha), float(threshold)
    if kernel is None:  # the reference backend
        return dual_act_ref(z, t, s, da, act, alpha, threshold)
    s = None if s is None else s.contiguous()
    da = None if da is None else da.contiguous()
    return kernel(z.contiguous(), t.contiguous(), s, da, act, alpha, threshold)
