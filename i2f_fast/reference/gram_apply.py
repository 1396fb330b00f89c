"""Reference kernel of the Gram contractions of the engine's linear layers (ENGINE.md).

A linear layer ``z = a Wᵀ + b`` contributes to ``J v`` the parameter-space block
``U = Σ_n ė_n a_nᵀ + e_n ȧ_nᵀ`` (and ``u_b = Σ_n ė_n``), a sum of rank-one terms over the rows
``n`` of the layer (samples, or samples × tokens). ``JᵀJ v`` only needs ``U`` contracted with the
cached primal rows, ``U a_m + u_b`` and ``Uᵀ e_m``, which are small Gram matrices:

    (U a_m + u_b) = Σ_n ė_n (a_n·a_m + [bias]) + e_n (ȧ_n·a_m)
    (Uᵀ e_m)      = Σ_n a_n (ė_n·e_m) + ȧ_n (e_n·e_m)

so ``U`` (``out × in`` numbers) is never formed. Rows are split into G independent groups of S rows
(G = 1 for one batched Jacobian; G = N in per-sample mode, where each sample has its own U).
"""
from __future__ import annotations

import torch


def gram_apply_ref(
    a: torch.Tensor, e: torch.Tensor, adot: torch.Tensor, edot: torch.Tensor, bias: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U a + u_b, Uᵀ e)`` for ``U = Σ_n ė_n a_nᵀ + e_n ȧ_nᵀ`` within each group, without forming U.

    Args:
        a: ``(G, S, I)`` cached layer inputs (rows).
        e: ``(G, S, O)`` cached loss adjoints of the layer outputs ``∂L/∂z``.
        adot: ``(k, G, S, I)`` forward tangents of the inputs.
        edot: ``(k, G, S, O)`` backward tangents of the output adjoints.
        bias: the layer has a bias (adds ``u_b = Σ_n ė_n`` to the first output).

    Returns:
        ``(ua, ute)``: ``(k, G, S, O)`` and ``(k, G, S, I)`` in ``a``'s dtype.

    Raises:
        ValueError: shapes that do not match.
    """
    if a.dim() != 3 or e.dim() != 3 or a.shape[:2] != e.shape[:2]:
        raise ValueError(f"a must be (G, S, I) and e (G, S, O), got {tuple(a.shape)} and {tuple(e.shape)}")
    if adot.dim() != 4 or adot.shape[1:] != a.shape or edot.shape != adot.shape[:1] + e.shape:
        raise ValueError(
            f"adot must be (k, *{tuple(a.shape)}) and edot (k, *{tuple(e.shape)}), "
            f"got {tuple(adot.shape)} and {tuple(edot.shape)}"
        )
    gaa = a @ a.transpose(-1, -2)  # (G, S, S), symmetric
    if bias:
        gaa = gaa + 1
    gee = e @ e.transpose(-1, -2)  # (G, S, S), symmetric
    g_adot_a = adot @ a.transpose(-1, -2)  # (k, G, S, S): [n, m] = ȧ_n · a_m
    g_edot_e = edot @ e.transpose(-1, -2)  # (k, G, S, S): [n, m] = ė_n · e_m
    ua = gaa @ edot + g_adot_a.transpose(-1, -2) @ e
    ute = g_edot_e.transpose(-1, -2) @ a + gee @ adot
    return ua, ute
