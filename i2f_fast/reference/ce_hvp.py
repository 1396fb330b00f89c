"""Reference kernel of the softmax-cross-entropy Hessian of the engine (ENGINE.md).

For logits ``z`` of N samples with ``p = softmax(z)``, the Hessian of ``scale · Σ_n CE(z_n, y_n)``
with respect to ``z`` is block diagonal, one ``C × C`` block per sample, and acts on a tangent
``u`` as ``H u = scale · (p ⊙ u − p (p · u))`` row by row (no dependence on the labels). The engine
uses it twice per product: ``ė_last = H ż_last`` and ``z̄_last = H ē_last``.
"""
from __future__ import annotations

import torch


def ce_hvp_ref(p: torch.Tensor, u: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale · (p ⊙ u − p (p · u))`` per row.

    Args:
        p: ``(N, C)`` softmax probabilities of the cached logits.
        u: ``(*L, N, C)`` tangents, any number of leading dims ``L`` (e.g. ``k``).
        scale: ``1/N`` for a batch-mean loss, ``1`` per sample.

    Returns:
        ``(*L, N, C)`` in ``u``'s dtype.

    Raises:
        ValueError: ``p`` not 2-D or ``u`` not ending with ``p``'s shape.
    """
    if p.dim() != 2 or u.shape[u.dim() - 2:] != p.shape:
        raise ValueError(f"p must be (N, C) and u (*L, N, C), got {tuple(p.shape)} and {tuple(u.shape)}")
    pu = p * u
    return scale * (pu - p * pu.sum(dim=-1, keepdim=True))
