"""Triton kernels of ``i2f_fast::gram_apply``: ``(U a + u_b, Uᵀ e)`` for
``U = Σ_n ė_n a_nᵀ + e_n ȧ_nᵀ`` per (tangent, group) program, without forming ``U``.

Same algorithm and workspace layout as the C++ and CUDA kernels
(``csrc/include/i2f_fast/gram_apply.h``): ``coef[p][q][n][m]`` with q = 0: ``a_n·a_m + bias``,
1: ``ȧ_n·a_m``, 2: ``ė_n·e_m``, 3: ``e_n·e_m``, accumulated in the input dtype (float32 or
float64). Grid mapping: ``_gram_kernel`` has one program per (p, n, m) triple, reducing its four
dot products over tiles of ``BLOCK`` columns; ``_apply_kernel`` has one program per (output row
(p, m), column tile), summing the S scaled rows of ``ua`` and ``ute``. Runs on CUDA tensors, or
on CPU tensors under ``TRITON_INTERPRET=1``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _formulas

BLOCK = 256


@triton.jit
def _gram_kernel(a_ptr, e_ptr, adot_ptr, edot_ptr, coef_ptr, G, S, I, O, bias, BLOCK: tl.constexpr):
    x = tl.program_id(0).to(tl.int64)
    m = x % S
    n = (x // S) % S
    p = x // (S * S)
    g = p % G
    dtype = coef_ptr.dtype.element_ty
    acc0 = tl.zeros((BLOCK,), dtype=dtype)
    acc1 = tl.zeros((BLOCK,), dtype=dtype)
    for i0 in range(0, I, BLOCK):
        i = i0 + tl.arange(0, BLOCK)
        mask = i < I
        am = tl.load(a_ptr + (g * S + m) * I + i, mask=mask, other=0.0)
        an = tl.load(a_ptr + (g * S + n) * I + i, mask=mask, other=0.0)
        adn = tl.load(adot_ptr + (p * S + n) * I + i, mask=mask, other=0.0)
        acc0 += an * am
        acc1 += adn * am
    acc2 = tl.zeros((BLOCK,), dtype=dtype)
    acc3 = tl.zeros((BLOCK,), dtype=dtype)
    for o0 in range(0, O, BLOCK):
        o = o0 + tl.arange(0, BLOCK)
        mask = o < O
        em = tl.load(e_ptr + (g * S + m) * O + o, mask=mask, other=0.0)
        en = tl.load(e_ptr + (g * S + n) * O + o, mask=mask, other=0.0)
        edn = tl.load(edot_ptr + (p * S + n) * O + o, mask=mask, other=0.0)
        acc2 += edn * em
        acc3 += en * em
    base = coef_ptr + p * 4 * S * S + n * S + m
    tl.store(base, (tl.sum(acc0, axis=0) + bias).to(dtype))
    tl.store(base + S * S, tl.sum(acc1, axis=0).to(dtype))
    tl.store(base + 2 * S * S, tl.sum(acc2, axis=0).to(dtype))
    tl.store(base + 3 * S * S, tl.sum(acc3, axis=0).to(dtype))


@triton.jit
def _apply_kernel(a_ptr, e_ptr, adot_ptr, edot_ptr, coef_ptr, ua_ptr, ute_ptr, G, S, I, O, BLOCK: tl.constexpr):
    x = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = x % S
    p = x // S
    g = p % G
    dtype = coef_ptr.dtype.element_ty
    mask_o = j < O
    mask_i = j < I
    acc_ua = tl.zeros((BLOCK,), dtype=dtype)
    acc_ute = tl.zeros((BLOCK,), dtype=dtype)
    c = coef_ptr + p * 4 * S * S + m
    for n in range(0, S):
        c0 = tl.load(c + n * S)
        c1 = tl.load(c + S * S + n * S)
        c2 = tl.load(c + 2 * S * S + n * S)
        c3 = tl.load(c + 3 * S * S + n * S)
        edn = tl.load(edot_ptr + (p * S + n) * O + j, mask=mask_o, other=0.0)
        en = tl.load(e_ptr + (g * S + n) * O + j, mask=mask_o, other=0.0)
        an = tl.load(a_ptr + (g * S + n) * I + j, mask=mask_i, other=0.0)
        adn = tl.load(adot_ptr + (p * S + n) * I + j, mask=mask_i, other=0.0)
        acc_ua += c0 * edn + c1 * en
        acc_ute += c2 * an + c3 * adn
    tl.store(ua_ptr + x * O + j, acc_ua, mask=mask_o)
    tl.store(ute_ptr + x * I + j, acc_ute, mask=mask_i)


def _launch(wrap, a, e, adot, edot, bias):
    K, (G, S, I), O = adot.shape[0], a.shape, e.shape[2]
    ua = a.new_empty((K, G, S, O))
    ute = a.new_empty((K, G, S, I))
    programs = K * G
    if programs * S == 0:
        return ua, ute
    coef = a.new_empty((programs * 4 * S * S,))
    wrap(_gram_kernel)[(programs * S * S,)](a, e, adot, edot, coef, G, S, I, O, 1.0 if bias else 0.0, BLOCK=BLOCK)
    col_tiles = max(1, triton.cdiv(max(I, O), BLOCK))
    wrap(_apply_kernel)[(programs * S, col_tiles)](a, e, adot, edot, coef, ua, ute, G, S, I, O, BLOCK=BLOCK)
    return ua, ute


if hasattr(torch.library, "triton_op"):  # torch >= 2.6: visible to torch.compile as one op

    @torch.library.triton_op("i2f_fast::gram_apply_triton", mutates_args=())
    def gram_apply_triton(
        a: torch.Tensor, e: torch.Tensor, adot: torch.Tensor, edot: torch.Tensor, bias: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Triton implementation of ``i2f_fast::gram_apply`` (contiguous inputs; see ``ops.gram_apply``)."""
        return _launch(torch.library.wrap_triton, a, e, adot, edot, bias)

    _formulas.register("gram_apply", gram_apply_triton)  # the op's fake kernel

else:

    def gram_apply_triton(a, e, adot, edot, bias):
        """Triton implementation of ``i2f_fast::gram_apply`` (contiguous inputs; see ``ops.gram_apply``)."""
        return _launch(lambda kernel: kernel, a, e, adot, edot, bias)
