"""Loads the compiled extensions ``i2f_fast._C`` (C++/OpenMP) and ``i2f_fast._C_cuda`` (CUDA).

Importing an extension registers its kernels with ``torch.ops.i2f_fast`` (the schemas come from
``_library.py``). Loading never raises: a missing or broken ``.so`` is recorded with the reason,
the reference kernels take over, and ``i2f-fast env`` prints why.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from . import _library  # noqa: F401  (schemas first, then the kernels that implement them)

REBUILD_HINT = "rebuild with: pip install --no-build-isolation -e .  (or: make setup)"


@dataclass(frozen=True)
class ExtensionStatus:
    """Whether one compiled extension loaded, and why not."""

    name: str
    loaded: bool
    reason: str
    module: object = None


def _build_facts() -> dict:
    try:
        from ._build_config import BUILD
    except ImportError:
        return {}
    return dict(BUILD)


BUILD = _build_facts()


def _load(module: str, build_key: str) -> ExtensionStatus:
    if os.environ.get("I2F_FAST_NO_EXT", "0") == "1":
        return ExtensionStatus(module, False, "disabled: I2F_FAST_NO_EXT=1 in the environment")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module:
            return ExtensionStatus(module, False, f"failed to load: {err}; {REBUILD_HINT}")
        built = BUILD.get(build_key)
        why = built if built and built != "built" else "not built"
        return ExtensionStatus(module, False, f"{why}; {REBUILD_HINT}")
    except (ImportError, OSError) as err:  # a broken or ABI-incompatible .so
        return ExtensionStatus(module, False, f"failed to load: {err}; {REBUILD_HINT}")
    return ExtensionStatus(module, True, "loaded", mod)


CPU = _load("i2f_fast._C", "cpu")
CUDA = _load("i2f_fast._C_cuda", "cuda")
