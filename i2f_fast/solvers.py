"""Batched Krylov solvers on matrix-free operators: CG, CGLS, Lanczos, power iteration.

This module knows nothing about models: an operator is a function on tensors. Every solver is
batched over a leading *row* dimension (independent systems solved together: K perturbations,
N per-sample systems, ...), freezes rows as they converge, and reads scalars back to the host only
every ``check_every`` iterations, so the per-iteration work has no host synchronisation. The
default is every 10 iterations on accelerators and every iteration on the CPU, where reading a
flag costs nothing and a solve that converges in 4 iterations should not run 10.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch

from . import cuda_graphs, frontdoor
from .ops import cg_step

Matvec = Callable[[torch.Tensor], torch.Tensor]


def default_tol(dtype: torch.dtype) -> float:
    """Default relative residual tolerance: 1e-10 in float64, 1e-5 in float32/lower precision."""
    return 1e-10 if dtype == torch.float64 else 1e-5


@dataclass
class CGResult:
    """Result of a batched CG / CGLS solve with B rows.

    Attributes:
        x: solution, shaped like the right-hand side ``b`` (``(B, ...)``) for CG, like ``Aᵀb`` for CGLS.
        iterations: ``(B,)`` int64, iterations each row took.
        residual: ``(B,)`` true relative residual recomputed at exit: ``‖b − (A+εI)x‖/‖b‖``
            (CGLS: of the normal equations, ``‖Aᵀ(b − Ax) − εx‖/‖Aᵀb‖``); 0 for a zero right-hand side.
        converged: ``(B,)`` bool, ``residual <= tol``.
        breakdown: ``(B,)`` bool, rows frozen because ``pᵀ(A+εI)p <= 0`` or non-finite
            (the operator is not positive definite on that row, or produced NaN/Inf).
    """

    x: torch.Tensor
    iterations: torch.Tensor
    residual: torch.Tensor
    converged: torch.Tensor
    breakdown: torch.Tensor


def default_check_every(device: torch.device) -> int:
    """Iterations between host reads: 1 on the CPU (no device to wait for), 10 on accelerators."""
    return 1 if torch.device(device).type == "cpu" else 10


def _callable(fn, argument: str):
    if not callable(fn):
        raise TypeError(f"{argument} must be a callable (B, ...) -> (B, ...), got {type(fn).__name__}")


def _check_solver_args(b, eps, tol, max_iter, check_every) -> torch.Tensor:
    """Validates the common arguments; returns the damping as a ``(B, 1)`` column, one per row."""
    if not isinstance(b, torch.Tensor) or b.dim() < 2:
        raise ValueError("b must be a tensor with a leading row dimension: shape (B, ...)")
    if not b.is_floating_point():
        raise TypeError(f"b must be a floating-point tensor, got {b.dtype}")
    if not torch.isfinite(b).all():
        raise ValueError("b contains NaN or Inf")
    if isinstance(eps, torch.Tensor):
        if eps.numel() not in (1, b.shape[0]) or not torch.isfinite(eps).all() or (eps < 0).any():
            raise ValueError(f"eps must hold finite numbers >= 0, one or one per row (B={b.shape[0]}), got {eps}")
    else:
        frontdoor.number(eps, "eps", minimum=0)
    if tol is not None:
        frontdoor.number(tol, "tol", positive=True)
    if max_iter is not None:
        frontdoor.integer(max_iter, "max_iter", minimum=1)
    if check_every is not None:
        frontdoor.integer(check_every, "check_every", minimum=1)
    return torch.as_tensor(eps, dtype=b.dtype, device=b.device).reshape(-1, 1).expand(b.shape[0], 1)


def cg(
    matvec: Matvec,
    b: torch.Tensor,
    eps: float = 0.0,
    *,
    tol: float | None = None,
    max_iter: int | None = None,
    x0: torch.Tensor | None = None,
    check_every: int | None = None,
    cuda_graph: bool | None = None,
) -> CGResult:
    """Solve ``(A + εI) x = b`` for B independent right-hand sides with conjugate gradients.

    Args:
        matvec: ``(B, ...) -> (B, ...)`` applies the symmetric positive semi-definite ``A`` to every
            row (rows must not interact).
        b: ``(B, ...)`` right-hand sides, float32 or float64.
        eps: Tikhonov damping ``ε >= 0`` added to ``A``: one number or a ``(B,)`` tensor, one per row.
        tol: relative residual tolerance per row (default: ``default_tol(b.dtype)``).
        max_iter: iteration cap (default ``min(10·D, 1000)``, ``D`` = elements per row).
        x0: optional ``(B, ...)`` starting point (default zero, the unbiased start).
        check_every: iterations between host reads of the convergence mask
            (default :func:`default_check_every`).
        cuda_graph: capture one iteration (matvec + fused step) as a CUDA graph and replay it
            between host checks (None: on CUDA tensors; True on other devices is a ValueError).
            A matvec that cannot be captured (e.g. it reads the host) runs eagerly instead, with
            the reason logged on the ``i2f_fast`` logger; the results are the same either way.

    Each iteration is one ``matvec`` plus one fused ``i2f_fast.ops.cg_step``; rows freeze as soon
    as their recursive residual meets ``tol/2`` (the margin lets the true residual meet ``tol``).
    When every row claims convergence the true residual ``b − (A+εI)x`` is recomputed (one extra
    ``matvec``); rows whose true residual misses ``tol`` restart from it (residual replacement),
    which keeps float32 solves honest.

    Returns:
        :class:`CGResult`.
    """
    _callable(matvec, "matvec")
    damping = _check_solver_args(b, eps, tol, max_iter, check_every)
    damped = bool((damping > 0).any())
    graphed = cuda_graphs.wanted(b.device, cuda_graph)
    shape, rows = b.shape, b.shape[0]
    b2 = b.reshape(rows, -1)
    dim = b2.shape[1]
    tol = default_tol(b.dtype) if tol is None else tol
    max_iter = min(10 * dim, 1000) if max_iter is None else max_iter
    check_every = default_check_every(b.device) if check_every is None else check_every

    def apply(v):
        Av = matvec(v.reshape(shape)).reshape(rows, dim)
        return torch.addcmul(Av, damping, v) if damped else Av

    if x0 is None:
        x = torch.zeros_like(b2)
        r = b2.clone()
    else:
        if x0.shape != shape:
            raise ValueError(f"x0 has shape {tuple(x0.shape)}, expected {tuple(shape)}")
        x = x0.reshape(rows, dim).to(b.dtype).clone()
        r = b2 - apply(x)
    p = r.clone()
    rr = (r * r).sum(dim=1)
    b_norm = b2.norm(dim=1)
    threshold = (tol * b_norm) ** 2
    recursive_threshold = threshold / 4
    active = rr > recursive_threshold
    iterations = torch.zeros(rows, dtype=torch.int64, device=b.device)
    breakdown = torch.zeros(rows, dtype=torch.bool, device=b.device)
    true_residual = None

    def iterate(rr, active):
        """One iteration of the active rows; x, r, p and ``iterations`` are updated in place."""
        Ap = apply(p)
        rr, stepped = cg_step(x, r, p, Ap, rr, active)
        iterations.add_(stepped)
        return rr, stepped & (rr > recursive_threshold)

    step = _graphed_cg_iteration(iterate, rr, active, b.device) if graphed else iterate

    # Per iteration: the matvec, cg_step and three small ops (bench_cg_step counts them). A row
    # leaves `active` by converging (rr drops to the threshold) or by breaking down (cg_step does
    # not step it, so its rr stays above): breakdowns are read off at the checks, not per step.
    for it in range(1, max_iter + 1):
        rr, active = step(rr, active)
        if it % check_every and it != max_iter:
            continue
        breakdown |= ~active & (rr > recursive_threshold)
        if bool(active.any()) and it != max_iter:
            continue
        # Every row claims convergence (or the cap is reached): verify with the true residual.
        true_residual = b2 - apply(x)
        rr_true = (true_residual * true_residual).sum(dim=1)
        restart = (rr_true > threshold) & ~breakdown
        if it == max_iter or not bool(restart.any()):
            break
        r.copy_(torch.where(restart.unsqueeze(1), true_residual, r))  # in place: a graph replays on r, p
        p.copy_(torch.where(restart.unsqueeze(1), true_residual, p))
        rr = torch.where(restart, rr_true, rr)
        active = restart
        true_residual = None

    if true_residual is None:
        true_residual = b2 - apply(x)
    residual = true_residual.norm(dim=1) / torch.where(b_norm > 0, b_norm, 1)
    return CGResult(
        x=x.reshape(shape),
        iterations=iterations,
        residual=residual,
        converged=residual <= tol,
        breakdown=breakdown,
    )


def _graphed_cg_iteration(iterate, rr, active, device):
    """``step(rr, active)`` running ``iterate`` as a replayed CUDA graph on fixed ``rr``/``active``
    tensors (:mod:`i2f_fast.cuda_graphs`); values rebound by the host (a restart) are copied in."""
    static_rr, static_active = rr.clone(), active.clone()

    def body():
        new_rr, new_active = iterate(static_rr, static_active)
        static_rr.copy_(new_rr)
        static_active.copy_(new_active)

    graphed = cuda_graphs.GraphedStep(body, "CG iteration", device)

    def step(rr, active):
        if rr is not static_rr:
            static_rr.copy_(rr)
        if active is not static_active:
            static_active.copy_(active)
        graphed()
        return static_rr, static_active

    return step


def cgls(
    apply_A: Matvec,
    apply_AT: Matvec,
    b: torch.Tensor,
    eps: float = 0.0,
    *,
    tol: float | None = None,
    max_iter: int | None = None,
    check_every: int | None = None,
) -> CGResult:
    """Solve ``min_x ‖A x − b‖² + ε‖x‖²`` row by row without forming ``AᵀA`` (CGLS).

    Mathematically the same iterates as CG on ``(AᵀA + εI) x = Aᵀb``, but the residual is updated
    in the range of ``A``, which loses less accuracy in float32 when ``AᵀA`` is ill-conditioned.

    Args:
        apply_A: ``(B, *in_shape) -> (B, *out_shape)``.
        apply_AT: ``(B, *out_shape) -> (B, *in_shape)``, the adjoint of ``apply_A``.
        b: ``(B, *out_shape)`` right-hand sides.
        eps, tol, max_iter, check_every: as in :func:`cg`; ``tol`` is relative to ``‖Aᵀb‖``.

    Returns:
        :class:`CGResult` with ``x`` shaped ``(B, *in_shape)``.
    """
    _callable(apply_A, "apply_A")
    _callable(apply_AT, "apply_AT")
    damping = _check_solver_args(b, eps, tol, max_iter, check_every).reshape(-1)
    rows = b.shape[0]
    tol = default_tol(b.dtype) if tol is None else tol

    def dot(u, v):
        return (u * v).reshape(rows, -1).sum(dim=1)

    def expand(s, like):
        return s.reshape((rows,) + (1,) * (like.dim() - 1))

    check_every = default_check_every(b.device) if check_every is None else check_every
    r = b.clone()
    s = apply_AT(r)
    max_iter = min(10 * s[0].numel(), 1000) if max_iter is None else max_iter
    x = torch.zeros_like(s)
    p = s.clone()
    gamma = dot(s, s)
    atb_norm = gamma.sqrt()
    threshold = (tol * atb_norm) ** 2 / 4  # the recursive residual meets tol/2, as in cg
    active = gamma > threshold
    iterations = torch.zeros(rows, dtype=torch.int64, device=b.device)
    breakdown = torch.zeros(rows, dtype=torch.bool, device=b.device)

    for it in range(1, max_iter + 1):
        q = apply_A(p)
        curvature = dot(q, q) + damping * dot(p, p)
        step = active & torch.isfinite(curvature) & (curvature > 0)
        breakdown |= active & ~step
        alpha = torch.where(step, gamma / torch.where(step, curvature, 1), 0)
        x = torch.where(expand(step, x), x + expand(alpha, p) * p, x)
        r = torch.where(expand(step, r), r - expand(alpha, q) * q, r)
        s = apply_AT(r) - expand(damping, x) * x
        gamma_new = torch.where(step, dot(s, s), gamma)
        beta = torch.where(step & (gamma > 0), gamma_new / torch.where(gamma > 0, gamma, 1), 0)
        p = torch.where(expand(step, p), s + expand(beta, p) * p, p)
        gamma = gamma_new
        iterations += step
        active = step & (gamma > threshold)
        if (it % check_every == 0 or it == max_iter) and not bool(active.any()):
            break

    normal_residual = apply_AT(b - apply_A(x)) - expand(damping, x) * x
    residual = dot(normal_residual, normal_residual).sqrt() / torch.where(atb_norm > 0, atb_norm, 1)
    return CGResult(
        x=x, iterations=iterations, residual=residual, converged=residual <= tol, breakdown=breakdown
    )


@dataclass
class EigenResult:
    """Top eigenpairs of B symmetric operators.

    Attributes:
        eigenvalues: ``(B, k)`` in descending order.
        eigenvectors: ``(B, k, D)`` orthonormal Ritz vectors.
        iterations: Krylov dimension / power iterations used.
        residual: ``(B, k)`` Ritz residual ``‖A y − θ y‖`` relative to ``|θ_max|``.
        converged: ``(B, k)`` bool, ``residual <= tol``.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    iterations: int
    residual: torch.Tensor
    converged: torch.Tensor


def random_on(generator, device, fn, *args, **kwargs):
    """Draw ``fn(*args)`` with ``generator`` on the generator's device, then move it to ``device``."""
    source = generator.device if generator is not None else device
    return fn(*args, generator=generator, device=source, **kwargs).to(device)


def _start_vector(rows, dim, dtype, device, generator):
    v = random_on(generator, device, torch.randn, rows, dim, dtype=dtype)
    return v / v.norm(dim=1, keepdim=True)


def lanczos(
    matvec: Matvec,
    dim: int,
    k: int = 1,
    *,
    rows: int = 1,
    num_iter: int | None = None,
    tol: float | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    check_every: int | None = None,
) -> EigenResult:
    """Top-``k`` eigenpairs of B symmetric operators by Lanczos with full reorthogonalisation.

    Args:
        matvec: ``(B, D) -> (B, D)``, applies each row's symmetric operator to that row.
        dim: ``D``, the operator dimension.
        k: number of eigenpairs (largest algebraic eigenvalues).
        rows: ``B``, number of independent operators.
        num_iter: maximum Krylov dimension (default ``min(D, max(3k, 30) + 30)``).
        tol: stop when every wanted Ritz residual is ``<= tol·|θ_max|`` (default
            ``1e-10`` in float64, ``1e-5`` otherwise).
        dtype, device, generator: of the random start vector.
        check_every: iterations between convergence checks (each reads the host once; default
            :func:`default_check_every`).

    An invariant Krylov subspace (β ≈ 0, e.g. when ``D`` is small) is continued with a fresh
    random vector orthogonal to the basis, so the method also works when ``num_iter == D``.

    Returns:
        :class:`EigenResult`.
    """
    _callable(matvec, "matvec")
    dim = frontdoor.integer(dim, "dim", minimum=1)
    k = frontdoor.integer(k, "k", minimum=1)
    rows = frontdoor.integer(rows, "rows", minimum=1)
    if k > dim:
        raise ValueError(f"k must be in [1, dim={dim}], got {k}")
    tol = default_tol(dtype) if tol is None else tol
    check_every = default_check_every(device) if check_every is None else check_every
    max_iter = min(dim, max(3 * k, 30) + 30) if num_iter is None else min(num_iter, dim)
    if max_iter < k:
        raise ValueError(f"num_iter must be >= k={k}, got {num_iter}")
    basis = torch.zeros(rows, max_iter + 1, dim, dtype=dtype, device=device)
    alphas = torch.zeros(rows, max_iter, dtype=dtype, device=device)
    betas = torch.zeros(rows, max_iter, dtype=dtype, device=device)
    basis[:, 0] = _start_vector(rows, dim, dtype, device, generator)
    tiny = torch.finfo(dtype).eps

    def ritz(m):
        T = torch.diag_embed(alphas[:, :m]) + torch.diag_embed(betas[:, : m - 1], 1) + torch.diag_embed(
            betas[:, : m - 1], -1
        )
        theta, S = torch.linalg.eigh(T)
        theta, S = theta.flip(-1)[:, :k], S.flip(-1)[:, :, :k]
        scale = theta.abs().amax(dim=1, keepdim=True).clamp_min(tiny)
        res = (betas[:, m - 1 : m] * S[:, m - 1, :]).abs() / scale
        return theta, S, res

    m = 0
    for j in range(max_iter):
        q = basis[:, j]
        w = matvec(q)
        alphas[:, j] = (w * q).sum(dim=1)
        Q = basis[:, : j + 1]
        for _ in range(2):  # classical Gram-Schmidt, twice: full reorthogonalisation
            w = w - torch.einsum("bmd,bm->bd", Q, torch.einsum("bmd,bd->bm", Q, w))
        beta = w.norm(dim=1)
        scale = alphas[:, : j + 1].abs().amax(dim=1).clamp_min(tiny)
        invariant = beta <= 100 * tiny * scale
        betas[:, j] = torch.where(invariant, 0, beta)
        fresh = _start_vector(rows, dim, dtype, device, generator)
        for _ in range(2):
            fresh = fresh - torch.einsum("bmd,bm->bd", Q, torch.einsum("bmd,bd->bm", Q, fresh))
        fresh = fresh / fresh.norm(dim=1, keepdim=True).clamp_min(tiny)
        basis[:, j + 1] = torch.where(invariant.unsqueeze(1), fresh, w / beta.clamp_min(tiny).unsqueeze(1))
        m = j + 1
        if m >= k and (m % check_every == 0) and m < max_iter:
            # An invariant subspace gives zero residuals but may hide repeated eigenvalues:
            # only stop once the restart vector has been explored.
            if bool((ritz(m)[2] <= tol).all()) and not bool(invariant.any()):
                break
    theta, S, res = ritz(m)
    vectors = torch.einsum("bmd,bmk->bkd", basis[:, :m], S)
    return EigenResult(eigenvalues=theta, eigenvectors=vectors, iterations=m, residual=res, converged=res <= tol)


def power_iteration(
    matvec: Matvec,
    dim: int,
    *,
    rows: int = 1,
    num_iter: int = 1000,
    tol: float | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    check_every: int | None = None,
) -> EigenResult:
    """Largest-magnitude eigenpair of B symmetric operators by power iteration.

    Stops when every row's residual ``‖A y − θ y‖/|θ|`` is ``<= tol`` (checked every
    ``check_every`` iterations) or after ``num_iter`` iterations. Slower than :func:`lanczos` for
    clustered spectra; offered because the paper's efficiency figure uses it.

    Returns:
        :class:`EigenResult` with ``k = 1``.
    """
    _callable(matvec, "matvec")
    dim = frontdoor.integer(dim, "dim", minimum=1)
    rows = frontdoor.integer(rows, "rows", minimum=1)
    num_iter = frontdoor.integer(num_iter, "num_iter", minimum=1)
    tol = default_tol(dtype) if tol is None else frontdoor.number(tol, "tol", positive=True)
    check_every = default_check_every(device) if check_every is None else frontdoor.integer(check_every, "check_every", minimum=1)
    tiny = torch.finfo(dtype).eps
    v = _start_vector(rows, dim, dtype, device, generator)
    w = matvec(v)
    it = 0
    for it in range(1, num_iter + 1):
        theta = (w * v).sum(dim=1)
        res = (w - theta.unsqueeze(1) * v).norm(dim=1) / theta.abs().clamp_min(tiny)
        if it % check_every == 0 and bool((res <= tol).all()):
            break
        v = w / w.norm(dim=1, keepdim=True).clamp_min(tiny)
        w = matvec(v)
    theta = (w * v).sum(dim=1)
    res = (w - theta.unsqueeze(1) * v).norm(dim=1) / theta.abs().clamp_min(tiny)
    return EigenResult(
        eigenvalues=theta.unsqueeze(1),
        eigenvectors=v.unsqueeze(1),
        iterations=it,
        residual=res.unsqueeze(1),
        converged=res.unsqueeze(1) <= tol,
    )


def lsqr(
    apply_A: Matvec,
    apply_AT: Matvec,
    b: torch.Tensor,
    eps: float | torch.Tensor = 0.0,
    *,
    tol: float | None = None,
    max_iter: int | None = None,
    check_every: int | None = None,
) -> CGResult:
    """Solve ``min_x ‖A x − b‖² + ε‖x‖²`` row by row with damped LSQR (Paige & Saunders, 1982).

    The same Krylov space as :func:`cgls`, but built by Golub–Kahan bidiagonalisation with the
    damping folded in by plane rotations, so the iteration works with ``A`` (condition number
    ``√κ``) rather than ``AᵀA`` (``κ``).

    Args:
        apply_A: ``(B, *in_shape) -> (B, *out_shape)``; rows must not interact.
        apply_AT: ``(B, *out_shape) -> (B, *in_shape)``, the adjoint of ``apply_A``.
        b: ``(B, *out_shape)`` right-hand sides, float32 or float64.
        eps: damping ``ε >= 0``, one number or a ``(B,)`` tensor (one per row).
        tol: per row, stop when the recursive estimate of the normal-equation residual
            ``‖Aᵀ(b − Ax) − εx‖`` falls to ``tol/2 · ‖Aᵀb‖`` (default :func:`default_tol`), the
            criterion of :func:`cgls`, which bounds the error of ``x`` and not only a backward error.
        max_iter: iteration cap (default ``min(10·n, 2000)``, ``n`` = elements of one solution row).
        check_every: iterations between host reads of the convergence mask.

    Returns:
        :class:`CGResult` with ``x`` shaped ``(B, *in_shape)``. ``residual`` is the true relative
        residual ``‖Aᵀ(b − Ax) − εx‖ / ‖Aᵀb‖`` recomputed at exit (0 for ``Aᵀb = 0``). ``converged``:
        ``residual <= tol``, or the recursion met its test and the recomputed residual is within its
        own rounding floor ``10·u·‖Ā‖·‖r̄‖ / ‖Aᵀb‖`` (``u`` the unit round-off, ``‖Ā‖`` the
        bidiagonalisation's Frobenius estimate of ``[A; √ε I]``, ``r̄ = [b − Ax; −√ε x]``): in
        float32, when ``b`` lies mostly outside the range of ``A``, ``Aᵀ`` amplifies the rounding of
        ``b − Ax`` past ``tol`` although ``x`` is as accurate as the arithmetic allows.
        ``breakdown`` marks rows whose recurrences produced a non-finite number (their ``x`` is the
        last finite iterate).
    """
    _callable(apply_A, "apply_A")
    _callable(apply_AT, "apply_AT")
    eps_rows = _check_solver_args(b, eps, tol, max_iter, check_every).reshape(-1)
    rows = b.shape[0]
    tol = default_tol(b.dtype) if tol is None else tol
    check_every = default_check_every(b.device) if check_every is None else check_every
    tiny = torch.finfo(b.dtype).tiny

    def norm(t):
        return t.reshape(rows, -1).norm(dim=1)

    def expand(s, like):
        return s.reshape((rows,) + (1,) * (like.dim() - 1))

    def safe_div(t, s):
        return t / expand(torch.where(s > 0, s, 1), t)

    b_norm = norm(b)
    beta = b_norm.clone()
    u = safe_div(b, beta)
    v = apply_AT(u)
    alpha = norm(v)
    v = safe_div(v, alpha)
    max_iter = min(10 * v[0].numel(), 2000) if max_iter is None else max_iter
    x = torch.zeros_like(v)
    w = v.clone()
    phibar, rhobar = beta.clone(), alpha.clone()
    anorm_sq = alpha**2  # Frobenius estimate of ‖Ā‖², grown by every bidiagonalisation step
    damping_residual_sq = torch.zeros_like(beta)  # ‖√ε x‖² part of ‖r̄‖², accumulated by the rotations
    active = (alpha > 0) & (beta > 0)  # Aᵀb = 0 or b = 0: x = 0 is the solution
    iterations = torch.zeros(rows, dtype=torch.int64, device=b.device)
    breakdown = torch.zeros(rows, dtype=torch.bool, device=b.device)
    atb_norm = alpha * beta
    threshold = tol / 2 * atb_norm
    met = ~active  # rows whose recursion met its test

    for it in range(1, max_iter + 1):
        u_new = apply_A(v) - expand(alpha, u) * u
        beta_new = norm(u_new)
        u_new = safe_div(u_new, beta_new)
        v_new = apply_AT(u_new) - expand(beta_new, v) * v
        alpha_new = norm(v_new)
        v_new = safe_div(v_new, alpha_new)
        # Eliminate the damping row, then the subdiagonal β (two plane rotations).
        rhobar1 = torch.sqrt(rhobar**2 + eps_rows)
        cs1, sn1 = rhobar / rhobar1.clamp_min(tiny), eps_rows.sqrt() / rhobar1.clamp_min(tiny)
        psi, phibar1 = sn1 * phibar, cs1 * phibar
        rho = torch.sqrt(rhobar1**2 + beta_new**2)
        cs, sn = rhobar1 / rho.clamp_min(tiny), beta_new / rho.clamp_min(tiny)
        theta, phi = sn * alpha_new, cs * phibar1
        x_new = x + expand(phi / rho.clamp_min(tiny), w) * w
        w_new = v_new - expand(theta / rho.clamp_min(tiny), w) * w
        phibar_new = sn * phibar1
        anorm_sq_new = anorm_sq + beta_new**2 + alpha_new**2 + eps_rows
        damping_sq_new = damping_residual_sq + psi**2
        finite = torch.isfinite(x_new.reshape(rows, -1)).all(dim=1) & torch.isfinite(phibar_new) & torch.isfinite(
            anorm_sq_new
        )
        breakdown |= active & ~finite
        step = active & finite
        keep = lambda new, old: torch.where(expand(step, old), new, old) if old.dim() > 1 else torch.where(step, new, old)  # noqa: E731
        x, w, u, v = keep(x_new, x), keep(w_new, w), keep(u_new, u), keep(v_new, v)
        alpha, phibar, rhobar = keep(alpha_new, alpha), keep(phibar_new, phibar), keep(-cs * alpha_new, rhobar)
        anorm_sq, damping_residual_sq = keep(anorm_sq_new, anorm_sq), keep(damping_sq_new, damping_residual_sq)
        iterations += step
        arnorm = alpha_new * (sn * phi).abs()  # ‖Āᵀr̄‖ of the new iterate
        # β = 0 or α = 0: the Krylov space is exhausted and x is exact.
        done = (arnorm <= threshold) | (beta_new == 0) | (alpha_new == 0)
        met |= step & done
        active = step & ~done
        if (it % check_every == 0 or it == max_iter) and not bool(active.any()):
            break

    r = b - apply_A(x)
    rnorm = torch.sqrt(norm(r) ** 2 + eps_rows * norm(x) ** 2)
    scale = torch.where(atb_norm > 0, atb_norm, 1)
    residual = norm(apply_AT(r) - expand(eps_rows, x) * x) / scale
    floor = 10 * torch.finfo(b.dtype).eps * anorm_sq.sqrt() * rnorm / scale
    converged = (residual <= tol) | (met & (residual <= floor))
    return CGResult(x=x, iterations=iterations, residual=residual, converged=converged, breakdown=breakdown)


@dataclass
class DenseSpectrum:
    """Full eigendecomposition of B symmetric ``D × D`` operators, ``A_b = V diag(λ) Vᵀ``.

    Attributes:
        eigenvalues: ``(B, D)`` ascending.
        eigenvectors: ``(B, D, D)``, column ``i`` of ``eigenvectors[b]`` belongs to ``eigenvalues[b, i]``.
        symmetry_error: ``(B,)`` ``‖A − Aᵀ‖_F / ‖A‖_F`` of the assembled matrices (rounding in the
            products; a large value means the operator is not symmetric).
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    symmetry_error: torch.Tensor


def available_memory(device: torch.device | str) -> int:
    """Bytes that can still be allocated on ``device``: free GPU memory, or the host's MemAvailable."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def dense_spectrum_bytes(dim: int, rows: int, dtype: torch.dtype) -> int:
    """Peak memory of :func:`dense_spectrum`: the matrices, their eigenvectors and LAPACK's workspace
    (about three ``B × D × D`` arrays)."""
    return 3 * rows * dim * dim * torch.empty((), dtype=dtype).element_size()


def dense_spectrum(
    matvec: Matvec,
    dim: int,
    *,
    rows: int = 1,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    block: int = 64,
) -> DenseSpectrum:
    """Assemble B symmetric operators column by column from ``matvec`` and diagonalise them.

    Args:
        matvec: ``(m·B, D) -> (m·B, D)``: row ``i·B + b`` is a vector of operator ``b`` (the same
            convention as :func:`lanczos`, with ``m`` copies of every operator per call).
        dim: ``D``. rows: ``B``.
        dtype, device: of the assembled matrices (use float64: the small eigenvalues, which
            govern a damped inverse, are lost to rounding in float32).
        block: unit vectors per ``matvec`` call (``m``); the products are batched over them.

    Cost: ``⌈D/block⌉`` batched products and one ``eigh`` of ``(B, D, D)``.

    Raises:
        MemoryError: before any work, when :func:`dense_spectrum_bytes` exceeds
            :func:`available_memory`; the message gives both numbers.
    """
    _callable(matvec, "matvec")
    dim, rows = frontdoor.integer(dim, "dim", minimum=1), frontdoor.integer(rows, "rows", minimum=1)
    block = frontdoor.integer(block, "block", minimum=1)
    needed, free = dense_spectrum_bytes(dim, rows, dtype), available_memory(device)
    if needed > free:
        raise MemoryError(
            f"the dense spectral route needs about {needed / 2**30:.2f} GiB for {rows} system(s) of dimension "
            f"{dim} ({rows} × {dim}² × 3 × {torch.empty((), dtype=dtype).element_size()} bytes), but only "
            f"{free / 2**30:.2f} GiB are available on {torch.device(device)}; use method='lsqr'"
        )
    matrix = torch.empty(rows, dim, dim, dtype=dtype, device=device)
    for start in range(0, dim, block):
        m = min(block, dim - start)
        unit = torch.zeros(m, rows, dim, dtype=dtype, device=device)
        unit[torch.arange(m), :, torch.arange(start, start + m)] = 1
        # Column j of A_b (= row j, A is symmetric) for j in [start, start + m).
        matrix[:, start : start + m] = matvec(unit.reshape(m * rows, dim)).reshape(m, rows, dim).transpose(0, 1)
    skew = (matrix - matrix.transpose(1, 2)).flatten(1).norm(dim=1)
    symmetry_error = skew / matrix.flatten(1).norm(dim=1).clamp_min(torch.finfo(dtype).tiny)
    matrix = 0.5 * (matrix + matrix.transpose(1, 2))
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    return DenseSpectrum(eigenvalues, eigenvectors, symmetry_error)
