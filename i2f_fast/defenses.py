"""Gradient defenses: perturb a shared gradient ``g`` into ``g + δ`` before it leaves the client.

Every defense is a function ``name(grads, ..., generator=None) -> DefenseResult``. ``grads`` is the
clean gradient, flat ``(P,)`` or a list of parameter-shaped tensors; the result's ``.grads`` has
the same form, ``.delta`` is the flat ``(P,)`` perturbation ``defended − clean`` (what I²F takes)
and ``.stats`` holds ``‖g‖``, ``‖δ‖``, their ratio and the cosine between clean and defended
gradients. Random defenses draw only through ``generator`` (or the global RNG when None), so a
seeded generator makes them reproducible.

=====================  =====================================================================
defense                perturbation
=====================  =====================================================================
``gaussian(var)``      ``δ ~ N(0, var·I)`` (the paper's "noise" defense with energy 1)
``laplace(scale)``     ``δ ~ Laplace(0, scale)`` i.i.d.
``dp(model, x, y,      DP-SGD as Opacus: per-sample gradients clipped to ``clip_norm``, summed,
clip_norm, noise_      ``N(0, (noise_multiplier·clip_norm)²)`` added, divided by the batch size
multiplier)``
``prune(ratio)``       global magnitude pruning: the ``round(ratio·P)`` smallest ``|g_i|`` set to 0
``topk(ratio)``        keep only the ``round(ratio·P)`` largest ``|g_i|`` (gradient sparsification)
``quantize(bits)``     stochastic rounding onto ``2^bits`` levels spanning ``[−max|g|, max|g|]``
``sign()``             signSGD with the norm kept: ``sign(g)·‖g‖/‖sign(g)‖``
``eigen_direction(     ``δ = scale · u_index``: the parameter-space direction of the index-th
model, x, y, index,    eigenpair of ``JᵀJ`` (I²F predicts ``scale·√λ/(λ+ε)`` for it)
scale)``
``compose(*steps)``    apply defenses in order; ``δ`` = final − clean
=====================  =====================================================================

:data:`DEFENSES` maps names to these functions for the command line; :func:`apply_defense` calls
one by name with a single "strength" argument.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import vmap

from . import frontdoor
from .flat import FlatLayout
from .influence import InversionInfluence
from .operators import LossFn


@dataclass
class DefenseResult:
    """Result of a defense.

    Attributes:
        grads: the defended gradient, in the form it was given (flat ``(P,)`` or a list).
        delta: ``(P,)`` flat ``defended − clean``.
        stats: ``grad_norm`` ‖g‖, ``delta_norm`` ‖δ‖, ``ratio`` ‖δ‖/‖g‖ (inf for g = 0) and
            ``cosine`` between g and g + δ (0 when either is zero), all Python floats.
    """

    grads: torch.Tensor | list[torch.Tensor]
    delta: torch.Tensor
    stats: dict[str, float]


# ---------------------------------------------------------------------------------- plumbing
def _as_flat(grads, layout: FlatLayout | None = None) -> tuple[torch.Tensor, FlatLayout | None]:
    """``grads`` → (flat ``(P,)``, the layout of the list it came as, or None for a flat tensor).

    Parsed by the front door: against ``layout`` (a model's parameters, shapes checked tensor by
    tensor) when given, else against the shapes of the list itself.
    """
    if isinstance(grads, (list, tuple)):
        if not grads or not all(isinstance(g, torch.Tensor) for g in grads):
            raise TypeError("grads must be a flat tensor (P,) or a non-empty list of parameter-shaped tensors")
        layout = layout or FlatLayout([g.shape for g in grads])
        return frontdoor.parameter_vectors(grads, layout, "grads").detach(), layout
    if layout is None:
        frontdoor.float_tensor(grads, "grads", dims=1)
        layout = FlatLayout([grads.shape])
    return frontdoor.parameter_vectors(grads, layout, "grads").detach(), None


def _result(clean: torch.Tensor, defended: torch.Tensor, layout: FlatLayout | None) -> DefenseResult:
    frontdoor.finite_output(defended, "the defended gradient", "the defense's strength overflows the dtype")
    delta = defended - clean
    g_norm, d_norm, h_norm = clean.norm().item(), delta.norm().item(), defended.norm().item()
    cosine = (clean @ defended).item() / (g_norm * h_norm) if g_norm > 0 and h_norm > 0 else 0.0
    stats = dict(grad_norm=g_norm, delta_norm=d_norm, ratio=d_norm / g_norm if g_norm > 0 else math.inf, cosine=cosine)
    return DefenseResult(defended if layout is None else layout.views(defended), delta, stats)


def _noise(draw, generator, like: torch.Tensor) -> torch.Tensor:
    """``draw(like.shape)`` (``torch.rand`` / ``torch.randn``) on the generator's device, moved to ``like``'s."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    device = generator.device if generator is not None else like.device
    return draw(like.shape, generator=generator, dtype=like.dtype, device=device).to(like.device)


def _keep_largest(flat: torch.Tensor, keep: int) -> torch.Tensor:
    """``flat`` with all but its ``keep`` largest-magnitude entries set to 0 (ties: lowest index kept
    first by ``topk``'s order). Uses ``topk``, so it works on any length (``torch.quantile`` stops
    at 2^24 elements)."""
    out = torch.zeros_like(flat)
    if keep > 0:
        index = flat.abs().topk(keep, sorted=False).indices
        out[index] = flat[index]
    return out


# ---------------------------------------------------------------------------------- defenses
def gaussian(grads, var: float, *, generator: torch.Generator | None = None) -> DefenseResult:
    """Additive Gaussian noise ``δ ~ N(0, var·I)`` (``var`` is the variance, not the std).

    Raises: ValueError for ``var < 0`` or a bad ``grads``.
    """
    var = frontdoor.number(var, "var", minimum=0)
    clean, layout = _as_flat(grads)
    return _result(clean, clean + math.sqrt(var) * _noise(torch.randn, generator, clean), layout)


def laplace(grads, scale: float, *, generator: torch.Generator | None = None) -> DefenseResult:
    """Additive Laplace noise, i.i.d. with density ``exp(−|δ|/scale)/(2·scale)`` (variance 2·scale²).

    Drawn by inverse CDF from ``u ~ U[ε − 1, 1 − ε]`` (ε the dtype's machine epsilon, as
    ``torch.distributions.Laplace``): ``δ = −scale·sign(u)·log(1 − |u|)``. The closed-off ends keep
    ``log(1 − |u|)`` finite: from ``U[−1, 1)`` a draw of exactly −1 (probability 2⁻²⁴ per entry in
    float32, so several per ResNet18 gradient) would give an infinite δ.

    Raises: ValueError for ``scale < 0`` or a bad ``grads``; FloatingPointError when ``scale`` is
    so large that the defended gradient overflows.
    """
    scale = frontdoor.number(scale, "scale", minimum=0)
    clean, layout = _as_flat(grads)
    tiny = torch.finfo(clean.dtype).eps
    u = (2 * _noise(torch.rand, generator, clean) - 1).clamp_(tiny - 1, 1 - tiny)
    noise = -scale * u.sign() * torch.log1p(-u.abs())
    return _result(clean, clean + noise, layout)


def dp(
    grads,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    clip_norm: float,
    noise_multiplier: float,
    *,
    loss_fn: LossFn | None = None,
    generator: torch.Generator | None = None,
) -> DefenseResult:
    """DP-SGD's gradient with Opacus semantics (Abadi et al. 2016).

    Per-sample gradients ``g_n = ∇_θ ℓ(x_n, y_n)`` (``torch.func``: ``vmap`` of ``grad``) are clipped
    to ``clip_norm`` with Opacus's factor ``min(1, C/(‖g_n‖ + 1e-6))``, summed, given Gaussian noise of
    std ``noise_multiplier·clip_norm``, and divided by the batch size N::

        ĝ = (Σ_n clip(g_n) + N(0, (σC)² I)) / N

    Args:
        grads: the clean gradient of the batch (mean loss over ``x``), flat or list; ``δ = ĝ − grads``.
        model: the model the gradient belongs to (used as given; eval mode for BatchNorm models).
        x: ``(N, ...)`` the client's batch; y: ``(N,)`` its labels.
        clip_norm: C > 0, the per-sample L2 clipping bound.
        noise_multiplier: σ ≥ 0 (noise std relative to C).
        loss_fn: per-sample loss ``loss_fn(logits (1, K), y (1,))``; default cross-entropy.
        generator: for the noise draw.

    Raises:
        ValueError: bad ``clip_norm`` / ``noise_multiplier``, ``grads`` not of the model's size, or
        ``x`` / ``y`` without a matching batch dimension.
    """
    clip_norm = frontdoor.number(clip_norm, "clip_norm", positive=True)
    noise_multiplier = frontdoor.number(noise_multiplier, "noise_multiplier", minimum=0)
    named = frontdoor.model_parameters(model)
    clean, layout = _as_flat(grads, frontdoor.layout_of(named))
    frontdoor.float_tensor(x, "x", min_dims=2, like=named[0][1])
    frontdoor.require_functional(model, "dp (per-sample clipping)")
    if loss_fn is None:
        y = frontdoor.labels(y, "y", x.shape[0], frontdoor.output_classes(model, x, "x"))
    elif not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable or None, got {type(loss_fn).__name__}")
    elif not isinstance(y, torch.Tensor) or y.shape[:1] != x.shape[:1]:
        raise ValueError(f"y must be a tensor with N={x.shape[0]} entries along dim 0")
    params = {n: p.detach() for n, p in named}
    param_layout = frontdoor.layout_of(named)
    loss_fn = F.cross_entropy if loss_fn is None else loss_fn

    def sample_grad(x_n, y_n):
        g = frontdoor.parameter_gradient(model, loss_fn, params, x_n.unsqueeze(0), y_n.unsqueeze(0))
        return param_layout.flatten([g[n] for n in params])

    per_sample = vmap(sample_grad)(x.detach(), y)  # (N, P)
    factor = (clip_norm / (per_sample.norm(dim=1) + 1e-6)).clamp(max=1.0)
    total = (per_sample * factor.unsqueeze(1)).sum(dim=0).to(clean.dtype)
    noisy = total + noise_multiplier * clip_norm * _noise(torch.randn, generator, total)
    return _result(clean, noisy / x.shape[0], layout)


def prune(grads, ratio: float, *, generator: torch.Generator | None = None) -> DefenseResult:
    """Global magnitude pruning: the ``round(ratio·P)`` smallest-magnitude entries become 0.

    Exact count through ``topk`` (works beyond the 2^24 ≈ 16.7 M elements where the paper's
    ``torch.quantile`` threshold fails). ``generator`` is accepted for a uniform signature.

    Raises: ValueError unless ``0 <= ratio <= 1``.
    """
    ratio = frontdoor.number(ratio, "ratio", minimum=0, maximum=1)
    clean, layout = _as_flat(grads)
    return _result(clean, _keep_largest(clean, clean.numel() - round(ratio * clean.numel())), layout)


def topk(grads, ratio: float, *, generator: torch.Generator | None = None) -> DefenseResult:
    """Top-k sparsification: keep the ``round(ratio·P)`` largest-magnitude entries, zero the rest.

    ``topk(g, r)`` equals ``prune(g, 1 − r)``. Raises: ValueError unless ``0 <= ratio <= 1``.
    """
    ratio = frontdoor.number(ratio, "ratio", minimum=0, maximum=1)
    clean, layout = _as_flat(grads)
    return _result(clean, _keep_largest(clean, round(ratio * clean.numel())), layout)


def quantize(grads, bits: int, *, generator: torch.Generator | None = None) -> DefenseResult:
    """Unbiased stochastic quantisation onto ``L = 2^bits`` uniform levels over ``[−m, m]``, ``m = max|g|``.

    With step ``Δ = 2m/(L − 1)`` each entry rounds to the level below or above it with probabilities
    that make ``E[ĝ] = g`` (stochastic rounding); ``|ĝ − g| < Δ``.

    Raises: ValueError unless ``bits`` is an int in [1, 32].
    """
    bits = frontdoor.integer(bits, "bits", minimum=1, maximum=32)
    clean, layout = _as_flat(grads)
    m = clean.abs().max()
    if m == 0:
        return _result(clean, clean.clone(), layout)
    step = 2 * m / (2**bits - 1)
    levels = torch.floor((clean + m) / step + _noise(torch.rand, generator, clean)).clamp(0, 2**bits - 1)
    return _result(clean, levels * step - m, layout)


def sign(grads, *, generator: torch.Generator | None = None) -> DefenseResult:
    """signSGD keeping the norm: ``ĝ = sign(g) · ‖g‖ / √(#nonzero)`` (so ``‖ĝ‖ = ‖g‖``; zeros stay 0)."""
    clean, layout = _as_flat(grads)
    signs = clean.sign()
    nonzero = signs.abs().sum()
    scale = clean.norm() / nonzero.sqrt() if nonzero > 0 else clean.new_zeros(())
    return _result(clean, signs * scale, layout)


def eigen_direction(
    grads,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    index: int = 0,
    scale: float = 1.0,
    *,
    influence: InversionInfluence | None = None,
    generator: torch.Generator | None = None,
) -> DefenseResult:
    """``δ = scale · u_index``: a perturbation along the parameter-space direction of an I²F eigenpair.

    ``u_i = J v_i / ‖J v_i‖`` for the i-th eigenvector ``v_i`` of ``JᵀJ`` (descending eigenvalues;
    :meth:`InversionInfluence.top_eigenpairs`), the paper's eigen-direction experiment (there
    ``δ = 5·v_i``). Its I²F is ``scale·√λ_i/(λ_i + ε)``: large for small ``λ_i``.

    Args:
        grads: clean gradient (flat or list) of ``model`` on ``(x, y)``.
        model, x, y: define ``J`` (the whole batch, not per sample).
        index: which eigenpair, 0 = largest eigenvalue.
        scale: ``‖δ‖``.
        influence: an existing :class:`InversionInfluence` for ``(model, x, y)`` to reuse (and its
            cached eigenpairs); built when None.
        generator: Lanczos start vector (when ``influence`` is built here).

    Raises:
        ValueError: ``index < 0``, ``scale < 0``, or ``grads`` not matching the model's size.
    """
    index = frontdoor.integer(index, "index", minimum=0)
    scale = frontdoor.number(scale, "scale", minimum=0)
    if influence is not None and not isinstance(influence, InversionInfluence):
        raise TypeError(f"influence must be an InversionInfluence or None, got {type(influence).__name__}")
    inf = influence if influence is not None else InversionInfluence(model, x, y, generator=generator)
    if inf.per_sample:
        raise ValueError("influence must be a whole-batch InversionInfluence (per_sample=False)")
    clean, layout = _as_flat(grads, inf.jacobian.layout)
    direction = inf.top_eigenpairs(index + 1).param_directions[index].to(clean.dtype)
    return _result(clean, clean + scale * direction, layout)


Defense = Callable[..., DefenseResult]


def compose(grads, *steps: Defense, generator: torch.Generator | None = None) -> DefenseResult:
    """Apply ``steps`` in order, each ``step(grads, generator=generator) -> DefenseResult``.

    Bind each step's parameters first, e.g.
    ``compose(g, functools.partial(prune, ratio=0.9), functools.partial(gaussian, var=1e-4))``.
    All steps draw from the same ``generator`` in order. ``δ`` is final − clean.

    Raises: ValueError without steps; TypeError for a step that is not callable.
    """
    if not steps:
        raise ValueError("compose needs at least one defense step")
    clean, layout = _as_flat(grads)
    current = clean
    for i, step in enumerate(steps):
        if not callable(step):
            raise TypeError(f"steps[{i}] must be callable, got {type(step).__name__}")
        current = step(current, generator=generator).grads
    return _result(clean, current, layout)


def none(grads, *, generator: torch.Generator | None = None) -> DefenseResult:
    """No defense: ``δ = 0`` (a baseline for comparisons)."""
    clean, layout = _as_flat(grads)
    return _result(clean, clean.clone(), layout)


@dataclass(frozen=True)
class DefenseSpec:
    """How :func:`apply_defense` calls a defense: its function, the name of its strength argument
    (None: the defense has none) and whether it needs the model and batch."""

    fn: Defense
    strength: str | None
    needs_batch: bool = False


DEFENSES = {
    "none": DefenseSpec(none, None),
    "gaussian": DefenseSpec(gaussian, "var"),
    "laplace": DefenseSpec(laplace, "scale"),
    "dp": DefenseSpec(dp, "noise_multiplier", needs_batch=True),
    "prune": DefenseSpec(prune, "ratio"),
    "topk": DefenseSpec(topk, "ratio"),
    "quantize": DefenseSpec(quantize, "bits"),
    "sign": DefenseSpec(sign, None),
    "eigen": DefenseSpec(eigen_direction, "scale", needs_batch=True),
}
"""Defense name → :class:`DefenseSpec` (the ``--defense`` choices of the command line)."""


def apply_defense(
    name: str,
    grads,
    strength: float | None = None,
    *,
    model: nn.Module | None = None,
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    **options,
) -> DefenseResult:
    """Apply the defense ``name`` of :data:`DEFENSES` with one strength value.

    Args:
        name: a key of :data:`DEFENSES`.
        grads: the clean gradient (flat or list).
        strength: the defense's main parameter (gaussian: var, laplace: scale, dp: noise multiplier,
            prune / topk: ratio, quantize: bits (rounded to int), eigen: scale); ignored by
            ``none`` and ``sign``.
        model, x, y: the model and batch, for ``dp`` and ``eigen``.
        generator: random draws.
        **options: further keyword arguments of the defense (``clip_norm`` for dp, ``index`` for eigen).

    Raises:
        ValueError: unknown ``name`` (listing the known ones), a missing strength, or a defense
        that needs ``model``, ``x``, ``y`` called without them.
    """
    frontdoor.choice(name, "defense", sorted(DEFENSES))
    spec = DEFENSES[name]
    kwargs = dict(options, generator=generator)
    if spec.strength is not None:
        if strength is None:
            raise ValueError(f"defense {name!r} needs a strength ({spec.strength})")
        strength = frontdoor.number(strength, "strength")
        kwargs[spec.strength] = round(strength) if name == "quantize" else strength
    if spec.needs_batch:
        if model is None or x is None or y is None:
            raise ValueError(f"defense {name!r} needs the model and the batch: pass model=, x= and y=")
        return spec.fn(grads, model, x, y, **kwargs)
    return spec.fn(grads, **kwargs)
