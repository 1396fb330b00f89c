"""Tolerances, dtype lists, comparison helpers and an op counter shared by the tests (DESIGN.md §5),
stated once.

Float64 results are compared with the dense ``torch.func.jacrev`` reference at ``rtol=1e-9``;
float32 results at ``rtol=1e-4`` (products) — Krylov solves are compared through their relative
residual instead, which the solvers report. Kernels against their references use
:data:`ELEMENTWISE`, whole attack loops :data:`LOOP`, identical computations :data:`EXACT`.
"""
import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode

DTYPES = (torch.float32, torch.float64)
"""The dtypes every kernel, product and solver is tested in."""

TOLERANCES = {
    torch.float64: {"rtol": 1e-9, "atol": 1e-12},
    torch.float32: {"rtol": 1e-4, "atol": 1e-6},
}
"""Products and solutions against the dense float64 ``jacrev`` oracle (see :func:`assert_close`)."""

ELEMENTWISE = {
    torch.float64: {"rtol": 1e-12, "atol": 1e-12},
    torch.float32: {"rtol": 2e-5, "atol": 1e-5},
}
"""A fused elementwise/reduction kernel against its reference in the same dtype (a few roundings)."""

ANALYTIC = {"rtol": 1e-12, "atol": 1e-14}
"""A float64 closed-form derivative against autograd's."""

LOOP = {
    torch.float64: {"rtol": 1e-8, "atol": 1e-10},
    torch.float32: {"rtol": 1e-3, "atol": 1e-4},
}
"""Two implementations of a whole iterative loop (the attack): rounding differences compound."""

EXACT = {"rtol": 0, "atol": 0}
"""Bitwise-equal results: the same kernel on the same inputs (a replayed CUDA graph vs eager, the
reference backend vs the reference function)."""


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype | None = None, scale: float = 1.0):
    """``torch.testing.assert_close`` with the project tolerance for ``dtype`` (default: ``actual``'s),
    ``atol`` scaled by ``scale`` (use the magnitude of the expected values)."""
    tol = TOLERANCES[dtype or actual.dtype]
    torch.testing.assert_close(
        actual, expected.to(actual.dtype), rtol=tol["rtol"], atol=tol["atol"] * scale, check_dtype=False
    )


class OpCounter:
    """Counts the ATen ops (and the host syncs among them) that run inside ``with counter:``.

    A host sync is ``aten._local_scalar_dense`` (``.item()``, ``bool(tensor)``, ...). Work run
    under :meth:`paused` is not counted: wrap the matvec in it to count a solver's own overhead.
    A custom op such as ``torch.ops.i2f_fast.cg_step`` counts as one op, whatever its kernel does.
    """

    def __init__(self):
        self.ops: dict[str, int] = {}
        self.views: dict[str, int] = {}
        self._paused = False
        self._mode = _CountingMode(self)

    @property
    def total(self) -> int:
        """Number of ops counted."""
        return sum(self.ops.values())

    @property
    def kernels(self) -> int:
        """Ops counted that do work: every op except the metadata-only views (``view``, ``select``,
        ``unsqueeze``, ``narrow``, ``detach``, ...: ops whose output aliases an input without writing)."""
        return self.total - sum(self.views.values())

    @property
    def host_syncs(self) -> int:
        """Number of device-to-host reads counted."""
        return self.ops.get("aten._local_scalar_dense", 0)

    @contextlib.contextmanager
    def paused(self):
        """Ops inside this context are not counted."""
        previous, self._paused = self._paused, True
        try:
            yield
        finally:
            self._paused = previous

    def record(self, name: str, view: bool = False) -> None:
        if not self._paused:
            self.ops[name] = self.ops.get(name, 0) + 1
            if view:
                self.views[name] = self.views.get(name, 0) + 1

    def __enter__(self):
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)


class _CountingMode(TorchDispatchMode):
    """Dispatch mode that reports every op to an :class:`OpCounter`."""

    def __init__(self, counter: OpCounter):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        returns = func._schema.returns
        view = bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)
        self.counter.record(str(func.overloadpacket), view)
        return func(*args, **(kwargs or {}))
