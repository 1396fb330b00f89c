"""The attack's objective: trial gradients of R restarts, the matching loss and its input gradient
``Jᵀw`` (plus the total-variation prior), one call per iteration."""
from __future__ import annotations

import torch
from torch.func import vjp, vmap

from .. import frontdoor
from ..flat import FlatLayout
from ..ops import grad_match, tv


class _Objective:
    """Trial gradients of R restarts and the pieces of the attack's input gradient.

    ``value_and_grad(xs)`` with ``xs`` ``(R, *shape)`` returns the matching loss ``(R,)``, the
    TV value ``(R,)`` (None when ``α_TV = 0``) and ``∇_x (dist + α_TV·TV)`` ``(R, *shape)``.
    """

    def __init__(self, model, named, labels, loss_fn, target, match, weights, tv):
        self.names = [n for n, _ in named]
        self.live = [p for _, p in named]  # the module's own parameters, for the autograd path
        self.layout = FlatLayout([p.shape for p in self.live])
        self.params = {n: p.detach() for n, p in named}
        self.model, self.labels, self.loss_fn = model, labels, loss_fn
        self.target, self.match, self.weights, self.tv = target, match, weights, tv
        self._trial = self.layout.empty(1, dtype=target.dtype, device=target.device)  # R = 1 flat buffer

    def _flat_grad(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (one restart, ``shape``) → flat ``∇_θ L(x)`` ``(P,)``."""
        g = frontdoor.parameter_gradient(self.model, self.loss_fn, self.params, x, self.labels)
        return self.layout.flatten([g[n] for n in self.names])

    def trial_gradients(self, xs: torch.Tensor) -> torch.Tensor:
        """``(R, *shape)`` → ``(R, P)`` per-restart gradients, without building a graph (R = 1:
        plain autograd, which skips ~2 ms of functorch set-up per call on LeNet)."""
        if xs.shape[0] > 1:
            return vmap(self._flat_grad)(xs)
        with torch.enable_grad():
            loss = self.loss_fn(self.model(xs[0]), self.labels)
            grads = torch.autograd.grad(loss, self.live)
        return self.layout.flatten([g.unsqueeze(0) for g in grads], batch_dims=1)

    def matching_loss(self, xs: torch.Tensor) -> torch.Tensor:
        """``(R,)`` matching loss of the restarts at ``xs`` (no TV)."""
        return grad_match(self.trial_gradients(xs), self.target, self.match, self.weights)[0]

    def _trial_with_pullback(self, xs: torch.Tensor):
        """Trial gradients ``(R, P)`` and ``pullback(w) = Jᵀw`` ``(R, *shape)`` through their graph.

        R > 1: ``torch.func`` (``vjp`` of the ``vmap``-ed per-restart gradient), one batched
        forward/backward for all restarts. R = 1: plain autograd (forward, create-graph backward),
        the same products without the functorch dispatch, ~1.7× faster per iteration on the
        paper's LeNet (``benchmarks/bench_attack.py``).
        """
        if xs.shape[0] > 1:
            trial, pullback = vjp(vmap(self._flat_grad), xs)
            return trial, lambda w: pullback(w)[0]
        leaf = xs[0].detach().requires_grad_(True)
        grads = torch.autograd.grad(self.loss_fn(self.model(leaf), self.labels), self.live, create_graph=True)
        with torch.no_grad():  # one cat into the reused flat buffer
            trial = self.layout.flatten([g.unsqueeze(0) for g in grads], batch_dims=1, out=self._trial)

        def pullback(w):
            (gx,) = torch.autograd.grad(grads, leaf, self.layout.views(w[0]), allow_unused=True)
            return (torch.zeros_like(leaf) if gx is None else gx).unsqueeze(0)

        return trial, pullback

    def value_and_grad(self, xs: torch.Tensor):
        trial, pullback = self._trial_with_pullback(xs)  # forward + create-graph backward
        loss, w = grad_match(trial, self.target, self.match, self.weights)  # w = ∂dist/∂g', fused
        gx = pullback(w)  # Jᵀw: one backward through the cached graph
        tv_value = None
        if self.tv > 0:
            tv_value, tv_grad = tv(xs)
            gx.add_(tv_grad, alpha=self.tv)
        return loss, tv_value, gx
