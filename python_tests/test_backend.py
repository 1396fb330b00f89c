"""Backend selection (backend.py), extension loading (_loader.py) and a full CG solve per backend."""
import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import i2f_fast
from i2f_fast import _loader, backend, cg, use_backend
from i2f_fast.backend import BackendUnavailableError, requested_backend, resolve, unavailable_reason
from i2f_fast.testing import DTYPES

PACKAGE = Path(i2f_fast.__file__).parent


def test_use_backend_nests_and_restores():
    assert requested_backend() == os.environ.get("I2F_FAST_BACKEND", "auto")
    with use_backend("reference"):
        assert requested_backend() == "reference"
        with use_backend("auto"):
            assert requested_backend() == "auto"
        assert requested_backend() == "reference"
        assert resolve("cpu") == "reference"
    assert requested_backend() == os.environ.get("I2F_FAST_BACKEND", "auto")


def test_unknown_backend_names_are_rejected(monkeypatch):
    with pytest.raises(ValueError, match="backend must be one of auto, native, triton, reference"):
        with use_backend("cuda"):
            pass
    monkeypatch.setenv("I2F_FAST_BACKEND", "fastest")
    with pytest.raises(ValueError, match="I2F_FAST_BACKEND must be one of"):
        resolve("cpu")


def test_environment_variable_selects_the_backend(monkeypatch):
    monkeypatch.setenv("I2F_FAST_BACKEND", "reference")
    assert resolve("cpu") == "reference"
    with use_backend("auto"):  # the context manager wins over the environment
        assert resolve("cpu") in ("native", "reference")


def test_auto_prefers_the_compiled_cpu_kernel():
    expected = "native" if _loader.CPU.loaded else "reference"
    with use_backend("auto"):
        assert resolve("cpu") == expected


def test_explicit_unavailable_backend_raises_with_rebuild_hint(monkeypatch):
    monkeypatch.setattr(_loader, "CPU", _loader.ExtensionStatus("i2f_fast._C", False, f"not built; {_loader.REBUILD_HINT}"))
    with use_backend("native"):
        with pytest.raises(BackendUnavailableError, match="pip install --no-build-isolation -e ."):
            resolve("cpu")
        with pytest.raises(BackendUnavailableError, match="no compiled kernels exist for meta"):
            resolve("meta")
    with use_backend("auto"):
        assert resolve("cpu") == "reference"


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    if not backend.triton_status()[0]:
        assert "triton is not installed" in unavailable_reason("triton", torch.device("cpu"))
        return
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "TRITON_INTERPRET=1" in unavailable_reason("triton", torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert unavailable_reason("triton", torch.device("cpu")) is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_cg_solve_is_the_same_on_every_backend(device_backend, dtype):
    device, name = device_backend
    g = torch.Generator().manual_seed(0)
    B, D = 3, 300
    Q, _ = torch.linalg.qr(torch.randn(B, D, D, generator=g, dtype=torch.float64))
    A = (Q * torch.logspace(0, 2, D, dtype=torch.float64)) @ Q.transpose(1, 2)
    b = torch.randn(B, D, generator=g, dtype=torch.float64)
    expected = torch.linalg.solve(A, b)
    A, b = A.to(device, dtype), b.to(device, dtype)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    with use_backend(name):
        res = cg(lambda v: torch.einsum("bij,bj->bi", A, v), b, tol=tol, max_iter=2000)
    assert bool(res.converged.all())
    rel = (res.x.double().cpu() - expected).norm(dim=1) / expected.norm(dim=1)
    assert float(rel.max()) < 100 * tol  # κ(A) = 100 times the relative residual


def _run_python(code: str, pythonpath: Path, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(pythonpath), **env}
    full_env.pop("I2F_FAST_BACKEND", None)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd=pythonpath, timeout=300
    )


PROBE = (
    # An editable install maps i2f_fast.* to the source tree through a meta-path finder; drop it
    # so that the package copy on PYTHONPATH is the one imported.
    "import sys\n"
    "sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
    "import torch, i2f_fast\n"
    "print('FILE', i2f_fast.__file__)\n"
    "from i2f_fast import _loader, cli\n"
    "from i2f_fast.ops import cg_step\n"
    "print('RESOLVED', i2f_fast.backend.resolve('cpu'))\n"
    "x, r, p = torch.zeros(2, 3, dtype=torch.float64), torch.ones(2, 3, dtype=torch.float64), torch.ones(2, 3, dtype=torch.float64)\n"
    "rr, _ = cg_step(x, r, p, 2 * p, (r * r).sum(1), torch.ones(2, dtype=torch.bool))\n"
    "print('X', x[0, 0].item())\n"
    "cli.print_env()\n"
)


def _package_copy(tmp_path: Path) -> Path:
    """The installed package's Python files (no compiled extensions) under ``tmp_path``."""
    shutil.copytree(PACKAGE, tmp_path / "i2f_fast", ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    return tmp_path


def test_import_without_compiled_extensions_falls_back_to_the_reference(tmp_path):
    root = _package_copy(tmp_path)
    out = _run_python(PROBE, root)
    assert out.returncode == 0, out.stderr
    assert f"FILE {root}" in out.stdout
    assert "RESOLVED reference" in out.stdout
    assert "X 0.5" in out.stdout  # α = r·r / p·Ap = 3/6
    assert "i2f_fast._C " in out.stdout and "rebuild with: pip install --no-build-isolation -e ." in out.stdout


def test_a_broken_extension_does_not_break_import(tmp_path):
    root = _package_copy(tmp_path)
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (root / "i2f_fast" / f"_C{suffix}").write_bytes(b"not a shared library")
    out = _run_python(PROBE, root)
    assert out.returncode == 0, out.stderr
    assert f"FILE {root}" in out.stdout
    assert "RESOLVED reference" in out.stdout
    assert "failed to load" in out.stdout


def test_no_ext_environment_variable_disables_loading():
    out = _run_python(PROBE, PACKAGE.parent, I2F_FAST_NO_EXT="1")
    assert out.returncode == 0, out.stderr
    assert "RESOLVED reference" in out.stdout and "disabled: I2F_FAST_NO_EXT=1" in out.stdout
