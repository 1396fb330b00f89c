"""Node rules of the engine's parameterised layers: Linear, Conv2d, BatchNorm (eval), and the
generic ``torch.func`` rule for every other node (LayerNorm, attention, custom modules).

The contract is :class:`~i2f_fast.engine.rules.Rule`'s. Shapes: primal tensors are the model's
``(N, …)``; tangents and adjoints carry a leading ``k``; parameter tangents are ``(k, *θ)``, or
``(k, N, *θ)`` in per-sample mode.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import jvp, vjp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import kernels
from .rules import Rule, _add


class LinearRule(Rule):
    """``z = a Wᵀ + b`` on rows ``a (N, …, I)``.

    ``J v``'s block ``U = Σ_rows ė aᵀ + e ȧᵀ`` is never formed when the Gram form is cheaper
    (counted cost: Gram ``S²(I+O)`` against outer product ``S·I·O`` for S rows per Jacobian,
    ENGINE.md), which is always the case for one or a few samples through an MLP: ``adjoint_up``
    then applies it with the fused ``gram_apply`` kernel; not when the weight is shared with
    another node (``shares_params``: its ``U`` must be summed over the nodes first).
    """

    def __init__(self, weight_slot: int, bias_slot: int | None):
        self.param_slots = (weight_slot,) if bias_slot is None else (weight_slot, bias_slot)
        self.bias = bias_slot is not None

    def forward(self, inputs, params):
        return F.linear(inputs[0], *params)

    def prepare(self, inputs, params, z, dz):
        a, self.W = inputs[0], params[0]
        self.a_shape, self.z_shape = a.shape, z.shape
        features_in, features_out = a.shape[-1], z.shape[-1]
        groups = a.shape[0] if self.per_sample else 1
        self.rows = a.numel() // (groups * features_in)  # rows S of one Jacobian
        self.lead = (a.shape[0],) if self.per_sample else ()
        self.a_rows = a.reshape(groups, self.rows, features_in)
        self.e_rows = dz.reshape(groups, self.rows, features_out)
        self.use_gram = not self.shares_params and self.rows * (features_in + features_out) < features_in * features_out

    def tangent(self, adots):
        return F.linear(adots[0], self.W)

    def tangent_back(self, adots, dzdot, materialize=True):
        k = dzdot.shape[0]
        dadot = None if self.reads_x else dzdot @ self.W
        ed = dzdot.reshape(k, *self.e_rows.shape)
        ad = adots[0].reshape(k, *self.a_rows.shape)
        if self.use_gram and not materialize:
            return [dadot], ("gram", ad, ed)
        U = ed.transpose(-1, -2) @ self.a_rows + self.e_rows.transpose(-1, -2) @ ad  # (k, G, O, I)
        parts = [U.reshape(k, *self.lead, *self.W.shape)]
        if self.bias:
            parts.append(ed.sum(2).reshape(k, *self.lead, self.W.shape[0]))
        return [dadot], parts

    def adjoint_up(self, ebars, u):
        ez = None if ebars[0] is None else F.linear(ebars[0], self.W)
        if isinstance(u, tuple) and u[0] == "gram":
            ua, ute = kernels.gram_apply(self.a_rows, self.e_rows, u[1], u[2], self.bias)
        else:
            k = u[0].shape[0]
            U = u[0].reshape(k, self.a_rows.shape[0], *self.W.shape)  # (k, G, O, I)
            ua = self.a_rows @ U.transpose(-1, -2)
            if self.bias:
                ua = ua + u[1].reshape(k, self.a_rows.shape[0], 1, self.W.shape[0])
            ute = self.e_rows @ U
        k = ua.shape[0]
        return _add(ez, ua.reshape(k, *self.z_shape)), [ute.reshape(k, *self.a_shape)]

    def adjoint_down(self, abar):
        return [abar @ self.W]

    def sample_gradient(self):
        n = self.a_rows.shape[0]
        parts = [(self.e_rows.transpose(-1, -2) @ self.a_rows).reshape(n, *self.W.shape)]  # Σ_rows e aᵀ
        if self.bias:
            parts.append(self.e_rows.sum(1))
        return parts


class ConvRule(Rule):
    """2-D convolution (any stride, padding, dilation, groups; zero padding).

    ``U`` is materialised (one weight-gradient convolution). The ``k`` tangents, and in per-sample
    mode the N samples, are folded into the convolution's groups so that every sweep is one call,
    and the operand pairs of ENGINE.md are merged, five convolutions per layer instead of eight:

    * ``U = wgrad(cat_batch[a, ȧ], cat_batch[ė, e])``;
    * ``ē_z = conv(cat_channels[a, ē], cat_in[U, W]) + u_b``;
    * ``ā = input_grad(cat_out[U, W], cat_channels[e, ā_z])`` (the second-order term and the
      transpose of the forward tangent together).

    Per-sample mode with ``groups = 1`` keeps each sample's patches ``P_n`` ``(C·kh·kw, L)`` (one
    strided copy of ``a`` per primal, L output positions) and applies the per-sample weights as
    batched matrix products instead: the gradients ``e_n P_nᵀ`` and ``U_n P_n`` in ``adjoint_up``
    (plus ``conv(ē, W)``, one batched convolution). At the attack's R = 8 LeNet restarts these
    cost 1.07 ms against 1.57 ms for the grouped convolutions (``benchmarks/README.md``).
    On an image-input layer (≤ 3 channels, ≤ 256 output positions) ``adjoint_down`` is one
    batched product and one col2im as well: 0.12 against 0.57 ms for the grouped transposed
    convolution (one channel per group) on LeNet's first layer at R = 8, 0.24 against 0.59 ms for
    3×32×32 with stride 2 (it loses with more channels or positions: 0.33 against 0.27 ms at 12
    channels, 1.15 against 0.88 ms at 3×32×32 with stride 1).
    """

    def __init__(self, weight_slot: int, bias_slot: int | None, stride, padding, dilation, groups: int):
        self.param_slots = (weight_slot,) if bias_slot is None else (weight_slot, bias_slot)
        self.bias = bias_slot is not None
        self.stride, self.padding, self.dilation, self.groups = tuple(stride), tuple(padding), tuple(dilation), groups

    def forward(self, inputs, params):
        return F.conv2d(inputs[0], params[0], params[1] if self.bias else None,
                        self.stride, self.padding, self.dilation, self.groups)

    def prepare(self, inputs, params, z, dz):
        a, W = inputs[0], params[0]
        self.a, self.e, self.W = a, dz, W
        self.a_shape, self.z_shape = a.shape, z.shape
        kernel = W.shape[2:]
        self.output_padding = tuple(
            a.shape[2 + i] - ((z.shape[2 + i] - 1) * self.stride[i] - 2 * self.padding[i]
                              + self.dilation[i] * (kernel[i] - 1) + 1)
            for i in range(2)
        )
        self.lead = (a.shape[0],) if self.per_sample else ()
        self._weight_like: dict[int, torch.Tensor] = {}
        self._folded: dict[tuple[int, int], torch.Tensor] = {}
        self._U = None
        self._patches = None
        self.patched = self.per_sample and self.groups == 1
        self.patched_down = self.patched and a.shape[1] <= 3 and z.shape[2] * z.shape[3] <= 256

    def _sample_patches(self) -> torch.Tensor:
        """Per-sample mode: ``a``'s patches ``(N, C·kh·kw, L)`` (im2col), built once per primal."""
        if self._patches is None:
            (ph, pw), (sh, sw), (dh, dw) = self.padding, self.stride, self.dilation
            kh, kw = self.W.shape[2:]
            padded = F.pad(self.a, (pw, pw, ph, ph))
            n, c = padded.shape[:2]
            ho, wo = self.z_shape[2:]
            s_n, s_c, s_h, s_w = padded.stride()
            windows = padded.as_strided((n, c, kh, kw, ho, wo), (s_n, s_c, dh * s_h, dw * s_w, sh * s_h, sw * s_w))
            self._patches = windows.reshape(n, c * kh * kw, ho * wo)
        return self._patches

    # --------------------------------------------------------------------------- convolutions
    def _conv(self, x, w, groups):
        return F.conv2d(x, w, None, self.stride, self.padding, self.dilation, groups)

    def _input_grad(self, gy, w, groups):
        return F.conv_transpose2d(gy, w, None, self.stride, self.padding, self.output_padding, groups, self.dilation)

    def _weight_grad(self, x, gy, blocks):
        like = self._weight_like.get(blocks)
        if like is None:
            like = self._weight_like[blocks] = self.W.new_empty(blocks * self.W.shape[0], *self.W.shape[1:])
        return torch.ops.aten.convolution_backward(
            gy, x, like, None, self.stride, self.padding, self.dilation, False, [0, 0],
            blocks * self.groups, [False, True, False],
        )[1]

    # ------------------------------------------------------------------ folding k (and N) into groups
    def _num_blocks(self, k):
        return k * self.a_shape[0] if self.per_sample else k

    def _fold(self, t):
        """``(k, N, C, H, W)`` → ``(b, blocks·C, H, W)``: b = N (one Jacobian) or 1 (per sample)."""
        k, n, c = t.shape[:3]
        if self.per_sample:
            return t.reshape(1, k * n * c, *t.shape[3:])
        return t.transpose(0, 1).reshape(n, k * c, *t.shape[3:])

    def _unfold(self, y, k):
        """Inverse of :meth:`_fold` for an output ``(b, blocks·O, H, W)`` → ``(k, N, O, H, W)``."""
        n = self.a_shape[0]
        if self.per_sample:
            return y.view(k, n, -1, *y.shape[2:])
        return y.view(n, k, -1, *y.shape[2:]).transpose(0, 1)

    def _primal(self, t, k):
        """The cached primal ``t`` (``a`` or ``e``) folded for ``k`` tangents (built once per k)."""
        key = (id(t), k)
        folded = self._folded.get(key)
        if folded is None:
            folded = self._folded[key] = self._fold(t.unsqueeze(0).expand(k, *t.shape))
        return folded

    def _interleave(self, first, second, blocks):
        """Channels ``[blocks][groups][2][C/groups]`` from two folded ``(b, blocks·C, …)`` tensors."""
        b, _, *spatial = first.shape
        g = self.groups
        parts = [t.reshape(b, blocks, g, 1, -1, *spatial) for t in (first, second)]
        return torch.cat(parts, 3).reshape(b, -1, *spatial)

    # ------------------------------------------------------------------------------------ sweeps
    def tangent(self, adots):
        k = adots[0].shape[0]
        return self._conv(adots[0].flatten(0, 1), self.W, self.groups).view(k, *self.z_shape)

    def tangent_back(self, adots, dzdot, materialize=True):
        k = dzdot.shape[0]
        dadot = None if self.reads_x else self._input_grad(dzdot.flatten(0, 1), self.W, self.groups).view(k, *self.a_shape)
        blocks = self._num_blocks(k)
        x = torch.cat([self._primal(self.a, k), self._fold(adots[0])], 0)
        gy = torch.cat([self._fold(dzdot), self._primal(self.e, k)], 0)
        U = self._weight_grad(x, gy, blocks).view(k, *self.lead, *self.W.shape)
        parts = [U]
        if self.bias:
            dims = (-2, -1) if self.per_sample else (1, -2, -1)
            parts.append(dzdot.sum(dims))
        return [dadot], parts

    def adjoint_up(self, ebars, u):
        k = u[0].shape[0]
        blocks = self._num_blocks(k)
        U = u[0].reshape(blocks, *self.W.shape)
        self._U = U
        if self.patched:
            n, out = self.a_shape[0], self.W.shape[0]
            ez = (u[0].reshape(k, n, out, -1) @ self._sample_patches()).view(k, *self.z_shape)
            if ebars[0] is not None:
                ez = ez + self.tangent(ebars)
            return (ez if not self.bias else ez + u[1].reshape(k, n, out, 1, 1)), [None]
        a = self._primal(self.a, k)
        if ebars[0] is None:
            ez = self._conv(a, U.reshape(-1, *self.W.shape[1:]), blocks * self.groups)
        else:
            x = self._interleave(a, self._fold(ebars[0]), blocks)
            w = torch.cat([U, self.W.expand(blocks, *self.W.shape)], 2).reshape(blocks * self.W.shape[0], -1, *self.W.shape[2:])
            ez = self._conv(x, w, blocks * self.groups)
        ez = self._unfold(ez, k)
        if self.bias:
            ez = ez + u[1].reshape(k, -1, self.W.shape[0], 1, 1)
        return ez, [None]

    def adjoint_down(self, abar):
        k = abar.shape[0]
        blocks = self._num_blocks(k)
        U, self._U = self._U, None
        g, out = self.groups, self.W.shape[0]
        if U is None:  # no adjoint_up before: the plain transpose of the forward tangent
            return [self._input_grad(abar.flatten(0, 1), self.W, g).view(k, *self.a_shape)]
        if self.patched_down:
            return [self._patched_adjoint_down(U, abar)]
        gy = self._interleave(self._primal(self.e, k), self._fold(abar), blocks)
        tail = self.W.shape[1:]
        w = torch.cat([U.reshape(blocks, g, 1, out // g, *tail),
                       self.W.reshape(1, g, 1, out // g, *tail).expand(blocks, g, 1, out // g, *tail)], 2)
        abar_in = self._input_grad(gy, w.reshape(-1, *tail), blocks * g)
        return [self._unfold(abar_in, k)]

    def _patched_adjoint_down(self, U, abar):
        """``ā_n = fold([U_n | W]ᵀ [e_n ; ā_z,n])``: one batched product and one col2im."""
        k, n, out = abar.shape[0], self.a_shape[0], self.W.shape[0]
        U = U.view(k, n, out, -1)
        weights = torch.cat([U, self.W.reshape(1, 1, out, -1).expand_as(U)], 2)  # (k, N, 2O, C·kh·kw)
        e = self.e.reshape(1, n, out, -1)
        grads = torch.cat([e.expand(k, *e.shape[1:]), abar.reshape(k, n, out, -1)], 2)  # (k, N, 2O, L)
        columns = (weights.transpose(-1, -2) @ grads).flatten(0, 1)  # (k·N, C·kh·kw, L)
        folded = F.fold(columns, self.a_shape[2:], self.W.shape[2:], self.dilation, self.padding, self.stride)
        return folded.view(k, *self.a_shape)

    def sample_gradient(self):
        """``e_n P_nᵀ`` per sample (else one weight-gradient convolution, samples folded into groups)."""
        n = self.a_shape[0]
        if self.patched:
            weight = (self.e.reshape(n, self.W.shape[0], -1) @ self._sample_patches().transpose(1, 2)).view(n, *self.W.shape)
        else:
            weight = self._weight_grad(self._primal(self.a, 1), self._primal(self.e, 1), n).view(n, *self.W.shape)
        parts = [weight]
        if self.bias:
            parts.append(self.e.sum((-2, -1)))
        return parts


class BatchNormRule(Rule):
    """BatchNorm in eval mode: ``z = (a − μ) s γ + β`` per channel, ``s = 1/√(var + ε)`` (running stats)."""

    def __init__(self, mean, var, eps: float, weight_slot: int | None, bias_slot: int | None):
        self.mean, self.var, self.eps = mean, var, eps
        self.param_slots = tuple(s for s in (weight_slot, bias_slot) if s is not None)
        self.affine = weight_slot is not None

    def forward(self, inputs, params):
        weight, bias = (params[0], params[1]) if self.affine else (None, None)
        return F.batch_norm(inputs[0], self.mean, self.var, weight, bias, False, 0.0, self.eps)

    def prepare(self, inputs, params, z, dz):
        a = inputs[0]
        channels = a.shape[1]
        self.view = (channels,) + (1,) * (a.dim() - 2)
        s = torch.rsqrt(self.var + self.eps)
        self.s = s.view(self.view)
        self.scale = (params[0] * s).view(self.view) if self.affine else self.s
        self.xhat = (a - self.mean.view(self.view)) * self.s
        self.e = dz
        spatial = tuple(range(3, a.dim() + 1))  # tangents are (k, N, C, *spatial)
        self.sum_dims = spatial if self.per_sample else (1,) + spatial

    def _per_channel(self, u):  # (k, [N], C) → broadcastable against (k, N, C, …)
        return u.reshape(u.shape[0], -1, *self.view)

    def tangent(self, adots):
        return adots[0] * self.scale

    def tangent_back(self, adots, dzdot, materialize=True):
        dadot = dzdot * self.scale
        if not self.affine:
            return [dadot], []
        gw = self._reduce(dzdot * self.xhat + self.e * self.s * adots[0])
        return [dadot], [gw, self._reduce(dzdot)]

    def _reduce(self, t):  # (k, N, C, *spatial) → (k, C) or per sample (k, N, C)
        return t.sum(self.sum_dims) if self.sum_dims else t  # sum(()) would reduce every dim

    def adjoint_up(self, ebars, u):
        ez = None if ebars[0] is None else ebars[0] * self.scale
        if not self.affine:
            return ez, [None]
        uw, ub = self._per_channel(u[0]), self._per_channel(u[1])
        return _add(ez, uw * self.xhat + ub), [uw * self.s * self.e]

    def adjoint_down(self, abar):
        return [abar * self.scale]

    def sample_gradient(self):
        if not self.affine:
            return []
        spatial = tuple(range(2, self.e.dim()))
        return [(self.e * self.xhat).sum(spatial), self.e.sum(spatial)] if spatial else [self.e * self.xhat, self.e]


def _composite_kernels(method):
    """Run a ``torch.func`` transform with attention's composite math kernels: the fused attention
    kernels (scaled-dot-product flash attention, ``nn.MultiheadAttention``'s inference fast path)
    have no forward-mode derivative."""

    @functools.wraps(method)
    def wrapped(*args, **kwargs):
        fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with sdpa_kernel(SDPBackend.MATH):
                return method(*args, **kwargs)
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)

    return wrapped


def _rows(tensors: tuple) -> tuple:
    """One sample's tensors as a batch of one."""
    return tuple(t.unsqueeze(0) for t in tensors)


class GenericRule(Rule):
    """Any other node ``z = fn(inputs, params)``: exact products from ``torch.func`` on the node alone.

    ``tangent`` is a ``jvp``; ``tangent_back`` the ``jvp`` of the node's ``vjp`` (its primal
    backward) along ``(ȧ, 0, δż)``; ``adjoint_up`` and ``adjoint_down`` the ``vjp`` of those two
    linear maps. Batched over ``k`` with ``vmap``; in per-sample mode the node's backward is
    ``vmap``-ed over the samples so that ``ġ_θ`` comes out per sample (the node must treat the
    samples independently, as every layer in eval mode does). Correct for anything ``torch.func``
    can differentiate twice, slower than the hand-written rules.
    """

    def __init__(self, fn: Callable, param_slots: tuple[int, ...] = ()):
        self.fn, self.param_slots = fn, tuple(param_slots)

    def forward(self, inputs, params):
        return self.fn(tuple(inputs), tuple(params))

    def prepare(self, inputs, params, z, dz):
        self.a, self.params, self.dz = tuple(inputs), tuple(params), dz

    def _f_inputs(self, *a):
        return self.fn(a, self.params)

    def _tangent_back_at(self, a, dz, adot, dzdot):
        """``(δȧ_i…, ġ_θ…)``: the ``jvp`` of the node's primal backward at ``(a, dz)`` along ``(ȧ, δż)``."""
        def backward(aa, dd):
            _, pull = vjp(self.fn, aa, self.params)
            return pull(dd)
        return jvp(backward, (a, dz), (adot, dzdot))[1]

    def _transpose_at(self, a, dz, ebar, u):
        """Transpose of :meth:`_tangent_back_at`'s linear map: ``(ā_i…, ē_z)`` from ``(ē_i…, u_θ…)``."""
        zeros = (tuple(torch.zeros_like(t) for t in a), torch.zeros_like(dz))
        _, pull = vjp(lambda ad, dd: self._tangent_back_at(a, dz, ad, dd), *zeros)
        return pull((ebar, u))

    def _tangent_back_one(self, adot, dzdot):
        if self.per_sample and self.params:
            def one(a_n, dz_n, ad_n, dzd_n):
                dadot, gdot = self._tangent_back_at(_rows(a_n), dz_n.unsqueeze(0), _rows(ad_n), dzd_n.unsqueeze(0))
                return tuple(t.squeeze(0) for t in dadot), gdot
            return vmap(one)(self.a, self.dz, adot, dzdot)
        return self._tangent_back_at(self.a, self.dz, adot, dzdot)

    def _transpose_one(self, ebar, u):
        if self.per_sample and self.params:
            def one(a_n, dz_n, e_n, u_n):
                abar, ez = self._transpose_at(_rows(a_n), dz_n.unsqueeze(0), _rows(e_n), u_n)
                return tuple(t.squeeze(0) for t in abar), ez.squeeze(0)
            return vmap(one)(self.a, self.dz, ebar, u)
        return self._transpose_at(self.a, self.dz, ebar, u)

    @_composite_kernels
    def tangent(self, adots):
        return vmap(lambda *t: jvp(self._f_inputs, self.a, t)[1])(*adots)

    @_composite_kernels
    def tangent_back(self, adots, dzdot, materialize=True):
        dadot, gdot = vmap(self._tangent_back_one)(tuple(adots), dzdot)
        return list(dadot), list(gdot)

    @_composite_kernels
    def adjoint_up(self, ebars, u):
        present = [e for e in ebars if e is not None] + list(u or [])
        if not present:
            return None, [None] * len(self.a)
        k = present[0].shape[0]
        e_full = tuple(torch.zeros(k, *t.shape, dtype=t.dtype, device=t.device) if e is None else e
                       for e, t in zip(ebars, self.a))
        abar2, ez = vmap(self._transpose_one)(e_full, tuple(u or ()))
        return ez, list(abar2)

    @_composite_kernels
    def adjoint_down(self, abar):
        _, pull = vjp(self._f_inputs, *self.a)
        return list(vmap(pull)(abar))

    @_composite_kernels
    def sample_gradient(self):
        if not self.params:
            return []

        def one(a_n, dz_n):
            _, pull = vjp(lambda params: self.fn(_rows(a_n), params), self.params)
            return pull(dz_n.unsqueeze(0))[0]

        return list(vmap(one)(self.a, self.dz))
