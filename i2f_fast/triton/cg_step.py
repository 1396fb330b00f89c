"""Triton kernels of ``i2f_fast::cg_step``: one CG iteration for B rows, two passes over memory.

Same algorithm as the C++ and CUDA kernels (``csrc/include/i2f_fast/cg_step.h``): pass 1 reads
p, Ap and r once and accumulates p·Ap, r·Ap, Ap·Ap and r·r in float64; the closed form
``rr' = r·r − 2α r·Ap + α² Ap·Ap`` gives β before r' exists, so pass 2 updates x, r and p in one
sweep while it accumulates the exact r'·r'. Rows whose predicted rr' falls below
``EXACT_BETA_RATIO · r·r`` (cancellation) take β from the exact sum in a third sweep over p.

Grid mapping: each row is cut into tiles of ``TILE`` elements; one program per (row, tile) for
the sweeps and one program per row for the reductions (fixed order: deterministic results).
No host synchronisation. Runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _formulas

TILE = 4096
EXACT_BETA_RATIO = 1e-4  # keep equal to kExactBetaRatio in csrc/include/i2f_fast/cg_step.h


@triton.jit
def _is_finite(v):
    return v - v == 0.0


@triton.jit
def _row_sums_kernel(r_ptr, p_ptr, ap_ptr, active_ptr, sums_ptr, D, TILES_PER_ROW, TILE: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    row = t // TILES_PER_ROW
    idx = (t % TILES_PER_ROW) * TILE + tl.arange(0, TILE)
    active = tl.load(active_ptr + row) != 0
    mask = (idx < D) & active
    base = row * D
    a = tl.load(ap_ptr + base + idx, mask=mask, other=0.0).to(tl.float64)
    p = tl.load(p_ptr + base + idx, mask=mask, other=0.0).to(tl.float64)
    r = tl.load(r_ptr + base + idx, mask=mask, other=0.0).to(tl.float64)
    tl.store(sums_ptr + t * 4 + 0, tl.sum(p * a, axis=0))
    tl.store(sums_ptr + t * 4 + 1, tl.sum(r * a, axis=0))
    tl.store(sums_ptr + t * 4 + 2, tl.sum(a * a, axis=0))
    tl.store(sums_ptr + t * 4 + 3, tl.sum(r * r, axis=0))


@triton.jit
def _row_plan_kernel(sums_ptr, rr_ptr, active_ptr, coef_ptr, flag_ptr, TILES_PER_ROW, RATIO, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    pAp = tl.zeros((BLOCK,), dtype=tl.float64)
    rAp = tl.zeros((BLOCK,), dtype=tl.float64)
    ApAp = tl.zeros((BLOCK,), dtype=tl.float64)
    rr = tl.zeros((BLOCK,), dtype=tl.float64)
    for start in range(0, TILES_PER_ROW, BLOCK):
        c = start + tl.arange(0, BLOCK)
        mask = c < TILES_PER_ROW
        slot = (row * TILES_PER_ROW + c) * 4
        pAp += tl.load(sums_ptr + slot + 0, mask=mask, other=0.0)
        rAp += tl.load(sums_ptr + slot + 1, mask=mask, other=0.0)
        ApAp += tl.load(sums_ptr + slot + 2, mask=mask, other=0.0)
        rr += tl.load(sums_ptr + slot + 3, mask=mask, other=0.0)
    pAp_s = tl.sum(pAp, axis=0)
    rAp_s = tl.sum(rAp, axis=0)
    ApAp_s = tl.sum(ApAp, axis=0)
    rr_s = tl.sum(rr, axis=0)
    rr_in = tl.load(rr_ptr + row).to(tl.float64)
    active = tl.load(active_ptr + row) != 0
    step = active & _is_finite(pAp_s) & (pAp_s > 0.0)
    alpha = tl.where(step, rr_in / tl.where(step, pAp_s, 1.0), 0.0)
    predicted = rr_s - 2.0 * alpha * rAp_s + alpha * alpha * ApAp_s
    exact = step & ~(_is_finite(predicted) & (predicted > RATIO * rr_s))
    closed = step & ~exact & (rr_in > 0.0)
    beta = tl.where(closed, predicted / tl.where(closed, rr_in, 1.0), 0.0)
    tl.store(coef_ptr + row * 2 + 0, alpha)
    tl.store(coef_ptr + row * 2 + 1, beta)
    tl.store(flag_ptr + row * 2 + 0, step.to(tl.int32))
    tl.store(flag_ptr + row * 2 + 1, exact.to(tl.int32))


@triton.jit
def _update_kernel(x_ptr, r_ptr, p_ptr, ap_ptr, coef_ptr, flag_ptr, rr_partial_ptr, D, TILES_PER_ROW,
                   TILE: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    row = t // TILES_PER_ROW
    idx = (t % TILES_PER_ROW) * TILE + tl.arange(0, TILE)
    step = tl.load(flag_ptr + row * 2 + 0) != 0
    update_p = step & (tl.load(flag_ptr + row * 2 + 1) == 0)
    dtype = x_ptr.dtype.element_ty
    alpha = tl.load(coef_ptr + row * 2 + 0).to(dtype)
    beta = tl.load(coef_ptr + row * 2 + 1).to(dtype)
    mask = (idx < D) & step
    base = row * D
    x = tl.load(x_ptr + base + idx, mask=mask, other=0.0)
    r = tl.load(r_ptr + base + idx, mask=mask, other=0.0)
    p = tl.load(p_ptr + base + idx, mask=mask, other=0.0)
    a = tl.load(ap_ptr + base + idx, mask=mask, other=0.0)
    r_new = r - alpha * a
    tl.store(x_ptr + base + idx, x + alpha * p, mask=mask)
    tl.store(r_ptr + base + idx, r_new, mask=mask)
    tl.store(p_ptr + base + idx, r_new + beta * p, mask=mask & update_p)
    r64 = r_new.to(tl.float64)
    tl.store(rr_partial_ptr + t, tl.sum(r64 * r64, axis=0))


@triton.jit
def _row_finish_kernel(rr_partial_ptr, rr_ptr, coef_ptr, flag_ptr, rr_out_ptr, stepped_ptr, TILES_PER_ROW,
                       BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    acc = tl.zeros((BLOCK,), dtype=tl.float64)
    for start in range(0, TILES_PER_ROW, BLOCK):
        c = start + tl.arange(0, BLOCK)
        acc += tl.load(rr_partial_ptr + row * TILES_PER_ROW + c, mask=c < TILES_PER_ROW, other=0.0)
    rr_new = tl.sum(acc, axis=0)
    step = tl.load(flag_ptr + row * 2 + 0) != 0
    exact = tl.load(flag_ptr + row * 2 + 1) != 0
    rr_in = tl.load(rr_ptr + row)
    tl.store(rr_out_ptr + row, tl.where(step, rr_new.to(rr_in.dtype), rr_in))
    tl.store(stepped_ptr + row, step.to(tl.uint8))
    rr_in64 = rr_in.to(tl.float64)
    exact_beta = tl.where(rr_in64 > 0.0, rr_new / tl.where(rr_in64 > 0.0, rr_in64, 1.0), 0.0)
    tl.store(coef_ptr + row * 2 + 1, exact_beta, mask=exact)


@triton.jit
def _exact_beta_kernel(r_ptr, p_ptr, coef_ptr, flag_ptr, D, TILES_PER_ROW, TILE: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    row = t // TILES_PER_ROW
    idx = (t % TILES_PER_ROW) * TILE + tl.arange(0, TILE)
    exact = tl.load(flag_ptr + row * 2 + 1) != 0
    beta = tl.load(coef_ptr + row * 2 + 1).to(p_ptr.dtype.element_ty)
    mask = (idx < D) & exact
    base = row * D
    r = tl.load(r_ptr + base + idx, mask=mask, other=0.0)
    p = tl.load(p_ptr + base + idx, mask=mask, other=0.0)
    tl.store(p_ptr + base + idx, r + beta * p, mask=mask)


def _launch(wrap, x, r, p, Ap, rr, active):
    B, D = x.shape
    rr_new = torch.empty_like(rr)
    stepped = torch.empty(B, dtype=torch.uint8, device=x.device)
    if B == 0:
        return rr_new, stepped.bool()
    tiles_per_row = triton.cdiv(D, TILE)
    tiles = B * tiles_per_row
    act = active.view(torch.uint8)
    sums = torch.empty(max(tiles, 1), 4, dtype=torch.float64, device=x.device)
    rr_partial = torch.empty(max(tiles, 1), dtype=torch.float64, device=x.device)
    coef = torch.empty(B, 2, dtype=torch.float64, device=x.device)
    flags = torch.empty(B, 2, dtype=torch.int32, device=x.device)
    block = 128
    if tiles:
        wrap(_row_sums_kernel)[(tiles,)](r, p, Ap, act, sums, D, tiles_per_row, TILE=TILE)
    wrap(_row_plan_kernel)[(B,)](sums, rr, act, coef, flags, tiles_per_row, EXACT_BETA_RATIO, BLOCK=block)
    if tiles:
        wrap(_update_kernel)[(tiles,)](x, r, p, Ap, coef, flags, rr_partial, D, tiles_per_row, TILE=TILE)
    wrap(_row_finish_kernel)[(B,)](rr_partial, rr, coef, flags, rr_new, stepped, tiles_per_row, BLOCK=block)
    if tiles:
        wrap(_exact_beta_kernel)[(tiles,)](r, p, coef, flags, D, tiles_per_row, TILE=TILE)
    return rr_new, stepped.bool()


if hasattr(torch.library, "triton_op"):  # torch >= 2.6: visible to torch.compile as one op

    @torch.library.triton_op("i2f_fast::cg_step_triton", mutates_args={"x", "r", "p"})
    def cg_step_triton(
        x: torch.Tensor, r: torch.Tensor, p: torch.Tensor, Ap: torch.Tensor, rr: torch.Tensor, active: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Triton implementation of ``i2f_fast::cg_step`` (contiguous inputs; see ``ops.cg_step``)."""
        return _launch(torch.library.wrap_triton, x, r, p, Ap, rr, active)

    _formulas.register("cg_step", cg_step_triton)  # the op's fake kernel

else:

    def cg_step_triton(x, r, p, Ap, rr, active):
        """Triton implementation of ``i2f_fast::cg_step`` (contiguous inputs; see ``ops.cg_step``)."""
        return _launch(lambda kernel: kernel, x, r, p, Ap, rr, active)
