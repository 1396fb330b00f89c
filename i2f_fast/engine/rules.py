"""Node rules of the structured JᵀJ engine: the four sweeps of a product, one layer at a time.

A node computes ``z = f(a_1, …, a_m; θ)`` from inputs that depend on ``x`` and parameters ``θ``.
The primal run caches its inputs ``a_i`` and the loss adjoint of its output ``δz = ∂L/∂z``
(``e`` in ENGINE.md). With tangents carrying a leading ``k`` (CG right-hand sides, Lanczos blocks),
each rule implements the node's share of the four sweeps of ENGINE.md:

=====================  =======================================================================
``tangent``            forward tangent ``ż = ∂f/∂a · ȧ``
``tangent_back``       backward tangent ``δȧ_i = (∂f/∂a_i)ᵀ δż + ∂_{a_i}⟨δz, ∂f/∂a · ȧ⟩`` and the
                       node's block of ``J v``: ``ġ_θ = (∂f/∂θ)ᵀ δż + ∂_θ⟨δz, ∂f/∂a · ȧ⟩``
``adjoint_up``         transpose of ``tangent_back``: from ``(ē_i, u_θ)`` to ``ē_z`` (adjoint of
                       ``δż``) and second-order contributions to the ``ā_i``
``adjoint_down``       transpose of ``tangent``: ``ā_i += (∂f/∂a_i)ᵀ ā_z``
``sample_gradient``    per-sample mode: each sample's gradient ``(N, *θ)`` of its own loss with
                       respect to the node's parameters, from the cached primal
=====================  =======================================================================

A rule may keep state from ``adjoint_up`` to ``adjoint_down`` (the convolution merges its two
input-gradient convolutions there); the contributions both return sum to ``ā_i``. Parameter
tangents are lists with one tensor per parameter slot, shaped ``(k, *θ)``, or ``(k, N, *θ)`` in
per-sample mode (each sample its own Jacobian). With ``materialize=False`` a rule may return its
own compact form of ``ġ`` instead, which only its own ``adjoint_up`` consumes (the Gram trick).

Every rule is checked in float64 against ``torch.func`` on the node alone
(``python_tests/test_engine_rules.py``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.func import jvp, vjp, vmap

from ..reference.dual_act import activation_derivatives
from . import kernels

Tensor = torch.Tensor


class Rule:
    """Base of every node rule; see the module docstring for the contract.

    Attributes:
        param_slots: indices into the model's trainable parameters, one per ``ġ`` entry.
        per_sample: each sample has its own Jacobian (set by the engine before ``prepare``).
        reads_x: the node's only input is ``x``; layers then skip ``δȧ`` (None), an input-gradient
            product nobody reads (set by the engine).
        shares_params: another node uses one of this node's parameters, so its ``J v`` block is
            summed with theirs before ``adjoint_up`` and must be materialised (set by the engine).
    """

    param_slots: tuple[int, ...] = ()
    per_sample: bool = False
    reads_x: bool = False  # the input is x itself: its backward tangent δȧ is never used
    shares_params: bool = False  # another node uses one of its parameters

    def forward(self, inputs: Sequence[Tensor], params: Sequence[Tensor]) -> Tensor:
        raise NotImplementedError

    def prepare(self, inputs: Sequence[Tensor], params: Sequence[Tensor], z: Tensor, dz: Tensor) -> None:
        """Cache what the sweeps need from the primal (detached tensors)."""
        raise NotImplementedError

    def tangent(self, adots: Sequence[Tensor]) -> Tensor:
        raise NotImplementedError

    def tangent_back(self, adots: Sequence[Tensor], dzdot: Tensor, materialize: bool = True):
        raise NotImplementedError

    def adjoint_up(self, ebars: Sequence[Tensor | None], u) -> tuple[Tensor | None, list]:
        raise NotImplementedError

    def adjoint_down(self, abar: Tensor) -> list[Tensor | None]:
        raise NotImplementedError

    def sample_gradient(self) -> list[Tensor]:
        """Per-sample mode: each sample's own gradient of its loss with respect to the node's
        parameters, ``(N, *θ)`` per slot, from the primal cached by ``prepare`` (no autograd)."""
        return []


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


# ------------------------------------------------------------------------------------ linear maps
class FixedLinearRule(Rule):
    """A parameter-free map that is linear in its one input: ``_up`` applies it to ``(k, *a)``
    tangents, ``_down`` its transpose to ``(k, *z)`` ones; no second-order terms, so the backward
    tangent and the downward adjoint are ``_down`` and the upward adjoint is ``_up``."""

    def _up(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _down(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def tangent(self, adots):
        return self._up(adots[0])

    def tangent_back(self, adots, dzdot, materialize=True):
        return [self._down(dzdot)], []

    def adjoint_up(self, ebars, u):
        return (None if ebars[0] is None else self._up(ebars[0])), [None]

    def adjoint_down(self, abar):
        return [self._down(abar)]


class ReshapeRule(FixedLinearRule):
    """flatten / view / reshape / squeeze / unsqueeze / contiguous / identity: element order kept."""

    def __init__(self, fn: Callable[[Tensor], Tensor]):
        self.fn = fn

    def forward(self, inputs, params):
        return self.fn(inputs[0])

    def prepare(self, inputs, params, z, dz):
        self.in_shape, self.out_shape = inputs[0].shape, z.shape

    def _up(self, t):
        return t.reshape(t.shape[0], *self.out_shape)

    def _down(self, t):
        return t.reshape(t.shape[0], *self.in_shape)



class LinearMapRule(Rule):
    """Any map that is linear (or affine) in its x-dependent inputs and has no parameters.

    ``ż = f'(ȧ)`` by ``torch.func.jvp`` and the transpose by ``vjp``, batched over ``k`` with
    ``vmap``; no second-order terms. Used for pooling, slicing, permutes, sums and means, and
    broadcasting adds/subtractions, scalar multiplications and concatenations of node outputs.
    """

    def __init__(self, fn: Callable[..., Tensor], num_inputs: int):
        self.fn, self.num_inputs = fn, num_inputs

    def forward(self, inputs, params):
        return self.fn(*inputs)

    def prepare(self, inputs, params, z, dz):
        self.primals = tuple(inputs)
        _, self._pullback = vjp(self.fn, *self.primals)

    def _apply(self, ts):
        return jvp(self.fn, self.primals, tuple(ts))[1]

    def _transpose(self, t):
        return self._pullback(t)

    def tangent(self, adots):
        return vmap(lambda *ts: self._apply(ts))(*adots)

    def tangent_back(self, adots, dzdot, materialize=True):
        return list(vmap(self._transpose)(dzdot)), []

    def adjoint_up(self, ebars, u):
        if all(e is None for e in ebars):
            return None, [None] * self.num_inputs
        k = next(e for e in ebars if e is not None).shape[0]
        full = [torch.zeros(k, *p.shape, dtype=p.dtype, device=p.device) if e is None else e
                for e, p in zip(ebars, self.primals)]
        return self.tangent(full), [None] * self.num_inputs

    def adjoint_down(self, abar):
        return list(vmap(self._transpose)(abar))


class AddRule(Rule):
    """Sum of x-dependent tensors (residual connections), with broadcasting; ``signs`` ±1 each."""

    def __init__(self, signs: Sequence[float], constant: Tensor | float | None = None):
        self.signs, self.constant = list(signs), constant

    def forward(self, inputs, params):
        out = sum(s * a for s, a in zip(self.signs, inputs))
        return out if self.constant is None else out + self.constant

    def prepare(self, inputs, params, z, dz):
        self.in_shapes, self.out_shape = [a.shape for a in inputs], z.shape

    def _sum(self, ts):
        out = None
        for s, t in zip(self.signs, ts):
            if t is not None:
                t = t if s == 1 else s * t
                out = t if out is None else out + t
        if out is not None and out.shape[1:] != self.out_shape:
            out = out.expand(out.shape[0], *self.out_shape)
        return out

    def _split(self, t):
        return [(t if s == 1 else s * t).sum_to_size(t.shape[0], *shape) for s, shape in zip(self.signs, self.in_shapes)]

    def tangent(self, adots):
        return self._sum(adots)

    def tangent_back(self, adots, dzdot, materialize=True):
        return self._split(dzdot), []

    def adjoint_up(self, ebars, u):
        return self._sum(ebars), [None] * len(self.signs)

    def adjoint_down(self, abar):
        return self._split(abar)


class ScaleRule(FixedLinearRule):
    """``z = c · a`` (or ``a / c``) for a constant ``c`` (number or tensor without x dependence)."""

    def __init__(self, scale):
        self.scale = scale

    def forward(self, inputs, params):
        return inputs[0] * self.scale

    def prepare(self, inputs, params, z, dz):
        self.in_shape = inputs[0].shape

    def _up(self, t):
        return t * self.scale

    def _down(self, t):
        return (t * self.scale).sum_to_size(t.shape[0], *self.in_shape)


class CatRule(Rule):
    """``torch.cat`` of x-dependent tensors and constants along ``dim``."""

    def __init__(self, pieces: Sequence[int | Tensor], dim: int):
        self.pieces = list(pieces)  # an int = index into the rule's inputs; a tensor = constant
        self.dim = dim

    def forward(self, inputs, params):
        return torch.cat([inputs[p] if isinstance(p, int) else p for p in self.pieces], self.dim)

    def prepare(self, inputs, params, z, dz):
        self.sizes = [(inputs[p] if isinstance(p, int) else p).shape[self.dim] for p in self.pieces]
        self.shapes = [(inputs[p] if isinstance(p, int) else p).shape for p in self.pieces]
        self.cat_dim = self.dim % z.dim() + 1  # with the leading k
        self.num_inputs = len(inputs)

    def _cat(self, ts):
        ref = next(t for t in ts if t is not None)
        parts = []
        for p, shape in zip(self.pieces, self.shapes):
            t = ts[p] if isinstance(p, int) else None
            parts.append(ref.new_zeros(ref.shape[0], *shape) if t is None else t)
        return torch.cat(parts, self.cat_dim)

    def _split(self, t):
        out: list[Tensor | None] = [None] * self.num_inputs
        for p, part in zip(self.pieces, torch.split(t, self.sizes, self.cat_dim)):
            if isinstance(p, int):
                out[p] = _add(out[p], part)
        return out

    def tangent(self, adots):
        return self._cat(adots)

    def tangent_back(self, adots, dzdot, materialize=True):
        return self._split(dzdot), []

    def adjoint_up(self, ebars, u):
        if all(e is None for e in ebars):
            return None, [None] * self.num_inputs
        return self._cat(ebars), [None] * self.num_inputs

    def adjoint_down(self, abar):
        return self._split(abar)


class MaxPoolRule(FixedLinearRule):
    """2-D max-pool: piecewise linear, routes tangents by the argmax cached in the primal."""

    def __init__(self, kwargs: dict):
        self.kwargs = {k: v for k, v in kwargs.items() if k != "return_indices"}

    def forward(self, inputs, params):
        return F.max_pool2d(inputs[0], **self.kwargs)

    def prepare(self, inputs, params, z, dz):
        a = inputs[0]
        _, idx = F.max_pool2d(a, return_indices=True, **self.kwargs)
        self.in_shape, self.out_shape = a.shape, idx.shape
        self.index = idx.flatten(-2)  # (N, C, Ho·Wo) into the flattened H·W plane

    def _up(self, t):  # gather at the argmax
        k = t.shape[0]
        flat = t.flatten(-2)
        return flat.gather(-1, self.index.expand(k, *self.index.shape)).view(k, *self.out_shape)

    def _down(self, t):  # scatter-add back to the argmax
        k = t.shape[0]
        out = t.new_zeros(k, *self.in_shape[:-2], self.in_shape[-2] * self.in_shape[-1])
        out.scatter_add_(-1, self.index.expand(k, *self.index.shape), t.flatten(-2))
        return out.view(k, *self.in_shape)



class AvgPoolRule(FixedLinearRule):
    """2-D average pooling (``avg_pool2d`` or ``adaptive_avg_pool2d``), a fixed linear map."""

    def __init__(self, adaptive: bool, kwargs: dict):
        self.adaptive, self.kwargs = adaptive, kwargs

    def _pool(self, t):
        return F.adaptive_avg_pool2d(t, **self.kwargs) if self.adaptive else F.avg_pool2d(t, **self.kwargs)

    def forward(self, inputs, params):
        return self._pool(inputs[0])

    def prepare(self, inputs, params, z, dz):
        self.in_shape, self.out_shape = inputs[0].shape, z.shape
        self._like: dict[int, Tensor] = {}

    def _up(self, t):
        k = t.shape[0]
        return self._pool(t.reshape(k * self.in_shape[0], *self.in_shape[1:])).view(k, *self.out_shape)

    def _down(self, t):
        k = t.shape[0]
        like = self._like.get(k)
        if like is None:
            like = self._like[k] = t.new_empty(k * self.in_shape[0], *self.in_shape[1:])
        g = t.reshape(k * self.out_shape[0], *self.out_shape[1:])
        if self.adaptive:
            out = torch.ops.aten._adaptive_avg_pool2d_backward(g, like)
        else:
            kw = self.kwargs
            kernel = kw["kernel_size"]
            out = torch.ops.aten.avg_pool2d_backward(
                g, like, kernel, kw.get("stride") or kernel, kw.get("padding", 0), kw.get("ceil_mode", False),
                kw.get("count_include_pad", True), kw.get("divisor_override"),
            )
        return out.view(k, *self.in_shape)



# ----------------------------------------------------------------------------------- activations
class ActivationRule(Rule):
    """Elementwise activation ``a = σ(z)`` (ENGINE.md table): ``σ' ⊙ t + σ'' ⊙ δa ⊙ s`` per sweep.

    On CUDA each sweep is one launch of the fused ``dual_act`` kernel from the cached ``z``. On the
    CPU ``σ'(z)`` and ``σ''(z) ⊙ δa`` are computed once per primal and each sweep is one or two
    elementwise torch ops on them: 1.2–4.5 µs against 14–104 µs for the C++ ``dual_act`` (whose
    scalar ``expf`` dominates) at LeNet sizes, and it cut the activations' share of a LeNet JᵀJ v
    from 765 µs (reference ``dual_act`` from ``z``) to about 100 µs (``benchmarks/README.md``).
    """

    def __init__(self, act: str, alpha: float = 0.0, threshold: float = 20.0, fn: Callable | None = None):
        self.act, self.alpha, self.threshold, self.fn = act, alpha, threshold, fn

    def forward(self, inputs, params):
        return self.fn(inputs[0])

    def prepare(self, inputs, params, z, dz):
        self.z, self.da = inputs[0], dz
        self.fused = self.z.is_cuda
        if not self.fused:
            d1, d2 = activation_derivatives(self.z, self.act, self.alpha, self.threshold)
            self.d1, self.d2_da = d1, d2 * dz  # σ'(z) and σ''(z) ⊙ δa

    def _act(self, t, s=None):
        """``σ' ⊙ t + σ'' ⊙ δa ⊙ s`` (the second term only with ``s``)."""
        if self.fused:
            return kernels.dual_act(self.z, t, s, None if s is None else self.da, self.act, self.alpha, self.threshold)
        out = self.d1 * t
        return out if s is None else out.addcmul_(self.d2_da, s)

    def tangent(self, adots):
        return self._act(adots[0])

    def tangent_back(self, adots, dzdot, materialize=True):
        return [self._act(dzdot, adots[0])], []

    def adjoint_up(self, ebars, u):
        self._ebar = ebars[0]
        return (None if ebars[0] is None else self._act(ebars[0])), [None]

    def adjoint_down(self, abar):
        ebar, self._ebar = self._ebar, None
        return [self._act(abar, ebar)]
