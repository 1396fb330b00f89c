"""Which kernel runs an op: the one place where backends are chosen (DESIGN.md §4).

Backends:

- ``native``: the compiled kernels, C++/OpenMP for CPU tensors (``i2f_fast._C``) and CUDA for CUDA
  tensors (``i2f_fast._C_cuda``);
- ``triton``: the Triton kernels (``i2f_fast/triton``), on CUDA tensors, or on CPU tensors when
  ``TRITON_INTERPRET=1`` (the interpreter; slow, for tests);
- ``reference``: plain PyTorch (``i2f_fast/reference``), always available;
- ``auto`` (default): CUDA kernels on CUDA tensors when ``_C_cuda`` loaded, else Triton on a GPU;
  the C++ kernels on CPU tensors when ``_C`` loaded; else the reference.

The choice comes from :func:`use_backend` (a context manager, innermost wins) or else the
``I2F_FAST_BACKEND`` environment variable. Asking for a backend that cannot run raises
:class:`BackendUnavailableError` with the reason and the rebuild command.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import os
from typing import Callable

import torch

from . import _loader

BACKENDS = ("auto", "native", "triton", "reference")

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("i2f_fast_backend", default=None)


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run on the given device (the message says why)."""


def _validate(name: str, source: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{source} must be one of {', '.join(BACKENDS)}, got {name!r}")
    return name


def requested_backend() -> str:
    """The backend asked for: the innermost :func:`use_backend`, else ``$I2F_FAST_BACKEND``, else ``auto``."""
    name = _override.get()
    if name is not None:
        return name
    return _validate(os.environ.get("I2F_FAST_BACKEND", "auto") or "auto", "I2F_FAST_BACKEND")


@contextlib.contextmanager
def use_backend(name: str):
    """Run the enclosed ops on backend ``name`` (``auto``, ``native``, ``triton`` or ``reference``).

    Example::

        with i2f_fast.use_backend("reference"):
            result = i2f_fast.i2f(model, x, y, delta)

    Raises:
        ValueError: unknown backend name.
    """
    token = _override.set(_validate(name, "backend"))
    try:
        yield
    finally:
        _override.reset(token)


def triton_interpreter() -> bool:
    """True when ``TRITON_INTERPRET=1``: Triton kernels then run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def triton_status() -> tuple[bool, str]:
    """``(importable, reason)`` for the ``triton`` package (imported once, lazily)."""
    try:
        import triton
    except ImportError as err:
        return False, f"triton is not installed ({err}); it comes with torch's CUDA builds"
    return True, f"triton {triton.__version__}"


def unavailable_reason(backend: str, device: torch.device) -> str | None:
    """Why ``backend`` cannot run on ``device`` (``None`` when it can)."""
    device = torch.device(device)
    if backend == "reference":
        return None
    if backend == "native":
        ext = {"cpu": _loader.CPU, "cuda": _loader.CUDA}.get(device.type)
        if ext is None:
            return f"no compiled kernels exist for {device.type} tensors"
        return None if ext.loaded else f"{ext.name} {ext.reason}"
    if backend == "triton":
        ok, why = triton_status()
        if not ok:
            return why
        if device.type == "cuda":
            return None
        if device.type == "cpu":
            return None if triton_interpreter() else "Triton runs CPU tensors only under TRITON_INTERPRET=1"
        return f"Triton does not run on {device.type} tensors"
    raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


def resolve(device: torch.device) -> str:
    """The concrete backend (``native``, ``triton`` or ``reference``) that runs an op on ``device``.

    Raises:
        BackendUnavailableError: an explicitly requested backend cannot run on ``device``.
        ValueError: ``I2F_FAST_BACKEND`` holds an unknown name.
    """
    device = torch.device(device)
    name = requested_backend()
    if name == "auto":
        candidates = ("native", "triton") if device.type == "cuda" else ("native",)
        return next((c for c in candidates if unavailable_reason(c, device) is None), "reference")
    why = unavailable_reason(name, device)
    if why is not None:
        raise BackendUnavailableError(f"backend {name!r} is not available for {device.type} tensors: {why}")
    return name


def kernel(op: str, device: torch.device) -> Callable | None:
    """The kernel that runs the fused op ``op`` on ``device`` under the requested backend: the
    compiled op ``torch.ops.i2f_fast.<op>`` (native), the Triton launcher ``<op>_triton`` of
    ``i2f_fast/triton/<op>.py`` (triton, imported on first use), or None (reference: the caller
    runs its ``<op>_ref``, whose arguments may be arranged differently).

    Raises:
        BackendUnavailableError / ValueError: as :func:`resolve`.
    """
    backend = resolve(device)
    if backend == "reference":
        return None
    if backend == "native":
        return getattr(torch.ops.i2f_fast, op)
    return _triton_launcher(op)


@functools.cache
def _triton_launcher(op: str) -> Callable:
    return getattr(importlib.import_module(f"{__package__}.triton.{op}"), f"{op}_triton")
