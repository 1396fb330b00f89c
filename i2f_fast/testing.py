"""Tolerances and comparison helpers shared by the tests (DESIGN.md §5), stated once.

Float64 results are compared with the dense ``torch.func.jacrev`` reference at ``rtol=1e-9``;
float32 results at ``rtol=1e-4`` (products) — Krylov solves are compared through their relative
residual instead, which the solvers report.
"""
import torch

TOLERANCES = {
    torch.float64: {"rtol": 1e-9, "atol": 1e-12},
    torch.float32: {"rtol": 1e-4, "atol": 1e-6},
}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype | None = None, scale: float = 1.0):
    """``torch.testing.assert_close`` with the project tolerance for ``dtype`` (default: ``actual``'s),
    ``atol`` scaled by ``scale`` (use the magnitude of the expected values)."""
    tol = TOLERANCES[dtype or actual.dtype]
    torch.testing.assert_close(
        actual, expected.to(actual.dtype), rtol=tol["rtol"], atol=tol["atol"] * scale, check_dtype=False
    )
