"""Argument checks shared by the engine's ops (``dual_act``, ``ce_hvp``, ``gram_apply``): every
message names the op and the argument."""
from __future__ import annotations

import numbers

import torch


def check_tensor(op: str, name: str, t, like: torch.Tensor | None = None) -> None:
    """``t`` must be a float32/float64 tensor, of ``like``'s dtype and device when given.

    Raises:
        TypeError: not a tensor, or a dtype other than float32/float64 (or ``like``'s).
        ValueError: on another device than ``like``.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a tensor, got {type(t).__name__}")
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{op}: {name} must be float32 or float64, got {t.dtype}")
    if like is not None:
        if t.dtype != like.dtype:
            raise TypeError(f"{op}: {name} must have dtype {like.dtype} (like the first tensor), got {t.dtype}")
        if t.device != like.device:
            raise ValueError(f"{op}: {name} is on {t.device}, expected {like.device}")


def check_number(op: str, name: str, v) -> None:
    """``v`` must be a real number (a bool is not).

    Raises:
        TypeError: otherwise.
    """
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {type(v).__name__}")


def _raise_not_differentiable(op: str):
    def backward(ctx, *grads):
        raise RuntimeError(
            f"i2f_fast::{op} is not differentiable: it is a kernel of the structured JᵀJ engine, which "
            f"calls it on detached tensors; differentiate the reference i2f_fast.reference.{op}_ref instead"
        )

    return backward


def _no_context(ctx, inputs, output) -> None:
    pass


def register_not_differentiable(op: str) -> None:
    """Make backward through ``i2f_fast::<op>`` raise: the engine calls its kernels on detached
    tensors and never differentiates through them (ENGINE.md). The C++ extension registers
    PyTorch's not-implemented autograd kernel (csrc/ops_cpu.cpp; ~2.5 µs a call cheaper than a
    Python one); without it, a Python autograd kernel that raises on backward is registered here."""
    if not torch._C._dispatch_has_kernel_for_dispatch_key(f"i2f_fast::{op}", "Autograd"):
        torch.library.register_autograd(f"i2f_fast::{op}", _raise_not_differentiable(op), setup_context=_no_context)
