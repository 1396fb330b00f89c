"""Triton kernels of ``i2f_fast::grad_match``: matching loss of R trial gradients and ∂loss/∂trial.

Same algorithm as the C++ and CUDA kernels (``csrc/include/i2f_fast/grad_match.h``). cosine:
pass 1 accumulates ⟨g',g⟩_w, ‖g'‖²_w, ‖g‖²_w per tile in float64; a per-row plan kernel reduces
the tiles in a fixed order and forms the loss, the scale and the ratio; pass 2 writes
``grad = −scale·(w g − ratio·w g')``. l2: one pass writes ``2w(g'−g)`` and the loss partials,
then a per-row total. Why fused: trial, target and weights are read at most twice and the
gradient written once, instead of ~15 torch ops with full-length temporaries.

Grid mapping: each row is cut into tiles of ``TILE`` elements; one program per (row, tile) for
the sweeps and one per row for the reductions. No host synchronisation. Runs on CUDA tensors, or
on CPU tensors under ``TRITON_INTERPRET=1``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _formulas
from ._reduce import BLOCK, row_totals_kernel

TILE = 4096


@triton.jit
def _cosine_sums_kernel(trial_ptr, target_ptr, w_ptr, sums_ptr, P, TILES_PER_ROW, HAS_W: tl.constexpr,
                        TILE: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    row = t // TILES_PER_ROW
    idx = (t % TILES_PER_ROW) * TILE + tl.arange(0, TILE)
    mask = idx < P
    a = tl.load(trial_ptr + row * P + idx, mask=mask, other=0.0).to(tl.float64)
    b = tl.load(target_ptr + idx, mask=mask, other=0.0).to(tl.float64)
    w = tl.full((TILE,), 1.0, tl.float64)
    if HAS_W:
        w = tl.load(w_ptr + idx, mask=mask, other=0.0).to(tl.float64)
    tl.store(sums_ptr + t * 3 + 0, tl.sum(w * a * b, axis=0))
    tl.store(sums_ptr + t * 3 + 1, tl.sum(w * a * a, axis=0))
    tl.store(sums_ptr + t * 3 + 2, tl.sum(w * b * b, axis=0))


@triton.jit
def _cosine_plan_kernel(sums_ptr, loss_ptr, coef_ptr, TILES_PER_ROW, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    dot = tl.zeros((BLOCK,), dtype=tl.float64)
    tsq = tl.zeros((BLOCK,), dtype=tl.float64)
    gsq = tl.zeros((BLOCK,), dtype=tl.float64)
    for start in range(0, TILES_PER_ROW, BLOCK):
        c = start + tl.arange(0, BLOCK)
        mask = c < TILES_PER_ROW
        slot = (row * TILES_PER_ROW + c) * 3
        dot += tl.load(sums_ptr + slot + 0, mask=mask, other=0.0)
        tsq += tl.load(sums_ptr + slot + 1, mask=mask, other=0.0)
        gsq += tl.load(sums_ptr + slot + 2, mask=mask, other=0.0)
    dot_s = tl.sum(dot, axis=0)
    tsq_s = tl.sum(tsq, axis=0)
    gsq_s = tl.sum(gsq, axis=0)
    defined = (tsq_s > 0.0) & (gsq_s > 0.0)  # a zero vector's cosine is undefined: loss 1, gradient 0
    scale = tl.where(defined, 1.0 / tl.sqrt(tl.where(defined, tsq_s * gsq_s, 1.0)), 0.0)
    ratio = tl.where(defined, dot_s / tl.where(defined, tsq_s, 1.0), 0.0)
    tl.store(loss_ptr + row, (1.0 - dot_s * scale).to(loss_ptr.dtype.element_ty))
    tl.store(coef_ptr + row * 2 + 0, scale)
    tl.store(coef_ptr + row * 2 + 1, ratio)


@triton.jit
def _cosine_grad_kernel(trial_ptr, target_ptr, w_ptr, coef_ptr, grad_ptr, P, TILES_PER_ROW, HAS_W: tl.constexpr,
                        TILE: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    row = t // TILES_PER_ROW
    idx = (t % TILES_PER_ROW) * TILE + tl.arange(0, TILE)
    mask = idx < P
    scale = tl.load(coef_ptr + row * 2 + 0)
    ratio = tl.load(coef_ptr + row * 2 + 1)
    a = tl.load(trial_ptr + row * P + idx, mask=mask, other=0.0).to(tl.float64)
    b = tl.load(target_ptr + idx, mask=mask, other=0.0).to(tl.float64)
    w = tl.full((TILE,), 1.0, tl.float64)
    if HAS_W:
        w = tl.load(w_ptr + idx, mask=mask, other=0.0).to(tl.float64)
    g = -scale * (w * b - ratio * w * a)
    tl.store(grad_ptr + row * P + idx, g.to(grad_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _l2_kernel(trial_ptr, target_ptr, w_ptr, grad_ptr, partial_ptr, P, TILES_PER_ROW, HAS_W: tl.constexpr,
               TILE: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    row = t // TILES_PER_ROW
    idx = (t % TILES_PER_ROW) * TILE + tl.arange(0, TILE)
    mask = idx < P
    a = tl.load(trial_ptr + row * P + idx, mask=mask, other=0.0)
    b = tl.load(target_ptr + idx, mask=mask, other=0.0)
    d = a - b
    wd = d
    if HAS_W:
        wd = tl.load(w_ptr + idx, mask=mask, other=0.0) * d
    tl.store(grad_ptr + row * P + idx, 2.0 * wd, mask=mask)
    tl.store(partial_ptr + t, tl.sum(wd.to(tl.float64) * d.to(tl.float64), axis=0))


def _launch(wrap, trial, target, weights, kind):
    R, P = trial.shape
    loss = trial.new_empty(R)
    grad = torch.empty_like(trial)
    if R == 0:
        return loss, grad
    tiles_per_row = triton.cdiv(P, TILE)
    tiles = R * tiles_per_row
    has_w = weights is not None
    w = weights if has_w else target  # a valid pointer, never read when HAS_W is False
    if kind == "l2":
        partial = torch.zeros(R, max(tiles_per_row, 1), dtype=torch.float64, device=trial.device)
        if tiles:
            wrap(_l2_kernel)[(tiles,)](trial, target, w, grad, partial, P, tiles_per_row, HAS_W=has_w, TILE=TILE)
        wrap(row_totals_kernel)[(R,)](partial, loss, partial.shape[1], BLOCK=BLOCK)
        return loss, grad
    sums = torch.empty(max(tiles, 1), 3, dtype=torch.float64, device=trial.device)
    coef = torch.empty(R, 2, dtype=torch.float64, device=trial.device)
    if tiles:
        wrap(_cosine_sums_kernel)[(tiles,)](trial, target, w, sums, P, tiles_per_row, HAS_W=has_w, TILE=TILE)
    wrap(_cosine_plan_kernel)[(R,)](sums, loss, coef, tiles_per_row, BLOCK=BLOCK)
    if tiles:
        wrap(_cosine_grad_kernel)[(tiles,)](trial, target, w, coef, grad, P, tiles_per_row, HAS_W=has_w, TILE=TILE)
    return loss, grad


if hasattr(torch.library, "triton_op"):  # torch >= 2.6: visible to torch.compile as one op

    @torch.library.triton_op("i2f_fast::grad_match_triton", mutates_args=())
    def grad_match_triton(
        trial: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None, kind: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Triton implementation of ``i2f_fast::grad_match`` (contiguous inputs; see ``ops.grad_match``)."""
        return _launch(torch.library.wrap_triton, trial, target, weights, kind)

    _formulas.register("grad_match", grad_match_triton)  # the op's fake and autograd formulas

else:

    def grad_match_triton(trial, target, weights, kind):
        """Triton implementation of ``i2f_fast::grad_match`` (contiguous inputs; see ``ops.grad_match``)."""
        return _launch(lambda kernel: kernel, trial, target, weights, kind)
