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


class OpCounter:
    """Counts the ATen ops (and the host syncs among them) that run inside ``with counter:``.

    A host sync is ``aten._local_scalar_dense`` (``.item()``, ``bool(tensor)``, ...). Work run
    under :meth:`paused` is not counted: wrap the matvec in it to count a solver's own overhead.
    A custom op such as ``torch.ops.i2f_fast.cg_step`` counts as one op, whatever its kernel does.
    """

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if not counter._paused:
                    counter.ops[str(func.overloadpacket)] = counter.ops.get(str(func.overloadpacket), 0) + 1
                return func(*args, **(kwargs or {}))

        self._mode = _Mode()
        self._paused = False
        self.ops: dict[str, int] = {}

    @property
    def total(self) -> int:
        """Number of ops counted."""
        return sum(self.ops.values())

    @property
    def host_syncs(self) -> int:
        """Number of device-to-host reads counted."""
        return self.ops.get("aten._local_scalar_dense", 0)

    def paused(self):
        """Context manager: ops inside it are not counted."""
        import contextlib

        @contextlib.contextmanager
        def _pause():
            previous, self._paused = self._paused, True
            try:
                yield
            finally:
                self._paused = previous

        return _pause()

    def __enter__(self):
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)
