"""``i2f_fast.ops.tv``: anisotropic total variation of a batch of images, value and gradient in one op.

Five places (DESIGN.md §4): the schema in ``_library.py``; this module (public function, argument
checks, routing; its fake kernel and autograd formula are registered from ``_formulas.py``); the reference ``reference/tv.py``; the C++/OpenMP kernel
``csrc/cpu/tv_cpu.cpp`` and the CUDA kernel ``csrc/cuda/tv_cuda.cu``; the Triton kernel ``triton/tv.py``.
"""
from __future__ import annotations

import torch

from .. import _loader  # noqa: F401  (schema, then the compiled kernels when built)
from .. import _formulas
from ..backend import kernel as backend_kernel
from ..reference.tv import tv_ref


@torch.library.impl("i2f_fast::tv", "CompositeExplicitAutograd")
def _tv_kernel(x):
    return tv_ref(x)


_formulas.register("tv")  # fake kernel and autograd formula (_formulas.py)


def tv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Total variation ``mean|Δ_horizontal x| + mean|Δ_vertical x|`` per restart, and its gradient.

    Args:
        x: ``(R, N, C, H, W)`` (R restarts of an NCHW batch) or ``(N, C, H, W)``; float32 or float64.

    Returns:
        ``(value, grad)``: ``value`` ``(R,)`` (``()`` for NCHW input), the means taken over each
        restart's N·C images; ``grad`` shaped like ``x`` (``sign`` of a zero difference is 0). A side
        of length 1 contributes 0. ``value`` is differentiable in ``x`` (``grad`` is not).

    Raises:
        ValueError: ``x`` is not 4-D or 5-D; TypeError: not float32/float64;
        :class:`i2f_fast.backend.BackendUnavailableError` when the requested backend cannot run.
    """
    if not isinstance(x, torch.Tensor) or x.dim() not in (4, 5):
        raise ValueError(f"tv: x must be (N, C, H, W) or (R, N, C, H, W), got {getattr(x, 'shape', type(x).__name__)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"tv: x must be float32 or float64, got {x.dtype}")
    kernel = backend_kernel("tv", x.device)
    if kernel is None:  # the reference backend
        return tv_ref(x)
    if x.dim() == 5:
        return kernel(x.contiguous())
    value, grad = kernel(x.contiguous().unsqueeze(0))
    return value[0], grad[0]
