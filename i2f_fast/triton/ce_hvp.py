"""Triton kernel of ``i2f_fast::ce_hvp``: ``scale·(p⊙u − p (p·u))`` per row, one pass per row.

Same algorithm as the C++ and CUDA kernels (``csrc/include/i2f_fast/ce_hvp.h``): the row's
``p·u`` is reduced in float64, then the row is written. Grid mapping: one program per row of
``u`` (leading dims flattened; row ``r`` uses ``p``'s row ``r mod N``), looping over the row in
tiles of ``BLOCK`` columns (one tile for C ≤ 1024). Runs on CUDA tensors, or on CPU tensors under
``TRITON_INTERPRET=1``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _formulas

MAX_BLOCK = 1024


@triton.jit
def _ce_hvp_kernel(p_ptr, u_ptr, out_ptr, N, C, scale_hi, scale_lo, BLOCK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    dtype = out_ptr.dtype.element_ty
    p_row = p_ptr + (r % N) * C
    u_row = u_ptr + r * C
    acc = tl.zeros((BLOCK,), dtype=tl.float64)
    for c0 in range(0, C, BLOCK):
        c = c0 + tl.arange(0, BLOCK)
        mask = c < C
        p = tl.load(p_row + c, mask=mask, other=0.0).to(tl.float64)
        u = tl.load(u_row + c, mask=mask, other=0.0).to(tl.float64)
        acc += p * u
    dot = tl.sum(acc, axis=0).to(dtype)
    scale = tl.cast(scale_hi, dtype) + tl.cast(scale_lo, dtype)
    for c0 in range(0, C, BLOCK):
        c = c0 + tl.arange(0, BLOCK)
        mask = c < C
        p = tl.load(p_row + c, mask=mask, other=0.0)
        u = tl.load(u_row + c, mask=mask, other=0.0)
        tl.store(out_ptr + r * C + c, (scale * (p * u - p * dot)).to(dtype), mask=mask)


def _launch(wrap, p, u, scale):
    out = torch.empty_like(u)
    if u.numel() == 0:
        return out
    N, C = p.shape
    hi = float(torch.tensor(scale, dtype=torch.float32))
    lo = float(torch.tensor(scale - hi, dtype=torch.float32))
    block = min(MAX_BLOCK, triton.next_power_of_2(C))
    wrap(_ce_hvp_kernel)[(u.numel() // C,)](p, u, out, N, C, hi, lo, BLOCK=block)
    return out


if hasattr(torch.library, "triton_op"):  # torch >= 2.6: visible to torch.compile as one op

    @torch.library.triton_op("i2f_fast::ce_hvp_triton", mutates_args=())
    def ce_hvp_triton(p: torch.Tensor, u: torch.Tensor, scale: float) -> torch.Tensor:
        """Triton implementation of ``i2f_fast::ce_hvp`` (contiguous inputs; see ``ops.ce_hvp``)."""
        return _launch(torch.library.wrap_triton, p, u, scale)

    _formulas.register("ce_hvp", ce_hvp_triton)  # the op's fake kernel

else:

    def ce_hvp_triton(p, u, scale):
        """Triton implementation of ``i2f_fast::ce_hvp`` (contiguous inputs; see ``ops.ce_hvp``)."""
        return _launch(lambda kernel: kernel, p, u, scale)
