"""A Triton kernel shared by the ops' launchers: the per-row total of float64 partial sums.

Grid mapping: one program per row; the row's ``cols`` partials (one per tile of the first pass)
are summed in BLOCK-wide strips, always in the same order, so results are deterministic.
"""
from __future__ import annotations

import triton
import triton.language as tl

BLOCK = 128


@triton.jit
def row_totals_kernel(partial_ptr, out_ptr, COLS, BLOCK: tl.constexpr):
    """``out[row] = Σ_c partial[row, c]`` (cast to ``out``'s dtype) for a ``(rows, COLS)`` float64 buffer."""
    row = tl.program_id(0).to(tl.int64)
    acc = tl.zeros((BLOCK,), dtype=tl.float64)
    for start in range(0, COLS, BLOCK):
        c = start + tl.arange(0, BLOCK)
        acc += tl.load(partial_ptr + row * COLS + c, mask=c < COLS, other=0.0)
    tl.store(out_ptr + row, tl.sum(acc, axis=0).to(out_ptr.dtype.element_ty))
