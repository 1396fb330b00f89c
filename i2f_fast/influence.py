"""The Inversion Influence Function (I²F): the predicted reconstruction error of an attack.

For a perturbation ``δ`` of the shared gradient, I²F predicts how far a gradient-inversion attack
lands from the private input ``x`` (README.md, "What I²F predicts, and how well")::

    I²F(δ)    = ‖(JᵀJ + εI)⁻¹ Jᵀ δ‖            the attack's optimum, linearised at x
    I²F_lb(δ) = ‖Jᵀ δ‖ / λ_max(JᵀJ)             the paper's lower bound (λ_max by Lanczos)

with ``J = ∂(∇_θ L)/∂x`` (:class:`~i2f_fast.operators.InversionJacobian`). The cosine attack (GS)
and per-layer weights change the system (:mod:`i2f_fast.linearised_attack`). Shapes: ``P``
parameters, ``S = x.shape`` the input batch, ``N = S[0]`` samples, ``K`` perturbations solved
together, ``D`` the elements of one system (a sample in per-sample mode, else the whole batch).

**Damping.** ε only regularises directions the gradient cannot see; the converged attacker is the
limit ε → 0. The default is ``eps_rel = DEFAULT_EPS_REL``, i.e. ``ε = 1e-8 · λ_max`` per system,
chosen from the measurements in ``README.md`` ("Which damping"); the paper's code uses ε = 1, which
under-predicts the attack by ~70× on LeNet (:mod:`i2f_fast.compat` keeps it).

**Solvers** (``method=``): ``"spectral"`` assembles the ``D × D`` matrix of every system from
batched products in float64, diagonalises it once and caches it, after which any δ, ε, noise level
and the Gaussian expectation cost a few products (the route for sweeps); ``"lsqr"`` is damped LSQR
on ``A = ΠW^½J`` (matrix-free, for large D); ``"cg"`` / ``"cgls"`` are CG on the normal equations.
``"auto"`` picks CG where the damping keeps it fast (an absolute ``eps``, such as the paper's 1, or
``eps_rel >= ITERATIVE_EPS_REL``); at smaller damping the spectral route when the spectrum is
cached or when at least ``SPECTRAL_MIN_SOLVES`` perturbations are solved together on systems of at
most ``SPECTRAL_MAX_DIM`` elements whose matrices fit in memory, and LSQR otherwise; the result
says which ran.

In per-sample mode (the paper's setting) every sample is its own batch of one with its own ``J_n``;
values then carry a sample dimension ``N`` and all ``K·N`` systems are solved together.
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn

from . import frontdoor
from .linearised_attack import OBJECTIVES, LinearisedAttack
from .operators import DEFAULT_STRATEGY, InversionJacobian, LossFn
from .solvers import (
    DenseSpectrum,
    available_memory,
    cg,
    cgls,
    dense_spectrum,
    dense_spectrum_bytes,
    lanczos,
    lsqr,
    power_iteration,
    random_on,
)

METHODS = ("auto", "spectral", "lsqr", "cg", "cgls")
DEFAULT_EPS_REL = 1e-8
"""Default damping relative to ``λ_max`` of each system (README.md, "Which damping")."""
SPECTRAL_MAX_DIM = 4096
"""``method="auto"`` uses the spectral route up to this many input elements per system (README.md)."""
SPECTRAL_MIN_SOLVES = 3
"""``method="auto"`` assembles the spectrum for this many perturbations solved together (or cached):
on LeNet (D = 784, 16 digits, ε = 1e-6·λ_max) it costs about two LSQR or CG solves, and every later
solve on it is ~170× cheaper than one (``benchmarks/bench_prediction.py``)."""
ITERATIVE_EPS_REL = 1e-4
"""``method="auto"`` uses CG from this relative damping up (it converges in tens of iterations there)."""
SPECTRAL_BLOCK = 16
"""Unit vectors per batched product when assembling a spectrum (LeNet float64, measured under
load: 2.5 ms per sample-tangent at 8–16, 3.5 ms at 64)."""


@dataclass
class I2FResult:
    """Result of :meth:`InversionInfluence.i2f`.

    ``value`` shape: ``()`` for one ``δ``, ``(K,)`` for K; per-sample mode adds ``N`` at the end.

    Attributes:
        value: ``‖Δ‖``, the predicted distance of the attack's reconstruction from ``x``
            (``‖(JᵀJ+εI)⁻¹Jᵀδ‖`` for the L2 objective without weights: I²F).
        rmse: ``value / √D``: the predicted per-element RMSE in the model's (normalised) input
            space, directly comparable with :func:`i2f_fast.metrics.rmse` of a reconstruction.
        shift: the predicted reconstruction shift ``Δ = x̂ − x``, input-shaped (``S`` or ``(K, *S)``).
        jt_delta_norm: ``‖Aᵀ Π W^½ δ‖`` (``‖Jᵀδ‖`` for L2 without weights), shaped like ``value``.
        iterations: solver iterations per system (0 for the spectral route).
        residual: true relative residual ``‖b − (AᵀA+εI)Δ‖ / ‖b‖`` per system (iterative routes:
            as reported by the solver, see :mod:`i2f_fast.solvers`).
        converged: per system. Iterative routes: ``residual <= tol``. Spectral route: the normwise
            backward error ``‖b − (AᵀA+εI)Δ‖ / ((λ_max+ε)‖Δ‖ + ‖b‖)`` is at most ``√u`` (u the float64
            unit round-off): the solution is exact for a matrix within rounding of the assembled one.
        eps: absolute damping ``ε`` per system, shaped like ``value``.
        method: the solver that ran: ``"spectral"``, ``"lsqr"``, ``"cg"`` or ``"cgls"``.
        objective: ``"l2"`` or ``"cosine"``.
    """

    value: torch.Tensor
    rmse: torch.Tensor
    shift: torch.Tensor
    jt_delta_norm: torch.Tensor
    iterations: torch.Tensor
    residual: torch.Tensor
    converged: torch.Tensor
    eps: torch.Tensor
    method: str
    objective: str


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
    """``E‖Δ‖²`` for Gaussian gradient noise ``δ ~ N(0, σ²I)``.

    Attributes:
        value: ``()`` (per-sample: ``(N,)``): ``σ² tr((AᵀA+εI)⁻¹ C (AᵀA+εI)⁻¹)`` with ``C`` the
            covariance of ``AᵀΠW^½δ`` per unit variance (``σ² Σ λ_i/(λ_i+ε)²`` for L2 without weights).
        rmse: ``√(value / D)``: the predicted root-mean-square error per element.
        stderr: standard error of ``value`` (zeros when exact).
        method: ``"spectral"`` (exact, dense eigendecomposition) or ``"hutchinson"`` (Rademacher
            probes, each one damped solve).
        num_probes: probes used (0 when exact).
        eps: absolute damping per system, shaped like ``value``.
    """

    value: torch.Tensor
    rmse: torch.Tensor
    stderr: torch.Tensor
    method: str
    num_probes: int
    eps: torch.Tensor


def damping_arguments(eps, eps_rel) -> tuple[float | None, float | None]:
    """``(eps, eps_rel)`` checked: exclusive; neither given → the calibrated ``DEFAULT_EPS_REL``."""
    if eps is not None and eps_rel is not None:
        raise ValueError("eps and eps_rel are exclusive: give the damping either absolutely or relative to λ_max")
    if eps is not None:
        return frontdoor.number(eps, "eps", minimum=0), None
    return None, DEFAULT_EPS_REL if eps_rel is None else frontdoor.number(eps_rel, "eps_rel", positive=True)


class InversionInfluence:
    """I²F, its lower bound and the spectrum of ``JᵀJ`` for one model and input batch.

    Builds one :class:`InversionJacobian` (one forward + backward) and reuses it, and caches
    ``λ_max`` and dense spectra, so many perturbations, damping values and bounds cost only products.

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
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.jacobian = InversionJacobian(
            model, x, y, loss_fn, per_sample=per_sample, strategy=strategy, onednn=onednn
        )
        self.per_sample = per_sample
        self.generator = generator
        shape = self.jacobian.input_shape
        self._row_shape = shape[1:] if per_sample else shape
        self._rows_per_delta = shape[0] if per_sample else 1
        self._dtype, self._device = x.dtype, x.device
        self._build = dict(model=model, x=x, y=y, loss_fn=loss_fn, strategy=strategy, onednn=onednn)
        self._jacobian64: InversionJacobian | None = None
        self._top: dict[str, object] = {}
        self._systems: dict[tuple, LinearisedAttack] = {}
        self._spectra: dict[tuple, DenseSpectrum] = {}
        self._lambda_max: dict[tuple, torch.Tensor] = {}

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

    def _flat(self, rows_matvec):
        """A matvec on ``(m·n, *row_shape)`` rows as one on flat ``(m·n, D_row)`` rows (the
        convention of :func:`~i2f_fast.solvers.lanczos` and :func:`~i2f_fast.solvers.dense_spectrum`)."""
        return lambda rows: rows_matvec(rows.reshape(-1, *self._row_shape)).reshape(rows.shape)

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

    # ------------------------------------------------------------------- systems and spectra
    def _element_weights(self, layer_weights, dtype) -> torch.Tensor | None:
        """Per-layer weights (as ``invert``'s) → ``(P,)`` element weights, or None."""
        return frontdoor.element_weights(layer_weights, None, self.jacobian.param_shapes, dtype, self._device)

    def _float64_jacobian(self) -> InversionJacobian:
        """The operator in float64 (a copy of the model; the caller's is untouched) for the spectral route."""
        if self._dtype == torch.float64:
            return self.jacobian
        if self._jacobian64 is None:
            b = self._build
            model64 = copy.deepcopy(b["model"]).to(torch.float64)
            self._jacobian64 = InversionJacobian(
                model64, b["x"].detach().to(torch.float64), b["y"], b["loss_fn"], per_sample=self.per_sample,
                strategy=b["strategy"], onednn=b["onednn"],
            )
        return self._jacobian64

    def _system_key(self, objective: str, layer_weights) -> tuple:
        """Cache key of a system: the objective and the per-layer weights, checked."""
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if self._element_weights(layer_weights, torch.float64) is None:  # checks them
            return objective, None
        values = layer_weights.tolist() if isinstance(layer_weights, torch.Tensor) else layer_weights
        return objective, tuple(float(w) for w in values)

    def _system(self, objective: str, layer_weights, float64: bool = False) -> tuple[LinearisedAttack, tuple]:
        """The linearised attack system (cached) and its cache key."""
        key = self._system_key(objective, layer_weights)
        dtype = torch.float64 if float64 else self._dtype
        full = key + (dtype,)
        if full not in self._systems:
            op = self._float64_jacobian() if float64 else self.jacobian
            self._systems[full] = LinearisedAttack(op, objective, self._element_weights(layer_weights, dtype))
        return self._systems[full], key

    def _spectrum(self, system: LinearisedAttack, key: tuple) -> DenseSpectrum:
        if key not in self._spectra:
            n, D = self._rows_per_delta, self.row_dim
            self._spectra[key] = dense_spectrum(
                self._flat(system.normal), D, rows=n, dtype=torch.float64, device=self._device, block=SPECTRAL_BLOCK,
            )
        return self._spectra[key]

    def spectrum(self, *, objective: str = "l2", layer_weights=None) -> DenseSpectrum:
        """The full spectrum of every system's ``AᵀA`` (``JᵀJ`` for L2 without weights), float64.

        Eigenvalues ``(n, D)`` ascending and eigenvectors ``(n, D, D)``, n = N per sample, else 1.
        Assembled from ``⌈D/SPECTRAL_BLOCK⌉`` batched products and cached (see :func:`i2f_fast.solvers.dense_spectrum`)."""
        system, key = self._system(objective, layer_weights, float64=True)
        return self._spectrum(system, key)

    def _choose_method(self, method: str, eps_rel: float | None = None, key: tuple | None = None, solves: int = 1) -> str:
        """The route ``method="auto"`` takes for ``solves`` perturbations (module docstring): spectral
        where the spectrum is cached, or for at least ``SPECTRAL_MIN_SOLVES`` perturbations at small
        damping on small enough systems; CG where the damping keeps CG fast (an absolute ``eps``, or
        ``eps_rel >= ITERATIVE_EPS_REL``); LSQR otherwise."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if method != "auto":
            return method
        if key is not None and key in self._spectra:
            return "spectral"
        if eps_rel is None or eps_rel >= ITERATIVE_EPS_REL:
            return "cg"
        n, D = self._rows_per_delta, self.row_dim
        fits = dense_spectrum_bytes(D, n, torch.float64) <= available_memory(self._device) // 2
        return "spectral" if solves >= SPECTRAL_MIN_SOLVES and D <= SPECTRAL_MAX_DIM and fits else "lsqr"

    def _system_lambda_max(self, system: LinearisedAttack, key: tuple, method: str) -> torch.Tensor:
        """``λ_max(AᵀA)`` per system ``(n,)``: from the dense spectrum or by Lanczos (cached)."""
        if method == "spectral":
            return self._spectrum(system, key).eigenvalues[:, -1]
        if key not in self._lambda_max:
            if key == ("l2", None):
                self._lambda_max[key] = self._eigen(1, "lanczos").eigenvalues[:, 0]
            else:
                res = lanczos(
                    self._flat(system.normal), self.row_dim, 1, rows=self._rows_per_delta, dtype=self._dtype, device=self._device, generator=self.generator,
                )
                self._lambda_max[key] = res.eigenvalues[:, 0]
        return self._lambda_max[key]

    def _damping(self, eps, eps_rel, system, key, method) -> torch.Tensor:
        """Absolute damping per system, ``(n,)`` float64."""
        if eps is not None:
            return torch.full((self._rows_per_delta,), eps, dtype=torch.float64, device=self._device)
        lam = self._system_lambda_max(system, key, method).to(torch.float64)
        if not (lam > 0).all():
            raise FloatingPointError(
                "eps_rel needs λ_max > 0, but AᵀA is 0 for some system (the loss is flat in x, e.g. a saturated "
                "softmax); give an absolute eps"
            )
        return eps_rel * lam

    # ---------------------------------------------------------------------------- I²F
    def i2f(
        self,
        delta,
        eps: float | None = None,
        *,
        eps_rel: float | None = None,
        objective: str = "l2",
        layer_weights=None,
        method: str = "auto",
        tol: float | None = None,
        max_iter: int | None = None,
    ) -> I2FResult:
        """The attack's predicted shift ``Δ = (AᵀA + εI)⁻¹ AᵀΠW^½δ`` for one or K perturbations.

        For ``objective="l2"`` without weights this is I²F, ``‖(JᵀJ + εI)⁻¹ Jᵀ δ‖``.

        Args:
            delta: flat ``(P,)``, ``(K, P)``, or a list of parameter-shaped tensors; per-sample mode
                also accepts ``(N, P)`` (one δ per sample) and ``(K, N, P)``; ``(P,)`` is applied to
                every sample.
            eps: absolute damping ``ε >= 0`` (the paper's code uses 1). Exclusive with ``eps_rel``.
            eps_rel: damping relative to each system's ``λ_max(AᵀA)``, ``> 0``. When neither is given,
                ``eps_rel = DEFAULT_EPS_REL`` (the calibrated default, see the module docstring).
            objective: the attack's objective: ``"l2"`` (DLG, the paper) or ``"cosine"`` (GS).
            layer_weights: the attack's per-layer weights ``W`` (one ``>= 0`` per trainable parameter
                tensor, as ``invert(layer_weights=...)``); ``None`` for equal weights.
            method: ``"auto"``, ``"spectral"``, ``"lsqr"``, ``"cg"`` or ``"cgls"`` (module docstring).
            tol, max_iter: controls of the iterative routes (see :mod:`i2f_fast.solvers`).

        Returns:
            :class:`I2FResult`; ``rmse`` is the prediction to compare with an attack's RMSE.

        Raises:
            ValueError for a bad argument (named); MemoryError when ``method="spectral"`` would not fit
            (with the estimate); FloatingPointError if the result is not finite. Emits a
            RuntimeWarning when some systems did not converge.
        """
        eps, eps_rel = damping_arguments(eps, eps_rel)
        if tol is not None:
            frontdoor.number(tol, "tol", positive=True)
        if max_iter is not None:
            frontdoor.integer(max_iter, "max_iter", minimum=1)
        d, batched = self._as_delta(delta)
        method = self._choose_method(method, eps_rel, self._system_key(objective, layer_weights), solves=d.shape[0])
        system, key = self._system(objective, layer_weights, float64=method == "spectral")
        K, P = d.shape[0], self.jacobian.num_params
        damping = self._damping(eps, eps_rel, system, key, method)  # (n,)
        row_damping = damping.repeat(K)  # (K·n,)
        d_rows = d.reshape(-1, P)
        if method == "spectral":
            shift_rows, b_rows, residual, converged, iterations = self._solve_spectral(system, key, d_rows, damping)
        else:
            shift_rows, b_rows, residual, converged, iterations = self._solve_iterative(
                system, method, d_rows, row_damping.to(self._dtype), tol, max_iter
            )
        vshape = self._values_shape(K, batched)
        # Norms in float64: a float32 sum of squares underflows for shifts below ~1e-19 (huge eps).
        value = shift_rows.reshape(shift_rows.shape[0], -1).to(torch.float64).norm(dim=1)
        if not torch.isfinite(value).all():
            raise FloatingPointError(
                "I²F is not finite: AᵀA + εI is numerically singular or the model's second derivatives "
                "overflow; increase eps or use float64"
            )
        if not converged.all():
            warnings.warn(
                f"I²F ({method}): {int((~converged).sum())} of {converged.numel()} systems did not converge "
                f"(worst relative residual {residual.max().item():.2e}); raise max_iter or eps, or use method='spectral'",
                RuntimeWarning,
                stacklevel=2,
            )
        shift = self._from_rows(shift_rows.to(self._dtype))
        value = value.to(self._dtype)
        return I2FResult(
            value=value.reshape(vshape),
            rmse=(value / math.sqrt(self.row_dim)).reshape(vshape),
            shift=shift if batched else shift[0],
            jt_delta_norm=b_rows.reshape(b_rows.shape[0], -1).to(torch.float64).norm(dim=1).to(self._dtype).reshape(vshape),
            iterations=iterations.reshape(vshape),
            residual=residual.reshape(vshape),
            converged=converged.reshape(vshape),
            eps=row_damping.to(self._dtype).reshape(vshape),
            method=method,
            objective=objective,
        )

    def _solve_spectral(self, system: LinearisedAttack, key, d_rows, damping):
        """``Δ = V (Λ + ε)⁻¹ Vᵀ b`` per row in float64; ε = 0 is the pseudo-inverse (eigenvalues
        below ``λ_max·D·u`` are treated as 0). Returns shift rows, b rows, residual, converged, iterations."""
        spec = self._spectrum(system, key)
        n, D = self._rows_per_delta, self.row_dim
        b = system.rhs(d_rows.to(torch.float64)).reshape(-1, n, D)  # (K, n, D)
        lam = spec.eigenvalues  # (n, D)
        denom = lam + damping.unsqueeze(1)
        cutoff = lam[:, -1:] * D * torch.finfo(torch.float64).eps
        inverse = torch.where(denom > cutoff, 1 / denom.clamp_min(torch.finfo(torch.float64).tiny), 0)
        coefficients = torch.einsum("nde,knd->kne", spec.eigenvectors, b) * inverse
        shift = torch.einsum("nde,kne->knd", spec.eigenvectors, coefficients)  # (K, n, D)
        # One product checks the solution against the operator itself (not the assembled matrix).
        applied = system.normal(shift.reshape(-1, *self._row_shape)).reshape(shift.shape)
        r = (b - applied - damping.reshape(1, n, 1) * shift).norm(dim=2)
        b_norm, shift_norm = b.norm(dim=2), shift.norm(dim=2)
        residual = (r / torch.where(b_norm > 0, b_norm, 1)).reshape(-1)
        backward = r / ((lam[:, -1] + damping) * shift_norm + b_norm).clamp_min(torch.finfo(torch.float64).tiny)
        converged = (backward <= torch.finfo(torch.float64).eps ** 0.5).reshape(-1)
        iterations = torch.zeros(shift.shape[0] * n, dtype=torch.int64, device=self._device)
        return shift.reshape(-1, *self._row_shape), b.reshape(-1, D), residual.to(self._dtype), converged, iterations

    def _solve_iterative(self, system: LinearisedAttack, method, d_rows, row_damping, tol, max_iter):
        """CG / CGLS / LSQR on the system in the model's dtype. Returns as :meth:`_solve_spectral`."""
        b = system.rhs(d_rows)
        if not torch.isfinite(b).all():
            raise FloatingPointError("Jᵀδ is not finite: the model's second derivatives overflow; use float64")
        if method == "cg":
            res = cg(system.normal, b, row_damping, tol=tol, max_iter=max_iter)
        elif method == "cgls":
            res = cgls(system.apply, system.adjoint, system.target(d_rows), row_damping, tol=tol, max_iter=max_iter)
        else:
            res = lsqr(system.apply, system.adjoint, system.target(d_rows), row_damping, tol=tol, max_iter=max_iter)
        if res.breakdown.any():
            raise FloatingPointError(
                f"I²F ({method}): {int(res.breakdown.sum())} systems broke down (non-finite or non-positive "
                "curvature): the Jacobian products are not finite or not symmetric positive semi-definite"
            )
        return res.x, b, res.residual, res.converged, res.iterations

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
                self._top[key] = lanczos(self._flat(self._gram_rows), self.row_dim, k, **common)
            elif method == "power":
                if k != 1:
                    raise ValueError("power iteration gives only the top eigenpair (k=1)")
                self._top[key] = power_iteration(self._flat(self._gram_rows), self.row_dim, **common)
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
        k = frontdoor.integer(k, "k", minimum=1, maximum=self.row_dim)
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
        eps: float | None = None,
        *,
        eps_rel: float | None = None,
        objective: str = "l2",
        layer_weights=None,
        method: str = "auto",
        num_probes: int = 64,
        tol: float | None = None,
    ) -> ExpectedI2F:
        """``E_δ ‖Δ‖²`` of the predicted shift for Gaussian gradient noise ``δ ~ N(0, σ²I_P)``.

        Equals ``σ² Σ_i λ_i/(λ_i+ε)²`` over the eigenvalues of ``JᵀJ`` for the L2 objective without
        weights (``σ² Σ 1/λ_i`` over the non-zero ones when ``ε = 0``), and in general
        ``σ² Σ_i (VᵀCV)_ii/(λ_i+ε)²`` with ``C`` the noise covariance of :class:`LinearisedAttack`.

        Args:
            sigma: noise standard deviation ``σ >= 0``.
            eps, eps_rel, objective, layer_weights: as in :meth:`i2f`.
            method: ``"auto"`` (the spectral route up to ``SPECTRAL_MAX_DIM`` elements per system
                when it fits in memory, else Hutchinson), ``"spectral"`` (exact, float64) or ``"hutchinson"``: ``num_probes``
                Rademacher probes ``z``, each one damped solve ``s = (AᵀA+εI)⁻¹z`` (LSQR would need a
                parameter-space right-hand side, so this uses CG) and the estimate ``sᵀCs``.
            num_probes: Hutchinson probes (>= 2). tol: CG tolerance of the Hutchinson solves.

        Raises:
            ValueError for bad arguments, and for ``eps = 0`` with Hutchinson (``AᵀA`` is singular
            when ``P < D``).
        """
        sigma = frontdoor.number(sigma, "sigma", minimum=0)
        eps, eps_rel = damping_arguments(eps, eps_rel)
        if method not in ("auto", "spectral", "hutchinson"):
            raise ValueError(f"method must be 'auto', 'spectral' or 'hutchinson', got {method!r}")
        if method == "auto":
            # exact beats a noisy estimate at any damping: spectral wherever it fits
            chosen = self._choose_method("auto", 0.0, self._system_key(objective, layer_weights), SPECTRAL_MIN_SOLVES)
            method = "spectral" if chosen == "spectral" else "hutchinson"
        n, D = self._rows_per_delta, self.row_dim
        vshape = (n,) if self.per_sample else ()
        if method == "spectral":
            system, key = self._system(objective, layer_weights, float64=True)
            damping = self._damping(eps, eps_rel, system, key, "spectral")
            spec = self._spectrum(system, key)
            lam, V = spec.eigenvalues, spec.eigenvectors
            if system.weights is None:
                energy = lam.clamp_min(0)  # C = AᵀA: (VᵀCV)_ii = λ_i
            else:
                energy = self._project_covariance(system, V)
            denom = lam + damping.unsqueeze(1)
            cutoff = lam[:, -1:] * D * torch.finfo(torch.float64).eps
            terms = torch.where(denom > cutoff, energy / denom.clamp_min(torch.finfo(torch.float64).tiny) ** 2, 0)
            value = (sigma**2 * terms.sum(dim=1)).to(self._dtype)
            return ExpectedI2F(
                value.reshape(vshape), (value / D).sqrt().reshape(vshape), torch.zeros_like(value).reshape(vshape),
                "spectral", 0, damping.to(self._dtype).reshape(vshape),
            )
        if eps == 0:
            raise ValueError("eps must be > 0 for the Hutchinson estimate (AᵀA is singular when P < D)")
        num_probes = frontdoor.integer(num_probes, "num_probes", minimum=2)
        system, key = self._system(objective, layer_weights)
        damping = self._damping(eps, eps_rel, system, key, "cg")
        z = random_on(self.generator, self._device, torch.randint, 0, 2, (num_probes * n, *self._row_shape))
        z = (2 * z - 1).to(self._dtype)
        s = cg(system.normal, z, damping.repeat(num_probes).to(self._dtype), tol=tol).x
        est = system.noise_energy(s).reshape(num_probes, n).to(torch.float64)
        value = (sigma**2 * est.mean(0)).to(self._dtype)
        stderr = (sigma**2 * est.std(0) / math.sqrt(num_probes)).to(self._dtype)
        return ExpectedI2F(
            value.reshape(vshape), (value / D).sqrt().reshape(vshape), stderr.reshape(vshape), "hutchinson",
            num_probes, damping.to(self._dtype).reshape(vshape),
        )

    def _project_covariance(self, system: LinearisedAttack, V: torch.Tensor) -> torch.Tensor:
        """``(VᵀCV)_ii`` per system, ``(n, D)``: the noise energy along each eigenvector."""
        n, D = V.shape[0], V.shape[1]
        energy = torch.empty(n, D, dtype=V.dtype, device=V.device)
        for start in range(0, D, SPECTRAL_BLOCK):
            cols = V[:, :, start : start + SPECTRAL_BLOCK].permute(2, 0, 1)  # (m, n, D): eigenvector j of every system
            energy[:, start : start + cols.shape[0]] = system.noise_energy(cols.reshape(-1, *self._row_shape)).reshape(
                cols.shape[0], n
            ).T
        return energy


# --------------------------------------------------------------------------- functional API
def i2f(model, x, y, delta, eps: float | None = None, *, loss_fn=None, per_sample=False, strategy=DEFAULT_STRATEGY, **kw):
    """The predicted shift and I²F = ``‖(JᵀJ + εI)⁻¹ Jᵀ δ‖``; see :meth:`InversionInfluence.i2f` for
    ``delta``, the damping (calibrated by default), ``objective``, ``layer_weights`` and ``method``."""
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


def expected_i2f_sq(model, x, y, sigma, eps: float | None = None, *, loss_fn=None, per_sample=False, **kw):
    """``E‖Δ‖²`` for ``δ ~ N(0, σ²I)``; see :meth:`InversionInfluence.expected_i2f_sq`."""
    inf = InversionInfluence(model, x, y, loss_fn, per_sample=per_sample)
    return inf.expected_i2f_sq(sigma, eps, **kw)
