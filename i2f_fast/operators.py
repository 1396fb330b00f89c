"""Matrix-free mixed second-order products of a model's loss: J v, Jᵀ u, JᵀJ v.

``J = ∂(∇_θ L)/∂x`` is the ``P × D`` Jacobian of the parameter gradient with respect to the input
(P trainable parameters, D input elements). It is never materialised; every product reuses one
first-order computation built at construction, so no product re-runs the forward pass.

Strategies (``strategy=``), all exact; they differ in speed (``benchmarks/bench_products.py``):

* ``"engine"``: the structured JᵀJ engine (:mod:`i2f_fast.engine`, ENGINE.md): four sweeps over
  a ``torch.fx`` trace of the model with hand-written layer rules and fused kernels; ``JᵀJ v``
  never forms ``J v``. Raises ``ValueError`` with the reason for a model it cannot represent
  (untraceable, BatchNorm with batch statistics, Dropout in training mode, ...).
* ``"double_backward"``: one ``autograd.grad(..., create_graph=True)`` builds ∇_x L and ∇_θ L
  with their graph; ``J v = ∇_θ⟨∇_x L, v⟩`` and ``Jᵀ u = ∇_x⟨∇_θ L, u⟩`` are backward passes
  through that cached graph. ``k`` batched tangents use a cached graph of ``k`` independent
  replicas of the problem (own parameter leaves each): one batched backward pass.
* ``"func"``: ``torch.func`` reverse-over-reverse closures, cached: ``J v`` is the ``vjp`` of
  ``θ ↦ ∇_x L`` and ``Jᵀ u`` the ``vjp`` of ``x ↦ ∇_θ L``; batched tangents ``vmap`` the closures.
* ``"auto"`` (default): ``engine`` wherever it applies; otherwise (the reason is logged to the
  ``i2f_fast`` logger and kept in ``engine_unsupported``) ``double_backward`` for single tangents
  of one problem, the ``func`` closures for batched tangents and in per-sample mode (per tangent
  about 3× cheaper than the replica graph on the paper's LeNet at k = 16).

Per-sample mode (``per_sample=True``) gives each of the N samples its own Jacobian ``J_n`` (the
paper's batch-of-one setting) and computes the N products together: the engine's node rules read
each sample's gradient off one forward/backward and apply each sample's own blocks; the autograd
routes replicate every trainable parameter N times and evaluate the per-sample losses with
``torch.func.vmap``, so the mixed second derivative is block diagonal and one backward pass serves
all samples.
"""
from __future__ import annotations

import logging
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import grad, grad_and_value, vjp, vmap

from . import conv_kernels, frontdoor
from .engine import EngineUnsupported, StructuredJacobian
from .flat import FlatLayout

logger = logging.getLogger("i2f_fast")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_MAX_REPLICA_GRAPHS = 2


class _Closures(NamedTuple):
    """``torch.func`` products: ``jvp(v) -> dict`` (J v), ``vjp(dict) -> tensor`` (Jᵀ u), loss, gradient."""

    jvp: Callable
    vjp: Callable
    loss: torch.Tensor
    gradient: list


class _Graph(NamedTuple):
    """A first-order graph kept for double backward: leaves, their gradients (with graph), loss."""

    x: torch.Tensor
    params: list
    grad_x: torch.Tensor
    grad_params: list
    loss: torch.Tensor

STRATEGIES = ("auto", "engine", "double_backward", "func")
DEFAULT_STRATEGY = "auto"


def flatten_tensors(tensors: Sequence[torch.Tensor], batch_dims: int = 0) -> torch.Tensor:
    """Concatenate parameter-shaped tensors into one flat vector per batch entry (one
    :class:`~i2f_fast.flat.FlatLayout` buffer).

    Args:
        tensors: tensors shaped ``(*batch, *param_shape_i)``.
        batch_dims: number of leading batch dimensions shared by all tensors.

    Returns:
        ``(*batch, P)`` with ``P = Σ_i numel(param_shape_i)``.
    """
    return FlatLayout([t.shape[batch_dims:] for t in tensors]).flatten(tensors, batch_dims)


def unflatten_tensors(flat: torch.Tensor, shapes: Sequence[torch.Size]) -> list[torch.Tensor]:
    """Split ``(*batch, P)`` into views shaped ``(*batch, *shape_i)`` (inverse of :func:`flatten_tensors`)."""
    return FlatLayout(shapes).views(flat)


def _check_inputs(model, x, y, loss_fn, per_sample) -> tuple[list, torch.Tensor]:
    """The front-door checks of :class:`InversionJacobian`'s arguments; returns the trainable
    ``(name, parameter)`` pairs and ``y`` (int64 labels ``(N,)`` for the default cross-entropy)."""
    named = frontdoor.model_parameters(model)
    first = named[0][1]
    frontdoor.float_tensor(x, "x", min_dims=2, like=first)
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable loss_fn(output, y) -> scalar or None, got {type(loss_fn).__name__}")
    if frontdoor.boolean(per_sample, "per_sample"):
        frontdoor.require_functional(model, "per_sample=True (each sample its own Jacobian)")
    classes = frontdoor.output_classes(model, x, "x")
    if loss_fn is None:
        y = frontdoor.labels(y, "y", x.shape[0], classes).to(x.device)
    elif not isinstance(y, torch.Tensor) or y.shape[:1] != x.shape[:1]:
        raise ValueError(f"y must be a tensor with N={x.shape[0]} entries along dim 0")
    return named, y


class InversionJacobian:
    """Matrix-free ``J = ∂(∇_θ L)/∂x`` of ``L = loss_fn(model(x), y)`` for any ``nn.Module``.

    Args:
        model: used as given (train/eval mode is the caller's choice); the parameters are those
            with ``requires_grad``, in ``model.parameters()`` order.
        x: ``(N, ...)`` input batch (e.g. NCHW images), same dtype as the parameters.
        y: ``(N,)`` integer class labels (converted to int64; a float label is refused), or whatever
            ``loss_fn`` expects.
        loss_fn: ``loss_fn(output, y) -> scalar``; default cross-entropy, mean over the batch.
        per_sample: treat each sample as its own batch of one (its own ``J_n``).
        strategy: ``"auto"``, ``"engine"``, ``"double_backward"`` or ``"func"`` (see the module docstring).
        onednn: CPU convolution kernels for the products: ``True`` oneDNN, ``False`` PyTorch's
            native kernels, ``None`` (default) autotune once per model/input signature by timing
            ``JᵀJ v`` both ways. On the paper's LeNet with one sample the native kernels make the
            product ~1.9× faster (``benchmarks/README.md``); larger convolutions favour oneDNN.

    Shapes (``S`` = input shape ``x.shape``; per-sample mode adds the sample dim ``N`` to outputs):

    ======================  =========================  ==============================
    method                  input                      output
    ======================  =========================  ==============================
    ``jvp`` (J v)           ``S`` or ``(k, *S)``       ``(P,)`` / ``(k, P)``; per-sample ``(N, P)`` / ``(k, N, P)``
    ``vjp`` (Jᵀ u)          flat as jvp's output,      ``S`` / ``(k, *S)``
                            or list of param tensors
    ``gram`` (JᵀJ v)        ``S`` or ``(k, *S)``       same as input
    ======================  =========================  ==============================

    Raises:
        TypeError / ValueError for bad input, naming the argument.
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        loss_fn: LossFn | None = None,
        *,
        per_sample: bool = False,
        strategy: str = DEFAULT_STRATEGY,
        onednn: bool | None = None,
    ):
        frontdoor.choice(strategy, "strategy", STRATEGIES)
        frontdoor.boolean(onednn, "onednn", optional=True)
        named, y = _check_inputs(model, x, y, loss_fn, per_sample)
        self.model = model
        self.loss_fn = F.cross_entropy if loss_fn is None else loss_fn
        self.per_sample = per_sample
        self.strategy = strategy
        self.input_shape = tuple(x.shape)
        self.param_names = [n for n, _ in named]
        self.layout = frontdoor.layout_of(named)
        self.param_shapes = self.layout.shapes
        self.num_params = self.layout.numel
        self._params = {n: p.detach() for n, p in named}
        self._x = x.detach()
        self._y = y
        stateful = frontdoor.training_module(model, stateful_only=True)
        if stateful is not None and strategy == "func":
            raise ValueError(
                f"strategy='func' needs a functional forward, but module '{stateful}' is in training mode "
                "(BatchNorm statistics / Dropout); use strategy='auto' or call model.eval()"
            )
        self._functional = stateful is None
        self._graphs: dict[int | None, _Graph] = {}
        self._closures: _Closures | None = None
        self.engine: StructuredJacobian | None = None
        self.engine_unsupported: str | None = None
        if strategy in ("auto", "engine"):
            self.engine = self._build_engine(named, loss_fn)
        if self.engine is not None:
            self.loss = self.engine.loss
            grads = self.engine.gradient  # per sample: (N, *θ_i), read off the primal by the node rules
        elif self._uses_closures(batched=False):
            closures = self._func_closures()
            self.loss, grads = closures.loss, closures.gradient
        else:
            graph = self._graph(None)
            self.loss, grads = graph.loss, [g.detach() for g in graph.grad_params]
        self.gradient = flatten_tensors(grads, self.batch_dims)
        self.onednn = self._choose_onednn(onednn)

    # ----------------------------------------------------------------------------------- set-up
    def _build_engine(self, named, loss_fn) -> StructuredJacobian | None:
        try:
            return StructuredJacobian(self.model, self._x, self._y, [p for _, p in named], loss_fn,
                                      per_sample=self.per_sample)
        except EngineUnsupported as error:
            if self.strategy == "engine":
                raise ValueError(f"strategy='engine' cannot represent this model: {error}") from error
            self.engine_unsupported = str(error)
            logger.info("InversionJacobian: structured engine not used (%s); falling back to autograd", error)
            return None

    def _per_sample_gradient(self) -> list[torch.Tensor]:
        """Per-sample parameter gradients ``(N, *θ_i)`` (one batched ``vmap`` of ``grad``)."""
        return list(vmap(grad(self._sample_loss), in_dims=(None, 0, 0))(self._params, self._x, self._y).values())

    def sample_gradients(self) -> torch.Tensor:
        """Flat per-sample parameter gradients ``(N, P)``: row n is ``∇_θ`` of sample n's loss as a batch
        of one (in per-sample mode, :attr:`gradient` itself)."""
        if self.per_sample:
            return self.gradient
        return flatten_tensors(self._per_sample_gradient(), 1)

    @property
    def batch_dims(self) -> int:
        """Leading dims of a flat parameter vector: 1 (``N``) in per-sample mode, else 0."""
        return 1 if self.per_sample else 0

    @property
    def num_samples(self) -> int:
        return self.input_shape[0]

    def _sample_loss(self, params, x_n, y_n):
        """Loss of one sample (per-sample mode): ``x_n`` is ``x.shape[1:]``."""
        return frontdoor.sample_loss(self.model, self.loss_fn, params, x_n, y_n)

    def _batch_loss(self, params, x):
        return frontdoor.functional_loss(self.model, self.loss_fn, params, x, self._y)

    def _replicated_loss(self, params, x, copies: int | None):
        """Sum of the losses of independent copies of the problem (one per tangent / sample).

        ``params`` carry leading dims ``(copies?, N?)`` matching ``x``'s ``(copies?, *S)``; each
        copy has its own parameter leaves, so its gradient (and every product through it) is
        independent of the other copies while one batched forward/backward serves them all.
        """
        if self.per_sample:
            per_copy = vmap(self._sample_loss, in_dims=(0, 0, 0))
            if copies is None:
                return per_copy(params, x, self._y).sum()
            return vmap(per_copy, in_dims=(0, 0, None))(params, x, self._y).sum()
        if copies is None:  # the module's own parameters; a training-mode BatchNorm updates copies of its statistics
            return frontdoor.functional_loss(self.model, self.loss_fn, frontdoor.private_buffers(self.model), x, self._y)
        return vmap(self._batch_loss)(params, x).sum()

    def _graph(self, copies: int | None) -> _Graph:
        """The cached first-order graph, for one problem (``copies=None``) or ``copies`` replicas.

        Replicas serve batched tangents of the ``double_backward`` strategy: ``k`` products through
        a ``k``-replica graph are one batched backward pass. On the paper's LeNet at k = 16 that
        costs 0.93 G per tangent against 2.1 G for autograd's ``is_grads_batched`` over the single
        graph (prototype measurement, oneDNN kernels). Built on first use; the most recent replica
        graphs are kept.
        """
        if copies in self._graphs:
            return self._graphs[copies]
        lead = () if copies is None else (copies,)
        lead_params = lead + ((self.num_samples,) if self.per_sample else ())
        x = self._x.expand(*lead, *self.input_shape).clone().requires_grad_(True)
        if lead_params:
            leaves = {n: p.expand(*lead_params, *p.shape).clone().requires_grad_(True) for n, p in self._params.items()}
            params = list(leaves.values())
        else:
            leaves = None
            params = [p for p in self.model.parameters() if p.requires_grad]
        loss = self._replicated_loss(leaves, x, copies)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss at x is not finite ({loss.item()})")
        grads = torch.autograd.grad(loss, [x] + params, create_graph=True, allow_unused=True)
        if grads[0] is None:
            raise ValueError("the loss does not depend on x")
        grad_params = [torch.zeros_like(p) if g is None else g for g, p in zip(grads[1:], params)]
        graph = _Graph(x, params, grads[0], grad_params, loss.detach() / (copies or 1))
        if copies is not None:
            replicas = [c for c in self._graphs if c is not None]
            if len(replicas) >= _MAX_REPLICA_GRAPHS:
                del self._graphs[replicas[0]]
        self._graphs[copies] = graph
        return graph

    def _func_closures(self) -> _Closures:
        """The ``torch.func`` vjp closures for ``J v`` and ``Jᵀ u`` (built once, on first use).

        Per-sample mode differentiates ``∇_x L`` with respect to N per-sample parameter copies,
        so ``J v`` comes out per sample; ``∇_θ L`` is per sample through ``vmap`` over samples.
        """
        if self._closures is not None:
            return self._closures
        if self.per_sample:
            copies = {n: p.expand(self.num_samples, *p.shape) for n, p in self._params.items()}

            def grad_params_of_x(x):
                grads, losses = vmap(grad_and_value(self._sample_loss), in_dims=(None, 0, 0))(self._params, x, self._y)
                return grads, losses.sum()

            def grad_x_of_params(params):
                return vmap(grad(self._sample_loss, argnums=1), in_dims=(0, 0, 0))(params, self._x, self._y)

            primal = copies
        else:
            def grad_params_of_x(x):
                return grad_and_value(self._batch_loss)(self._params, x)

            def grad_x_of_params(params):
                return grad(self._batch_loss, argnums=1)(params, self._x)

            primal = self._params
        grads, vjp_x, loss = vjp(grad_params_of_x, self._x, has_aux=True)  # the loss rides along: one forward
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss at x is not finite ({loss.item()})")
        _, vjp_params = vjp(grad_x_of_params, primal)
        self._closures = _Closures(
            jvp=lambda v: vjp_params(v)[0],
            vjp=lambda u: vjp_x(u)[0],
            loss=loss.detach(),
            gradient=[grads[n].detach() for n in self.param_names],
        )
        return self._closures

    def _uses_closures(self, batched: bool) -> bool:
        if not self._functional:
            return False
        return self.strategy == "func" or (self.strategy == "auto" and (batched or self.per_sample))

    # ------------------------------------------------------------------------ oneDNN autotune
    def _choose_onednn(self, requested: bool | None) -> bool:
        key = (
            "InversionJacobian", type(self.model).__qualname__, tuple(map(tuple, self.param_shapes)),
            self.input_shape, self._x.dtype, self.per_sample, self.strategy, torch.get_num_threads(),
        )

        def product():
            v = torch.randn(self.input_shape, dtype=self._x.dtype, generator=torch.Generator().manual_seed(0))
            self.onednn = True  # while timing, the kernels are set by autotune(), not by _kernels()
            self.gram(v)

        return conv_kernels.choose(self.model, self._x.device, requested, key, product)

    def _kernels(self, batched: bool):
        """Context for a product: oneDNN off when the autotune chose the native kernels.

        Batched products keep the global setting: they run grouped convolutions (the engine folds
        the k tangents into the groups; the replica graphs have one group per copy), where oneDNN
        measured 2.5–4× faster than the native kernels at k = 16 on LeNet (266–336 µs against
        618–842 µs per grouped convolution, ``benchmarks/README.md``, engine notes).
        """
        return conv_kernels.kernels(self.onednn or batched)

    # ------------------------------------------------------------------------------- checking
    def _tangent_batch(self, v, name: str) -> bool:
        """True when ``v`` carries a leading k ≥ 1; validates the kind and shape of ``v`` (not its
        values: products run inside solver loops, which must not read the device)."""
        frontdoor.float_tensor(v, name, finite=False)
        if tuple(v.shape) == self.input_shape:
            return False
        if tuple(v.shape[1:]) == self.input_shape and v.shape[0] >= 1:
            return True
        raise ValueError(
            f"{name} must have shape {self.input_shape} or (k, *{self.input_shape}) with k >= 1, got {tuple(v.shape)}"
        )

    def _param_batch(self, u) -> tuple[list[torch.Tensor], bool]:
        """Parameter-space input (flat or list, front door) → (param-shaped views with leading dims, batched?)."""
        prefix = (self.num_samples,) if self.per_sample else ()
        flat = frontdoor.parameter_vectors(u, self.layout, "u", lead=prefix, batch=1, finite=False)
        batched = flat.dim() > len(prefix) + 1
        if batched and flat.shape[0] == 0:
            raise ValueError("u: k must be >= 1 (got an empty batch of vectors)")
        return self.layout.views(flat), batched

    # ------------------------------------------------------------------------------- products
    def _engine_product(self, product, arg, batched: bool):
        """``product`` of the structured engine (which always takes a leading k) on ``arg``, a tensor
        or a list of tensors; a single tangent gets k = 1 for the call and loses it again."""
        def each(x, fn):
            return [fn(t) for t in x] if isinstance(x, list) else fn(x)

        with self._kernels(batched):
            out = product(arg if batched else each(arg, lambda t: t.unsqueeze(0)))
        return out if batched else each(out, lambda t: t.squeeze(0))

    def _jvp_list(self, v: torch.Tensor, batched: bool) -> list[torch.Tensor]:
        v = v.to(dtype=self._x.dtype, device=self._x.device)
        if self.engine is not None:
            return self._engine_product(self.engine.jvp, v, batched)
        if batched and (v.shape[0] == 1 or not self._functional):  # one tangent at a time
            singles = [self._jvp_list(t, False) for t in v]
            return [torch.stack(parts) for parts in zip(*singles)]
        if self._uses_closures(batched):
            fn = self._func_closures().jvp
            with self._kernels(batched):
                out = vmap(fn)(v) if batched else fn(v)
            return [out[n] for n in self.param_names]
        graph = self._graph(v.shape[0] if batched else None)
        with self._kernels(batched):
            grads = torch.autograd.grad(graph.grad_x, graph.params, v, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, graph.params)]

    def _vjp_tensor(self, us: list[torch.Tensor], batched: bool) -> torch.Tensor:
        if self.engine is not None:
            return self._engine_product(self.engine.vjp, us, batched)
        if batched and (us[0].shape[0] == 1 or not self._functional):  # one tangent at a time
            return torch.stack([self._vjp_tensor(list(parts), False) for parts in zip(*us)])
        if self._uses_closures(batched):
            fn = self._func_closures().vjp
            cot = dict(zip(self.param_names, us))
            with self._kernels(batched):
                return vmap(fn)(cot) if batched else fn(cot)
        graph = self._graph(us[0].shape[0] if batched else None)
        with self._kernels(batched):
            (out,) = torch.autograd.grad(graph.grad_params, graph.x, us, retain_graph=True, allow_unused=True)
        return torch.zeros_like(graph.x) if out is None else out

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """``J v``: input direction(s) ``v`` → flat parameter-space vector(s) (see class table)."""
        batched = self._tangent_batch(v, "v")
        return flatten_tensors(self._jvp_list(v, batched), self.batch_dims + batched)

    def vjp(self, u) -> torch.Tensor:
        """``Jᵀ u``: parameter-space vector(s) ``u`` (flat or list) → input-shaped tensor(s)."""
        us, batched = self._param_batch(u)
        us = [t.to(dtype=self._x.dtype, device=self._x.device) for t in us]
        return self._vjp_tensor(us, batched)

    def gram(self, v: torch.Tensor) -> torch.Tensor:
        """``JᵀJ v``: input-shaped ``v`` (optionally with a leading k) → same shape."""
        batched = self._tangent_batch(v, "v")
        if self.engine is not None:
            return self._engine_product(self.engine.gram, v.to(dtype=self._x.dtype, device=self._x.device), batched)
        return self._vjp_tensor(self._jvp_list(v, batched), batched)

    # ---------------------------------------------------------------------------- conversions
    def flatten(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Parameter-shaped list (optionally with one leading batch dim, and ``N`` per sample) →
        flat ``(..., P)``; every tensor's shape is checked against its parameter's."""
        prefix = (self.num_samples,) if self.per_sample else ()
        return frontdoor.parameter_vectors(list(tensors), self.layout, "tensors", lead=prefix, batch=1)

    def unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Flat ``(..., P)`` → list of parameter-shaped views with the same leading dims."""
        return self.layout.views(flat)
