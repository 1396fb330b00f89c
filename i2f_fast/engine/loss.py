"""The loss node of the engine: ``L = loss(z_out, y)`` and its Hessian acting on tangents.

Cross-entropy (PyTorch's default arguments) uses the fused ``ce_hvp`` kernel; MSE is a scalar
Hessian; any other ``loss_fn(output, y) -> scalar`` gets its Hessian-vector product from
``torch.func`` (``jvp`` of ``grad``). In per-sample mode the loss is the sum of the N per-sample
losses (each sample a batch of one), so each sample's adjoints are its own.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import grad, jvp, vmap

from . import kernels


class LossNode:
    """``value(z)``: the scalar loss (differentiable); ``prepare(z)`` caches; ``hvp(t)``: ``(k, *z) → (k, *z)``."""

    def __init__(self, loss_fn: Callable | None, y: torch.Tensor, per_sample: bool):
        self.y, self.per_sample = y, per_sample
        if loss_fn is None or loss_fn is F.cross_entropy:
            self.kind = "cross_entropy"
        elif loss_fn is F.mse_loss:
            self.kind = "mse"
        else:
            self.kind = "generic"
        self.loss_fn = loss_fn

    def value(self, z: torch.Tensor) -> torch.Tensor:
        if self.kind == "cross_entropy":
            if z.dim() != 2:
                raise ValueError(f"cross-entropy needs (N, C) logits, the model returns {tuple(z.shape)}")
            return F.cross_entropy(z, self.y, reduction="sum" if self.per_sample else "mean")
        if self.kind == "mse":
            if self.per_sample:
                return F.mse_loss(z, self.y, reduction="sum") * (z.shape[0] / z.numel())
            return F.mse_loss(z, self.y)
        return self._generic_loss(z)

    def _generic_loss(self, z):
        if not self.per_sample:
            return self.loss_fn(z, self.y)
        return vmap(lambda z_n, y_n: self.loss_fn(z_n.unsqueeze(0), y_n.unsqueeze(0)))(z, self.y).sum()

    def prepare(self, z: torch.Tensor) -> None:
        self.z = z
        if self.kind == "cross_entropy":
            self.p = torch.softmax(z, dim=-1)
            self.scale = 1.0 if self.per_sample else 1.0 / z.shape[0]
        elif self.kind == "mse":
            self.scale = 2.0 * (z.shape[0] if self.per_sample else 1) / z.numel()

    def hvp(self, t: torch.Tensor) -> torch.Tensor:
        """Hessian of the loss with respect to the model output applied to ``t`` ``(k, *z.shape)``."""
        if self.kind == "cross_entropy":
            return kernels.ce_hvp(self.p, t, self.scale)
        if self.kind == "mse":
            return t * self.scale
        gradient = grad(self._generic_loss)
        return vmap(lambda tt: jvp(gradient, (self.z,), (tt,))[1])(t)
