"""CPU convolution kernels: oneDNN or PyTorch's native ones, chosen by timing once per workload.

On the tiny convolutions of gradient-leakage models (LeNet: 12 channels, one sample) PyTorch's
native CPU kernels run the double-backward products ~2× faster than oneDNN, while batched
(vmapped, grouped) convolutions are faster with oneDNN (``benchmarks/README.md``, notes 1 and 4).
:func:`choose` picks for a workload (:func:`autotune` times it both ways once per signature and
caches the answer); the products (``operators.py``) and the attack loop (``attack.py``) then run
under :func:`kernels`.
"""
from __future__ import annotations

import contextlib
import inspect
import time
from typing import Callable, Hashable

import torch
import torch.nn as nn

CHOICES: dict[Hashable, bool] = {}
"""Autotuned choices: workload signature → True (oneDNN) / False (native kernels)."""

# set_flags() resets the oneDNN fp32 precision unless told not to (torch >= 2.9 has the argument).
_KEEP_PRECISION = (
    {"_fp32_precision": None} if "_fp32_precision" in inspect.signature(torch.backends.mkldnn.set_flags).parameters else {}
)


@contextlib.contextmanager
def onednn_disabled():
    """Run CPU convolutions with PyTorch's native kernels instead of oneDNN, restoring the flag after."""
    previous = torch.backends.mkldnn.set_flags(_enabled=False, **_KEEP_PRECISION)
    try:
        yield
    finally:
        torch.backends.mkldnn.set_flags(_enabled=previous[0], **_KEEP_PRECISION)


def kernels(onednn: bool):
    """Context manager: oneDNN as configured (``True``) or PyTorch's native kernels (``False``)."""
    return contextlib.nullcontext() if onednn else onednn_disabled()


def choose(model: nn.Module, device, requested: bool | None, key: Hashable, run: Callable[[], object]) -> bool:
    """The kernels for a workload of ``model`` on ``device``: True (oneDNN) or False (native).

    Returns the global oneDNN setting when the choice cannot matter (oneDNN off or unavailable,
    no convolution, not CPU), else ``requested`` when given, else :func:`autotune`'s answer.
    """
    enabled = torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
    convolutional = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    if not (enabled and convolutional and torch.device(device).type == "cpu"):
        return enabled
    if requested is not None:
        return bool(requested)
    return autotune(key, run)


def autotune(key: Hashable, run: Callable[[], object], rounds: int = 3) -> bool:
    """True if ``run()`` is faster with oneDNN than with the native kernels (cached under ``key``).

    ``run`` is timed ``rounds`` times each way, interleaved; the first round is a warm-up. Put
    everything that changes the cost into ``key`` (model, shapes, dtype, thread count, batching).
    """
    if key not in CHOICES:
        seconds = {True: [], False: []}
        for _ in range(rounds):
            for flag in (True, False):
                with kernels(flag):
                    start = time.perf_counter()
                    run()
                    seconds[flag].append(time.perf_counter() - start)
        CHOICES[key] = min(seconds[True][1:]) <= min(seconds[False][1:])
    return CHOICES[key]
