"""Faithful re-implementations (our own code) of the paper's published I²F algorithms.

Written from the description in /work/shared/PAPER.md §1.7–1.8 and §4, keeping the published
algorithms' costs: every product re-runs the forward pass and the first-order backward
(reverse-over-reverse, no caching), the I²F solver is fixed-step gradient descent from a random
start with a third, logging-only product per iteration and a host sync per parameter tensor, and
λ_max is ARPACK ``eigsh`` on the θ-space operator with numpy round-trips.

Notation as in PAPER.md: the code's ``JT_times_b`` is ∇_θ⟨∇_x L, b⟩ (θ-space), and
``jvp(loss, [img], params, d)`` is ∇_x⟨∇_θ L, d⟩ (x-space).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import LinearOperator, eigsh


def jvp(outputs, inputs1, inputs2, v):
    """The paper's ``utils.jvp``: ∂/∂inputs1 ⟨∇_{inputs2} outputs, v⟩ (reverse over reverse)."""
    g = torch.autograd.grad(outputs, inputs2, create_graph=True)
    s = sum((gi * vi).sum() for gi, vi in zip(g, v))
    return torch.autograd.grad(s, inputs1)


def _loss(model, img, label):
    return F.cross_entropy(model(img), label)


def compute_exact_bound(model, img, label, noise, regu, *, lr=0.01, max_iter=2000, tol=9e-5, generator=None):
    """The paper's ``compute_exact_bound``: GD on f(b) = ½‖Jᵀb − δ‖² + (ε/2)‖b‖² in x-space.

    Args:
        model: in eval mode; its parameters (all of them, as the original) are θ.
        img: (1, C, H, W) input; its ``requires_grad`` is set (the original's side effect).
        label: (1,) int64.
        noise: list of parameter-shaped tensors δ.
        regu: ε.
        lr, max_iter, tol: the published fixed step, iteration cap and ‖grad‖ threshold.
        generator: for the random start b₀ ~ N(0, I) (the original uses the global RNG).

    Returns:
        ``(b, iterations)``; callers take ``torch.norm(b)``.
    """
    params = list(model.parameters())
    img.requires_grad = True
    b = torch.randn(img.shape, generator=generator, dtype=img.dtype, device=img.device)
    it = 0
    for it in range(1, max_iter + 1):
        image = copy.deepcopy(img)  # the original copies the image every iteration
        # J'b = ∇_θ⟨∇_x L, b⟩ with a fresh forward
        jt_times_b = jvp(_loss(model, image, label), params, [image], [b])
        delta = [n - j for n, j in zip(noise, jt_times_b)]
        # ∇_b f = −∇_x⟨∇_θ L, δ − J'b⟩ + ε b, again with a fresh forward
        grad = -jvp(_loss(model, image, label), [image], params, delta)[0] + regu * b
        b = b - lr * grad
        # logging: a third forward + product recomputes ‖J'b − δ‖², one .item() per tensor
        jt_times_b = jvp(_loss(model, image, label), params, [image], [b])
        log_loss = sum(((j - n) ** 2).sum().item() for j, n in zip(jt_times_b, noise))
        if np.isnan(log_loss):
            break
        if torch.norm(grad) < tol:
            break
    return b.detach(), it


def max_eigen_val(model, img, label):
    """The paper's ``max_eigen_val``: ``eigsh`` (k=1, defaults) on the θ-space operator J'J'ᵀ.

    Each matvec round-trips numpy → torch → unflatten → ``two_jvp`` (J'ᵀ to x-space, then J'
    back to θ-space, each through a fresh forward + double backward) → flatten (a ``torch.cat``
    loop) → numpy. ``LinearOperator`` gets no dtype, so scipy probes ``mv`` once with float64
    zeros. Returns ``(eigenvalues of shape (1,), number of mv calls)``.
    """
    params = list(model.parameters())
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    num_params = sum(sizes)
    img = img.detach().clone().requires_grad_(True)
    calls = [0]

    def two_jvp(v):
        jvp1 = jvp(_loss(model, img, label), [img], params, v)  # x-space
        return jvp(_loss(model, img, label), params, [img], jvp1)  # θ-space

    def mv(vec):
        calls[0] += 1
        v = torch.from_numpy(np.asarray(vec).reshape(-1)).to(img.device)  # float64 on the probe
        v = v.to(params[0].dtype)
        pieces, start = [], 0
        for shape, size in zip(shapes, sizes):
            pieces.append(v[start : start + size].view(shape))
            start += size
        out = two_jvp(pieces)
        flat = torch.tensor([], dtype=out[0].dtype, device=out[0].device)
        for o in out:
            flat = torch.cat([flat, o.reshape(-1)])
        return flat.detach().cpu().numpy()

    op = LinearOperator((num_params, num_params), matvec=mv)
    vals = eigsh(op, k=1)[0]
    return vals, calls[0]
