"""Triton kernel of ``i2f_fast::attack_step``: one (signed) Adam step plus the box, in place.

Same algorithm as the C++ and CUDA kernels (``csrc/include/i2f_fast/attack_step.h``). Why fused:
x, grad and the two moments are read once and x and the moments written once, instead of ~12
torch ops each making a full pass; the step size and bias corrections are read from device
tensors, so the launch can be captured in a CUDA graph.

Grid mapping: the R·inner elements (R restarts of ``inner`` elements each) are one flat range,
``BLOCK`` elements per program; the Adam constants are compile-time constants (exact in
float64, where a runtime float argument would be rounded to float32); element e uses ``lr[e // inner]`` (or the one lr) and the bounds'
element ``e % inner``. Runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _formulas

BLOCK = 1024


@triton.jit
def _attack_step_kernel(x_ptr, g_ptr, m_ptr, v_ptr, lr_ptr, bc1_ptr, bc2_ptr, lower_ptr, upper_ptr, numel, inner,
                        W1: tl.constexpr, BETA2: tl.constexpr, W2: tl.constexpr, EPS: tl.constexpr,
                        SIGNED: tl.constexpr, PER_ROW_LR: tl.constexpr,
                        HAS_LOWER: tl.constexpr, HAS_UPPER: tl.constexpr, BLOCK: tl.constexpr):
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = e < numel
    x = tl.load(x_ptr + e, mask=mask, other=0.0)
    dtype = x.dtype
    g = tl.load(g_ptr + e, mask=mask, other=0.0)
    m = tl.load(m_ptr + e, mask=mask, other=0.0)
    v = tl.load(v_ptr + e, mask=mask, other=0.0)
    if PER_ROW_LR:
        lr = tl.load(lr_ptr + e // inner, mask=mask, other=0.0)
    else:
        lr = tl.load(lr_ptr)
    step = lr / tl.load(bc1_ptr)
    inv_sqrt_bc2 = 1.0 / tl.sqrt(tl.load(bc2_ptr))
    u = g
    if SIGNED:
        u = (g > 0).to(dtype) - (g < 0).to(dtype)
    m = m + tl.full((), W1, dtype) * (u - m)
    v = v * tl.full((), BETA2, dtype) + tl.full((), W2, dtype) * (u * u)
    x = x - (m * step) / (tl.sqrt(v) * inv_sqrt_bc2 + tl.full((), EPS, dtype))
    k = e % inner
    if HAS_LOWER:
        lo = tl.load(lower_ptr + k, mask=mask, other=0.0)
        x = tl.where(x < lo, lo, x)
    if HAS_UPPER:
        hi = tl.load(upper_ptr + k, mask=mask, other=0.0)
        x = tl.where(x > hi, hi, x)
    tl.store(x_ptr + e, x, mask=mask)
    tl.store(m_ptr + e, m, mask=mask)
    tl.store(v_ptr + e, v, mask=mask)


def _launch(wrap, x, grad, exp_avg, exp_avg_sq, lr, bc1, bc2, beta1, beta2, eps, signed, lower, upper):
    numel = x.numel()
    if numel == 0:
        return
    inner = numel // x.shape[0]
    wrap(_attack_step_kernel)[(triton.cdiv(numel, BLOCK),)](
        x, grad, exp_avg, exp_avg_sq, lr, bc1, bc2,
        x if lower is None else lower, x if upper is None else upper,  # valid pointers, unread when absent
        numel, inner, W1=1.0 - beta1, BETA2=beta2, W2=1.0 - beta2, EPS=eps,
        SIGNED=signed, PER_ROW_LR=lr.numel() > 1, HAS_LOWER=lower is not None, HAS_UPPER=upper is not None,
        BLOCK=BLOCK,
    )


if hasattr(torch.library, "triton_op"):  # torch >= 2.6: visible to torch.compile as one op

    @torch.library.triton_op("i2f_fast::attack_step_triton", mutates_args={"x", "exp_avg", "exp_avg_sq"})
    def attack_step_triton(
        x: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, lr: torch.Tensor,
        bias_correction1: torch.Tensor, bias_correction2: torch.Tensor, beta1: float, beta2: float, eps: float,
        signed: bool, lower: torch.Tensor | None, upper: torch.Tensor | None,
    ) -> None:
        """Triton implementation of ``i2f_fast::attack_step`` (contiguous inputs; see ``ops.attack_step``)."""
        _launch(torch.library.wrap_triton, x, grad, exp_avg, exp_avg_sq, lr, bias_correction1, bias_correction2,
                beta1, beta2, eps, signed, lower, upper)

    _formulas.register("attack_step", attack_step_triton)  # the op's fake kernel

else:

    def attack_step_triton(x, grad, exp_avg, exp_avg_sq, lr, bias_correction1, bias_correction2, beta1, beta2, eps,
                           signed, lower, upper):
        """Triton implementation of ``i2f_fast::attack_step`` (contiguous inputs; see ``ops.attack_step``)."""
        _launch(lambda kernel: kernel, x, grad, exp_avg, exp_avg_sq, lr, bias_correction1, bias_correction2,
                beta1, beta2, eps, signed, lower, upper)
