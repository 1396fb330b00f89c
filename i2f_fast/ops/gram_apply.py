"""``i2f_fast.ops.gram_apply``: a linear layer's Gram contractions of the structured engine,
``(U a + u_b, Uᵀ e)`` for ``U = Σ_n ė_n a_nᵀ + e_n ȧ_nᵀ`` without forming ``U``, as a
``torch.library`` op.

Five places (DESIGN.md §4): the schema in ``_library.py``; this module (public function, argument
checks, routing; its fake kernel is registered from ``_formulas.py``); the reference ``reference/gram_apply.py``; the C++/OpenMP kernel
``csrc/cpu/gram_apply_cpu.cpp`` and the CUDA kernel ``csrc/cuda/gram_apply_cuda.cu`` (layout in
``csrc/include/i2f_fast/gram_apply.h``); the Triton kernel ``triton/gram_apply.py``.
``torch.ops.i2f_fast.gram_apply`` runs the compiled kernel of the tensors' device, or the
reference (registered as the CompositeExplicitAutograd kernel) where none is loaded. Not differentiable.
"""
import torch

from .. import _loader  # noqa: F401  (schema, then the compiled kernels when built)
from .. import _formulas
from ..backend import kernel as backend_kernel
from ..reference.gram_apply import gram_apply_ref
from ._engine_checks import check_tensor, register_not_differentiable


@torch.library.impl("i2f_fast::gram_apply", "CompositeExplicitAutograd")
def _gram_apply_kernel(a, e, adot, edot, bias):
    return gram_apply_ref(a, e, adot, edot, bias)


_formulas.register("gram_apply")  # fake kernel (_formulas.py)
register_not_differentiable("gram_apply")


def _check(a, e, adot, edot, bias):
    op = "gram_apply"
    check_tensor(op, "a", a)
    for name, t in (("e", e), ("adot", adot), ("edot", edot)):
        check_tensor(op, name, t, a)
    if a.dim() != 3:
        raise ValueError(f"gram_apply: a must be a 3-D tensor (G, S, I), got shape {tuple(a.shape)}")
    if e.dim() != 3 or e.shape[:2] != a.shape[:2]:
        raise ValueError(f"gram_apply: e must be (G, S, O) with a's G, S = {tuple(a.shape[:2])}, got {tuple(e.shape)}")
    if adot.dim() != 4 or adot.shape[1:] != a.shape:
        raise ValueError(f"gram_apply: adot must be (k, *{tuple(a.shape)}), got {tuple(adot.shape)}")
    if edot.dim() != 4 or edot.shape[0] != adot.shape[0] or edot.shape[1:] != e.shape:
        raise ValueError(
            f"gram_apply: edot must be ({adot.shape[0]}, *{tuple(e.shape)}) (adot's k), got {tuple(edot.shape)}"
        )
    if not isinstance(bias, bool):
        raise TypeError(f"gram_apply: bias must be a bool, got {type(bias).__name__}")


def gram_apply(a, e, adot, edot, bias=True):
    """``(U a + u_b, Uᵀ e)`` for ``U = Σ_n ė_n a_nᵀ + e_n ȧ_nᵀ`` within each group, without forming ``U``.

    Per group g and output row m (n runs over the group's S rows):
    ``ua_m = Σ_n ė_n (a_n·a_m + [bias]) + e_n (ȧ_n·a_m)`` and
    ``ute_m = Σ_n a_n (ė_n·e_m) + ȧ_n (e_n·e_m)``: four S×S Grams and their application, fused
    into one kernel per (tangent, group). G = 1 for one batched Jacobian (S = samples, or
    samples × tokens); G = N, S = 1 in per-sample mode.

    Args:
        a: ``(G, S, I)`` cached layer inputs, float32 or float64.
        e: ``(G, S, O)`` cached loss adjoints of the layer outputs ``∂L/∂z``.
        adot: ``(k, G, S, I)`` forward tangents of the inputs.
        edot: ``(k, G, S, O)`` backward tangents of the output adjoints.
        bias: the layer has a bias (adds ``u_b = Σ_n ė_n``).

    All tensors share ``a``'s dtype and device. Non-contiguous inputs are copied; zero-size inputs
    work. Grams accumulate in float32 for float32 and in double for float64. The kernel is chosen
    by :mod:`i2f_fast.backend`; not differentiable.

    Returns:
        ``(ua, ute)``: ``(k, G, S, O)`` and ``(k, G, S, I)``, ``a``'s dtype.

    Raises:
        ValueError / TypeError naming the offending argument;
        :class:`i2f_fast.backend.BackendUnavailableError` when the requested backend cannot run.
    """
    _check(a, e, adot, edot, bias)
    kernel = backend_kernel("gram_apply", a.device)
    if kernel is None:  # the reference backend
        return gram_apply_ref(a, e, adot, edot, bias)
    return kernel(a.contiguous(), e.contiguous(), adot.contiguous(), edot.contiguous(), bias)
