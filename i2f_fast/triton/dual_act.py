"""Triton kernel of ``i2f_fast::dual_act``: ``σ'(z)⊙t + σ''(z)⊙da⊙s`` for every activation of
the engine, batched over the leading dims of ``t`` and ``s``, in one pass.

Same formulas as the reference and the C++/CUDA kernels (``csrc/include/i2f_fast/dual_act.h``);
``tanh`` is written with ``exp`` (Triton has no portable tanh). The activation and the presence
of the second term are compile-time constants (one specialisation each). ``alpha`` and
``threshold`` travel as float32 (hi, lo) pairs, since Triton passes Python floats as float32:
``hi + lo`` restores them to ~48 bits for float64 inputs.

Grid mapping: one program per ``BLOCK`` output elements; element ``i`` reads ``z`` and ``da`` at
``i mod numel(z)``. Runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1``.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .. import _formulas

from ..reference.dual_act import ACTIVATIONS

BLOCK = 1024
_CODES = {name: i for i, name in enumerate(ACTIVATIONS)}  # the order of ActCode in dual_act.h


@triton.jit
def _sigmoid(x):
    e = tl.exp(-tl.abs(x))  # no overflow for large |x|
    return tl.where(x >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def _tanh(x):
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0.0, -t, t)


@triton.jit
def _dual_act_kernel(z_ptr, t_ptr, s_ptr, da_ptr, out_ptr, total, M, alpha_hi, alpha_lo, thr_hi, thr_lo,
                     ACT: tl.constexpr, SECOND: tl.constexpr, BLOCK: tl.constexpr):
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < total
    j = idx % M
    dtype = out_ptr.dtype.element_ty
    z = tl.load(z_ptr + j, mask=mask, other=0.0)
    t = tl.load(t_ptr + idx, mask=mask, other=0.0)
    alpha = tl.cast(alpha_hi, dtype) + tl.cast(alpha_lo, dtype)
    threshold = tl.cast(thr_hi, dtype) + tl.cast(thr_lo, dtype)
    if ACT == 0:  # sigmoid
        sg = _sigmoid(z)
        d1 = sg * (1.0 - sg)
        d2 = d1 * (1.0 - 2.0 * sg)
    elif ACT == 1:  # tanh
        th = _tanh(z)
        d1 = 1.0 - th * th
        d2 = -2.0 * th * d1
    elif ACT == 2:  # relu
        d1 = tl.where(z > 0.0, 1.0, 0.0).to(dtype)
        d2 = tl.zeros_like(z)
    elif ACT == 3:  # leaky_relu
        d1 = tl.where(z > 0.0, 1.0, alpha).to(dtype)
        d2 = tl.zeros_like(z)
    elif ACT == 4:  # elu
        neg = alpha * tl.exp(tl.minimum(z, 0.0))
        d1 = tl.where(z > 0.0, 1.0, neg).to(dtype)
        d2 = tl.where(z < 0.0, neg, 0.0).to(dtype)
    elif ACT == 5:  # gelu
        pdf = tl.exp(-0.5 * z * z) * 0.39894228040143267794
        cdf = 0.5 * (1.0 + tl.erf(z * 0.70710678118654752440))
        d1 = cdf + z * pdf
        d2 = pdf * (2.0 - z * z)
    elif ACT == 6:  # gelu_tanh
        u = 0.79788456080286535588 * (z + 0.044715 * z * z * z)
        du = 0.79788456080286535588 * (1.0 + 3.0 * 0.044715 * z * z)
        ddu = 0.79788456080286535588 * 6.0 * 0.044715 * z
        th = _tanh(u)
        sech2 = 1.0 - th * th
        d1 = 0.5 * (1.0 + th) + 0.5 * z * sech2 * du
        d2 = sech2 * (du - z * th * du * du + 0.5 * z * ddu)
    elif ACT == 7:  # silu
        sg = _sigmoid(z)
        d1 = sg * (1.0 + z * (1.0 - sg))
        d2 = sg * (1.0 - sg) * (2.0 + z * (1.0 - 2.0 * sg))
    else:  # softplus
        bz = alpha * z
        sg = _sigmoid(bz)
        d1 = tl.where(bz > threshold, 1.0, sg).to(dtype)
        d2 = tl.where(bz >= threshold, 0.0, alpha * sg * (1.0 - sg)).to(dtype)  # autograd's double backward
    out = d1 * t
    if SECOND:
        s = tl.load(s_ptr + idx, mask=mask, other=0.0)
        da = tl.load(da_ptr + j, mask=mask, other=0.0)
        out += d2 * da * s
    tl.store(out_ptr + idx, out.to(dtype), mask=mask)


def _split(v: float) -> tuple[float, float]:
    """``v`` as float32 ``(hi, lo)`` with ``hi + lo ≈ v`` to ~48 bits."""
    hi = float(torch.tensor(v, dtype=torch.float32))
    return hi, float(torch.tensor(v - hi, dtype=torch.float32))


def _launch(wrap, z, t, s, da, act, alpha, threshold):
    out = torch.empty_like(t)
    total, M = t.numel(), z.numel()
    if total == 0 or M == 0:
        return out
    second = s is not None
    a_hi, a_lo = _split(alpha)
    t_hi, t_lo = _split(threshold)
    grid = (triton.cdiv(total, BLOCK),)
    wrap(_dual_act_kernel)[grid](
        z, t, s if second else t, da if second else z, out, total, M, a_hi, a_lo, t_hi, t_lo,
        ACT=_CODES[act], SECOND=second, BLOCK=BLOCK,
    )
    return out


if hasattr(torch.library, "triton_op"):  # torch >= 2.6: visible to torch.compile as one op

    @torch.library.triton_op("i2f_fast::dual_act_triton", mutates_args=())
    def dual_act_triton(
        z: torch.Tensor, t: torch.Tensor, s: Optional[torch.Tensor], da: Optional[torch.Tensor], act: str,
        alpha: float, threshold: float,
    ) -> torch.Tensor:
        """Triton implementation of ``i2f_fast::dual_act`` (contiguous inputs; see ``ops.dual_act``)."""
        return _launch(torch.library.wrap_triton, z, t, s, da, act, alpha, threshold)

    _formulas.register("dual_act", dual_act_triton)  # the op's fake kernel

else:

    def dual_act_triton(z, t, s, da, act, alpha, threshold):
        """Triton implementation of ``i2f_fast::dual_act`` (contiguous inputs; see ``ops.dual_act``)."""
        return _launch(lambda kernel: kernel, z, t, s, da, act, alpha, threshold)
