"""Reference kernel of the activation rules of the structured JᵀJ engine (ENGINE.md).

Every activation node a = σ(z) of the engine needs, per product, elementwise combinations of its
cached pre-activation ``z`` with tangents and adjoints:

* forward tangent             ``ȧ = σ'(z) ⊙ ż``                        (``s``/``da`` absent)
* backward tangent (J v)      ``ė = σ'(z) ⊙ δȧ + σ''(z) ⊙ ż ⊙ δa``
* downward adjoint (Jᵀ u)     ``z̄ = σ'(z) ⊙ ā + σ''(z) ⊙ δa ⊙ ē``

so one op ``σ'(z) ⊙ t + σ''(z) ⊙ da ⊙ s`` covers all three. ``z`` and ``da`` (the primal adjoint
``∂L/∂a``) are shared by the ``k`` tangents; ``t`` and ``s`` carry them as leading dims.
"""
from __future__ import annotations

import math

import torch

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "gelu_tanh", "silu", "softplus")
"""Activations with hand-written rules; ``alpha`` is leaky ReLU's negative slope, ELU's alpha or
softplus's beta; ``threshold`` is softplus's threshold (PyTorch's defaults: 0.01, 1.0, 1, 20)."""

_GELU_TANH_C = math.sqrt(2.0 / math.pi)
_GELU_TANH_K = 0.044715


def activation_derivatives(
    z: torch.Tensor, act: str, alpha: float = 0.0, threshold: float = 20.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(σ'(z), σ''(z))`` of an activation, elementwise, matching PyTorch's autograd formulas.

    Piecewise-linear activations (ReLU, leaky ReLU, softplus above its threshold, ELU for z > 0)
    have ``σ'' = 0`` there; at the kink they take autograd's one-sided value.

    Raises:
        ValueError: ``act`` not in :data:`ACTIVATIONS`.
    """
    if act == "sigmoid":
        s = torch.sigmoid(z)
        d1 = s * (1 - s)
        return d1, d1 * (1 - 2 * s)
    if act == "tanh":
        t = torch.tanh(z)
        d1 = 1 - t * t
        return d1, -2 * t * d1
    if act == "relu":
        return (z > 0).to(z.dtype), torch.zeros_like(z)
    if act == "leaky_relu":
        return torch.where(z > 0, 1.0, torch.full_like(z, alpha)), torch.zeros_like(z)
    if act == "elu":
        neg = alpha * torch.exp(torch.clamp(z, max=0))
        return torch.where(z > 0, 1.0, neg), torch.where(z < 0, neg, 0.0)  # autograd: σ''(0) = 0
    if act == "gelu":
        pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2.0)))
        return cdf + z * pdf, pdf * (2 - z * z)
    if act == "gelu_tanh":
        u = _GELU_TANH_C * (z + _GELU_TANH_K * z ** 3)
        du = _GELU_TANH_C * (1 + 3 * _GELU_TANH_K * z * z)
        ddu = _GELU_TANH_C * 6 * _GELU_TANH_K * z
        t = torch.tanh(u)
        sech2 = 1 - t * t
        return 0.5 * (1 + t) + 0.5 * z * sech2 * du, sech2 * (du - z * t * du * du + 0.5 * z * ddu)
    if act == "silu":
        s = torch.sigmoid(z)
        return s * (1 + z * (1 - s)), s * (1 - s) * (2 + z * (1 - 2 * s))
    if act == "softplus":
        bz = alpha * z
        s = torch.sigmoid(bz)
        # autograd's softplus_backward is linear for βz > threshold, its double backward for
        # βz >= threshold: at βz == threshold exactly, σ' = sigmoid but σ'' = 0.
        return torch.where(bz > threshold, 1.0, s), torch.where(bz >= threshold, 0.0, alpha * s * (1 - s))
    raise ValueError(f"act must be one of {ACTIVATIONS}, got {act!r}")


def dual_act_ref(
    z: torch.Tensor,
    t: torch.Tensor,
    s: torch.Tensor | None = None,
    da: torch.Tensor | None = None,
    act: str = "tanh",
    alpha: float = 0.0,
    threshold: float = 20.0,
) -> torch.Tensor:
    """``σ'(z) ⊙ t + σ''(z) ⊙ da ⊙ s`` (the second term only when both ``s`` and ``da`` are given).

    Args:
        z: ``(*M)`` cached pre-activation.
        t: ``(*L, *M)`` tangent or adjoint, any number of leading dims ``L`` (e.g. ``k``).
        s: ``(*L, *M)`` second tangent/adjoint (``ż`` or ``ē``), or None.
        da: ``(*M)`` primal adjoint ``∂L/∂a`` of the activation's output, or None.
        act, alpha, threshold: the activation (see :data:`ACTIVATIONS`).

    Returns:
        ``(*L, *M)`` in ``t``'s dtype.

    Raises:
        ValueError: unknown ``act``; shapes that do not broadcast as described.
    """
    if t.shape[t.dim() - z.dim():] != z.shape:
        raise ValueError(f"t must end with z's shape {tuple(z.shape)}, got {tuple(t.shape)}")
    if (s is None) != (da is None):
        raise ValueError("s and da must be given together (or neither)")
    if s is not None and (s.shape != t.shape or da.shape != z.shape):
        raise ValueError(f"s must have t's shape {tuple(t.shape)} and da z's shape {tuple(z.shape)}")
    d1, d2 = activation_derivatives(z, act, alpha, threshold)
    out = d1 * t
    if s is not None:
        out = out + (d2 * da) * s
    return out
