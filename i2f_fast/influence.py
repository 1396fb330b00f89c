"""The Inversion Influence Function (I²F) and its bounds.

For a perturbation ``δ`` of the shared gradient, I²F predicts how far the best gradient-inversion
attack lands from the private input ``x``::

    I²F(δ)    = ‖(JᵀJ + εI)⁻¹ Jᵀ δ‖            (batched CG in input space, from a zero start)
    I²F_lb(δ) = ‖Jᵀ δ‖ / λ_max(JᵀJ)             (λ_max by Lanczos in input space)

with ``J = ∂(∇_θ L)/∂x`` (:class:`~i2f_fast.operators.InversionJacobian`). Shapes: ``P`` parameters,
``S = x.shape`` the input batch, ``N = S[0]`` samples, ``K`` perturbations solved together.

In per-sample mode (the paper's setting) every sample is its own batch of one with its own ``J_n``;
values then carry a sample dimension ``N`` and all ``K·N`` systems are solved in one batched CG.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn

from . import frontdoor
from .operators import DEFAULT_STRATEGY, InversionJacobian, LossFn
from .solvers import cg, cgls, lanczos, power_iteration, random_on

METHODS = ("cg", "cgls")


@dataclass
class I2FResult:
    """Result of :meth:`InversionInfluence.i2f`.

    ``value`` shape: ``()`` for one ``δ``, ``(K,)`` for K; per-sample mode adds ``N`` at the end.

    Attributes:
        value: ``‖(JᵀJ+εI)⁻¹Jᵀδ‖``.
        shift: the predicted reconstruction shift ``(JᵀJ+εI)⁻¹Jᵀδ``, input-shaped (``S`` or ``(K, *S)``).
        jt_delta_norm: ``‖Jᵀδ‖``, shaped like ``value``.
        iterations, residual, converged: per system, shaped like ``value`` (true relative residual).
        eps: the damping used.
    """

    value: torch.Tensor
    shift: torch.Tensor
    jt_delta_norm: torch.Tensor
    iterations: torch.Tensor
    residual: torch.Tensor
    converged: torch.Tensor
    eps: float


@dataclass
class LowerBoundResult:
    """``value = ‖Jᵀδ‖ / λ_max(JᵀJ)``; ``lambda_max`` is ``()`` or ``(N,)`` per sample."""

    value: torch.Tensor
    jt_delta_norm: torch.Tensor
    lambda_max: torch.Tensor


@dataclass
class EigenPairs:
    """Top-k eigenpairs of ``JᵀJ`` (input space).

    Attributes:
        eigenvalues: ``(k,)``, descending (per-sample: ``(N, k)``).
        eigenvectors: ``(k, *S)`` unit input-space eigenvectors (per-sample: ``(N, k, *S[1:])``).
        param_directions: ``(k, P)`` unit parameter-space directions ``J v/‖J v‖`` (per-sample
            ``(N, k, P)``): a gradient perturbation ``δ = c·u_i`` has ``I²F = c·√λ_i/(λ_i + ε)``.
        residual: Ritz residuals relative to ``λ_max``, shaped like ``eigenvalues``.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    param_directions: torch.Tensor
    residual: torch.Tensor


@dataclass
class ExpectedI2F:
    """``E‖I²F(δ)‖²`` for ``δ ~ N(0, σ²I)``: ``σ² tr((JᵀJ+εI)⁻² JᵀJ)``.

    Attributes:
        value: ``()`` (per-sample: ``(N,)``).
        stderr: standard error of the estimate (zeros when exact).
        method: ``"exact"`` (dense eigendecomposition) or ``"hutchinson"`` (Rademacher probes + CG).
        num_probes: probes used (0 when exact).
    """

    value: torch.Tensor
    stderr: torch.Tensor
    method: str
    num_probes: int


def _check_eps(eps):
    frontdoor.number(eps, "eps", minimum=0)


class InversionInfluence:
    """I²F, its lower bound and the spectrum of ``JᵀJ`` for one model and input batch.

    Builds one :class:`InversionJacobian` (one forward + backward) and reuses it, and caches
    ``λ_max``, so many perturbations, damping values and bounds cost only products.

    Args:
        model, x, y, loss_fn, per_sample, strategy, onednn: as for :class:`InversionJacobian`.
        generator: random generator for Lanczos start vectors and Hutchinson probes.
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
        generator: torch.Generator | None = None,
    ):
        self.jacobian = InversionJacobian(
            model, x, y, loss_fn, per_sample=per_sample, strategy=strategy, onednn=onednn
        )
        self.per_sample = per_sample
        self.generator = generator
        shape = self.jacobian.input_shape
        self._row_shape = shape[1:] if per_sample else shape
        self._rows_per_delta = shape[0] if per_sample else 1
        self._dtype, self._device = x.dtype, x.device
        self._top: dict[str, object] = {}

    @property
    def row_dim(self) -> int:
        """Dimension of one system: ``D`` of a sample (per-sample) or of the whole batch."""
        return math.prod(self._row_shape)

    # ---------------------------------------------------------------------- row bookkeeping
    def _to_rows(self, t: torch.Tensor) -> torch.Tensor:
        """``(K, *S)`` → ``(K·n, *row_shape)`` with n = N per-sample, else 1."""
        return t.reshape(-1, *self._row_shape)

    def _from_rows(self, t: torch.Tensor) -> torch.Tensor:
        """``(K·n, *row_shape)`` → ``(K, *S)``."""
        return t.reshape(-1, *self.jacobian.input_shape)

    def _gram_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return self._to_rows(self.jacobian.gram(self._from_rows(rows)))

    def _flat_gram_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Lanczos matvec: ``(n, D_row)`` → ``(n, D_row)`` for one copy of every system."""
        return self._gram_rows(rows.reshape(-1, *self._row_shape)).reshape(rows.shape)

    def _as_delta(self, delta) -> tuple[torch.Tensor, bool]:
        """Normalise ``delta`` to a flat ``(K, *prefix, P)`` tensor; returns it and whether K was given."""
        op = self.jacobian
        P = op.num_params
        delta = frontdoor.parameter_vectors(delta, op.layout, "delta", batch=2 if self.per_sample else 1)
        delta = delta.to(dtype=self._dtype, device=self._device)
        if not self.per_sample:
            return (delta.unsqueeze(0), False) if delta.dim() == 1 else (delta, True)
        N = op.num_samples
        if delta.dim() == 1:
            return delta.expand(1, N, P), False
        if delta.dim() == 2 and delta.shape[0] == N:
            return delta.unsqueeze(0), False
        if delta.dim() == 3 and delta.shape[1] == N:
            return delta, True
        raise ValueError(
            f"per-sample delta must have shape (P,), (N, P) or (K, N, P) with N={N}, P={P}, got {tuple(delta.shape)}"
        )

    def _values_shape(self, K: int, batched: bool) -> tuple[int, ...]:
        shape = (K,) if batched else ()
        return shape + ((self.jacobian.num_samples,) if self.per_sample else ())

    # ---------------------------------------------------------------------------- I²F
    def i2f(
        self,
        delta,
        eps: float = 1.0,
        *,
        method: str = "cg",
        tol: float | None = None,
        max_iter: int | None = None,
    ) -> I2FResult:
        """``‖(JᵀJ + εI)⁻¹ Jᵀ δ‖`` for one or K perturbations, solved together.

        Args:
            delta: flat ``(P,)``, ``(K, P)``, or a list of parameter-shaped tensors; per-sample mode
                also accepts ``(N, P)`` (one δ per sample) and ``(K, N, P)``; ``(P,)`` is applied to
                every sample.
            eps: damping ``ε >= 0`` (the paper's code uses 1).
            method: ``"cg"`` on the normal equations or ``"cgls"`` (better conditioned in float32).
            tol, max_iter: solver controls (see :func:`i2f_fast.solvers.cg`).

        Raises:
            ValueError for a bad ``delta``/``eps``/``method``; FloatingPointError if the result is
            not finite. Emits a RuntimeWarning when some systems did not converge.
        """
        _check_eps(eps)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        op = self.jacobian
        d, batched = self._as_delta(delta)
        K = d.shape[0]
        b = op.vjp(d)  # (K, *S)
        if not torch.isfinite(b).all():
            raise FloatingPointError("Jᵀδ is not finite: the model's second derivatives overflow; use float64")
        b_rows = self._to_rows(b)
        if method == "cg":
            res = cg(self._gram_rows, b_rows, eps, tol=tol, max_iter=max_iter)
        else:
            P = op.num_params
            res = cgls(
                lambda v: op.jvp(self._from_rows(v)).reshape(-1, P),
                lambda u: self._to_rows(op.vjp(u.reshape(d.shape))),
                d.reshape(-1, P),
                eps,
                tol=tol,
                max_iter=max_iter,
            )
        vshape = self._values_shape(K, batched)
        value = res.x.reshape(res.x.shape[0], -1).norm(dim=1)
        if not torch.isfinite(value).all():
            raise FloatingPointError(
                "I²F is not finite: JᵀJ + εI is numerically singular or the model's second derivatives "
                "overflow; increase eps or use float64"
            )
        if res.breakdown.any():
            raise FloatingPointError(
                f"I²F: CG broke down on {int(res.breakdown.sum())} systems (pᵀ(JᵀJ+εI)p <= 0 or not finite): "
                "the Jacobian products are not finite or not symmetric positive semi-definite"
            )
        shift = self._from_rows(res.x)
        if not res.converged.all():
            warnings.warn(
                f"I²F: {int((~res.converged).sum())} of {res.converged.numel()} systems did not reach "
                f"tol (worst relative residual {res.residual.max().item():.2e}); raise max_iter or eps",
                RuntimeWarning,
                stacklevel=2,
            )
        return I2FResult(
            value=value.reshape(vshape),
            shift=shift if batched else shift[0],
            jt_delta_norm=b_rows.reshape(b_rows.shape[0], -1).norm(dim=1).reshape(vshape),
            iterations=res.iterations.reshape(vshape),
            residual=res.residual.reshape(vshape),
            converged=res.converged.reshape(vshape),
            eps=float(eps),
        )

    def lower_bound(self, delta, *, method: str = "lanczos") -> LowerBoundResult:
        """``‖Jᵀδ‖ / λ_max(JᵀJ)`` (the paper's I²F_lb); ``delta`` as in :meth:`i2f`."""
        d, batched = self._as_delta(delta)
        b = self.jacobian.vjp(d)
        vshape = self._values_shape(d.shape[0], batched)
        jt_norm = self._to_rows(b).reshape(-1, self.row_dim).norm(dim=1).reshape(vshape)
        lam = self.max_eigenvalue(method=method)
        value = jt_norm / lam
        if not torch.isfinite(value).all():
            raise FloatingPointError(
                "I²F lower bound is not finite: λ_max(JᵀJ) is 0 for some sample (the loss is flat in x, "
                "e.g. a saturated softmax) or the products overflow"
            )
        return LowerBoundResult(value=value, jt_delta_norm=jt_norm, lambda_max=lam)

    # ---------------------------------------------------------------------- spectrum
    def _eigen(self, k: int, method: str):
        key = f"{method}:{k}"
        if key not in self._top:
            common = dict(rows=self._rows_per_delta, dtype=self._dtype, device=self._device, generator=self.generator)
            if method == "lanczos":
                self._top[key] = lanczos(self._flat_gram_rows, self.row_dim, k, **common)
            elif method == "power":
                if k != 1:
                    raise ValueError("power iteration gives only the top eigenpair (k=1)")
                self._top[key] = power_iteration(self._flat_gram_rows, self.row_dim, **common)
            else:
                raise ValueError(f"method must be 'lanczos' or 'power', got {method!r}")
            res = self._top[key]
            if not res.converged.all():
                warnings.warn(
                    f"{method}: {int((~res.converged).sum())} eigenpairs did not converge in {res.iterations} "
                    f"iterations (worst relative Ritz residual {res.residual.max().item():.2e})",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return self._top[key]

    def max_eigenvalue(self, *, method: str = "lanczos") -> torch.Tensor:
        """``λ_max(JᵀJ)``: ``()``, or ``(N,)`` per sample. Cached."""
        lam = self._eigen(1, method).eigenvalues[:, 0]
        return lam if self.per_sample else lam[0]

    def top_eigenpairs(self, k: int) -> EigenPairs:
        """Top-``k`` eigenpairs of ``JᵀJ`` and the matching unit parameter-space directions."""
        res = self._eigen(k, "lanczos")
        op = self.jacobian
        vecs = res.eigenvectors  # (n, k, D_row)
        if self.per_sample:
            tangents = vecs.transpose(0, 1).reshape(k, *op.input_shape)
            u = op.jvp(tangents).transpose(0, 1)  # (N, k, P)
            eigvecs = vecs.reshape(vecs.shape[0], k, *self._row_shape)
            vals, resid = res.eigenvalues, res.residual
        else:
            eigvecs = vecs[0].reshape(k, *op.input_shape)
            u = op.jvp(eigvecs)  # (k, P)
            vals, resid = res.eigenvalues[0], res.residual[0]
        u = u / u.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(u.dtype).tiny)
        return EigenPairs(eigenvalues=vals, eigenvectors=eigvecs, param_directions=u, residual=resid)

    def expected_i2f_sq(
        self,
        sigma: float,
        eps: float = 1.0,
        *,
        exact_max_dim: int = 1024,
        num_probes: int = 64,
        tol: float | None = None,
    ) -> ExpectedI2F:
        """``E_δ ‖(JᵀJ+εI)⁻¹Jᵀδ‖²`` for Gaussian ``δ ~ N(0, σ²I_P)``.

        Equals ``σ² Σ_i λ_i/(λ_i+ε)²`` over the eigenvalues of ``JᵀJ`` (``σ² Σ 1/λ_i`` over the
        non-zero ones when ``ε = 0``). Exact by dense eigendecomposition when a system has at most
        ``exact_max_dim`` input elements; otherwise a Hutchinson estimate with ``num_probes``
        Rademacher probes ``z``, each costing one batched CG solve ``s = (JᵀJ+εI)⁻¹z`` and using
        ``zᵀ(JᵀJ+εI)⁻¹JᵀJ(JᵀJ+εI)⁻¹z = sᵀz − ε‖s‖²``.
        """
        _check_eps(eps)
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        n, D = self._rows_per_delta, self.row_dim
        vshape = (n,) if self.per_sample else ()
        if D <= exact_max_dim:
            eye = torch.eye(D, dtype=self._dtype, device=self._device)
            columns = []
            for block in torch.split(eye, 128):
                tangents = block.reshape(-1, 1, D).expand(-1, n, D).reshape(-1, *self.jacobian.input_shape)
                columns.append(self.jacobian.gram(tangents).reshape(-1, n, D))
            A = torch.cat(columns).transpose(0, 1)  # (n, D, D): A[m, j] = row j of A_m (symmetric)
            lam = torch.linalg.eigvalsh(0.5 * (A + A.transpose(1, 2))).clamp_min(0)
            if eps > 0:
                terms = lam / (lam + eps) ** 2
            else:
                cutoff = lam.amax(dim=1, keepdim=True) * D * torch.finfo(self._dtype).eps
                terms = torch.where(lam > cutoff, 1 / lam.clamp_min(torch.finfo(self._dtype).tiny), 0)
            value = sigma**2 * terms.sum(dim=1)
            return ExpectedI2F(value.reshape(vshape), torch.zeros_like(value).reshape(vshape), "exact", 0)
        if eps == 0:
            raise ValueError("eps must be > 0 for the Hutchinson estimate (JᵀJ is singular when P < D)")
        if num_probes < 2:
            raise ValueError(f"num_probes must be >= 2, got {num_probes}")
        z = random_on(self.generator, self._device, torch.randint, 0, 2, (num_probes * n, *self._row_shape))
        z = (2 * z - 1).to(self._dtype)
        s = cg(self._gram_rows, z, eps, tol=tol).x
        est = (s * z).reshape(num_probes, n, -1).sum(-1) - eps * (s * s).reshape(num_probes, n, -1).sum(-1)
        value = sigma**2 * est.mean(0)
        stderr = sigma**2 * est.std(0) / math.sqrt(num_probes)
        return ExpectedI2F(value.reshape(vshape), stderr.reshape(vshape), "hutchinson", num_probes)


# --------------------------------------------------------------------------- functional API
def i2f(model, x, y, delta, eps: float = 1.0, *, loss_fn=None, per_sample=False, strategy=DEFAULT_STRATEGY, **kw):
    """``I²F = ‖(JᵀJ + εI)⁻¹ Jᵀ δ‖``; see :meth:`InversionInfluence.i2f` for ``delta`` and options."""
    return InversionInfluence(model, x, y, loss_fn, per_sample=per_sample, strategy=strategy).i2f(delta, eps, **kw)


def i2f_lower_bound(model, x, y, delta, *, loss_fn=None, per_sample=False, strategy=DEFAULT_STRATEGY, **kw):
    """``‖Jᵀδ‖ / λ_max(JᵀJ)``; see :meth:`InversionInfluence.lower_bound`."""
    inf = InversionInfluence(model, x, y, loss_fn, per_sample=per_sample, strategy=strategy)
    return inf.lower_bound(delta, **kw)


def max_eigenvalue(model, x, y, *, loss_fn=None, per_sample=False, strategy=DEFAULT_STRATEGY, method="lanczos"):
    """``λ_max(JᵀJ)`` in input space: ``()`` or ``(N,)`` per sample."""
    inf = InversionInfluence(model, x, y, loss_fn, per_sample=per_sample, strategy=strategy)
    return inf.max_eigenvalue(method=method)


def top_eigenpairs(model, x, y, k: int, *, loss_fn=None, per_sample=False, strategy=DEFAULT_STRATEGY):
    """Top-``k`` eigenpairs of ``JᵀJ`` with parameter-space directions; see :class:`EigenPairs`."""
    inf = InversionInfluence(model, x, y, loss_fn, per_sample=per_sample, strategy=strategy)
    return inf.top_eigenpairs(k)


def expected_i2f_sq(model, x, y, sigma, eps: float = 1.0, *, loss_fn=None, per_sample=False, **kw):
    """``E‖I²F‖²`` for ``δ ~ N(0, σ²I)``; see :meth:`InversionInfluence.expected_i2f_sq`."""
    inf = InversionInfluence(model, x, y, loss_fn, per_sample=per_sample)
    return inf.expected_i2f_sq(sigma, eps, **kw)
