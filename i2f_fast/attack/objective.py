"""The attack's objective: trial gradients of R restarts, the matching loss and its input gradient
``Jᵀw`` (plus the total-variation prior), one call per iteration.

Routes for the trial gradients ``g'_r`` and ``Jᵀ_r w_r`` (each restart its own ``J``):

* R > 1 on the CPU: the structured engine in per-sample mode (:mod:`i2f_fast.engine`, the product
  engine I²F uses): the R restarts' samples are one batch, the node rules read each sample's
  gradient off one forward/backward, and ``Jᵀw`` is the engine's transpose sweeps with each
  sample's own ``w``. On LeNet at R = 8 one step costs about half the ``torch.func`` route's
  (5.96 against 11.24 ms, 1 thread, loaded machine) and a third of eight one-restart steps
  (``benchmarks/bench_attack.py`` (d), ``benchmarks/README.md``).
* R = 1: plain autograd (forward, create-graph backward, backward of ``⟨∇_θL, w⟩``), faster than
  the engine for a single restart on LeNet (1.63 against 1.89 ms per step, ``benchmarks/README.md``).
* otherwise (a model the engine cannot represent, a custom ``loss_fn`` with N > 1 samples per
  restart, CUDA tensors, where the iteration may be captured as a CUDA graph): ``torch.func``
  (``vjp`` of the ``vmap``-ed per-restart gradient).
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch.func import vjp, vmap

from .. import frontdoor
from ..engine import EngineUnsupported, StructuredJacobian
from ..flat import FlatLayout
from ..ops import grad_match, tv

logger = logging.getLogger("i2f_fast")


class _RestartEngine:
    """The structured engine over the ``R·N`` samples of R restarts of an ``N``-sample batch.

    ``trial(xs)`` moves the engine to ``xs`` ``(R, N, *S)`` and returns the restarts' gradients as
    parameter-shaped ``(R, *θ_i)`` tensors; ``pullback(w)`` maps ``(R, P)`` to ``Jᵀ_r w_r``
    ``(R, N, *S)``. With N > 1 a restart's loss is the mean of its samples' cross-entropies, so its
    gradient is the mean of the per-sample gradients and its ``J`` the per-sample ones over N.
    """

    def __init__(self, model, params, labels, loss_fn, layout: FlatLayout, xs: torch.Tensor):
        self.restarts, self.samples = xs.shape[0], xs.shape[1]
        self.layout = layout
        self.engine = StructuredJacobian(model, self._batch(xs), labels.repeat(self.restarts), params, loss_fn,
                                         per_sample=True, check_finite=False)

    def _batch(self, xs):
        return xs.reshape(self.restarts * self.samples, *xs.shape[2:])

    def trial(self, xs: torch.Tensor) -> list[torch.Tensor]:
        self.engine.set_primal(self._batch(xs), check_finite=False)  # a diverged restart must not stop the rest
        if self.samples == 1:
            return [g.view(self.restarts, *g.shape[1:]) for g in self.engine.gradient]
        return [g.view(self.restarts, self.samples, *g.shape[1:]).mean(1) for g in self.engine.gradient]

    def pullback(self, w: torch.Tensor) -> torch.Tensor:
        us = self.layout.views(w)  # (R, *θ_i)
        if self.samples > 1:
            us = [(u / self.samples).unsqueeze(1).expand(self.restarts, self.samples, *u.shape[1:])
                  .reshape(self.restarts * self.samples, *u.shape[1:]) for u in us]
        gx = self.engine.vjp([u.unsqueeze(0) for u in us])  # k = 1 product over the R·N samples
        return gx.view(self.restarts, self.samples, *gx.shape[2:])


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
        self._engines: dict[torch.Size, _RestartEngine | None] = {}

    def _flat_grad(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (one restart, ``shape``) → flat ``∇_θ L(x)`` ``(P,)``."""
        g = frontdoor.parameter_gradient(self.model, self.loss_fn, self.params, x, self.labels)
        return self.layout.flatten([g[n] for n in self.names])

    def _engine(self, xs: torch.Tensor) -> _RestartEngine | None:
        """The engine route for ``xs``'s restart count and shape (built once), or None where it does
        not apply (see the module docstring)."""
        if xs.shape in self._engines:
            return self._engines[xs.shape]
        engine = None
        mean_of_samples = xs.shape[1] == 1 or self.loss_fn is F.cross_entropy
        if xs.shape[0] > 1 and xs.device.type == "cpu" and xs.dim() > 2 and mean_of_samples:
            try:
                engine = _RestartEngine(self.model, self.live, self.labels, self.loss_fn, self.layout, xs.detach())
            except EngineUnsupported as error:
                logger.info("invert: structured engine not used for the restarts (%s); using torch.func", error)
        self._engines[xs.shape] = engine
        return engine

    def trial_gradients(self, xs: torch.Tensor) -> torch.Tensor:
        """``(R, *shape)`` → ``(R, P)`` per-restart gradients, without building a graph (R = 1:
        plain autograd, which skips ~2 ms of functorch set-up per call on LeNet)."""
        engine = self._engine(xs)
        if engine is not None:
            return self.layout.flatten(engine.trial(xs), batch_dims=1)
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
        """Trial gradients ``(R, P)`` and ``pullback(w) = Jᵀw`` ``(R, *shape)`` (module docstring)."""
        engine = self._engine(xs)
        if engine is not None:
            return self.layout.flatten(engine.trial(xs), batch_dims=1), engine.pullback
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
        trial, pullback = self._trial_with_pullback(xs)  # forward + backward (autograd: create-graph)
        loss, w = grad_match(trial, self.target, self.match, self.weights)  # w = ∂dist/∂g', fused
        gx = pullback(w)  # Jᵀw
        tv_value = None
        if self.tv > 0:
            tv_value, tv_grad = tv(xs)
            gx.add_(tv_grad, alpha=self.tv)
        return loss, tv_value, gx
