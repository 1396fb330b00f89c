"""The prediction next to the attack it predicts: the attack's own optimum, and the attack itself.

:meth:`InversionInfluence.i2f <i2f_fast.influence.InversionInfluence.i2f>` predicts where a
gradient-inversion attack lands when the shared gradient ``t = g + δ`` is perturbed: at
``x̂ = x + Δ`` with ``Δ`` the attack's optimality condition linearised at the private input
(README.md, "What I²F predicts, and how well"). :func:`validate` checks that claim per sample with two attacks
that minimise the same objective as :func:`~i2f_fast.attack.invert` (``"l2"``: DLG, ``"cosine"``: GS):

* the **local attack** starts at the true ``x`` and runs L-BFGS with a strong-Wolfe line search to
  convergence (``invert(optimizer="lbfgs", line_search="strong_wolfe", grad_tol=...)``), without
  TV, box, sign or step schedule: it finds the optimum the prediction describes. Its shift
  ``x̂ − x`` is compared with the predicted ``Δ`` in length (``local_ratio``) and direction
  (``local_cosine``). In the linear regime (small ``δ``) both are 1 up to the optimiser's
  tolerance; as ``δ`` grows the second-order terms the linearisation drops take over.
* the **global attack** is :func:`~i2f_fast.attack.invert` itself, with its preset (Adam; signed
  with step decay for GS; the presets' TV weight is 0) from ``restarts`` random starts, with the
  box ``bounds`` only when given (reported in the result). Its RMSE is what a real attacker gets:
  about the prediction where it finds the right optimum and runs long enough, above it otherwise.

Everything runs in float64 on copies: the caller's model and tensors are left untouched.
Shapes: ``N`` samples (each its own batch of one, the paper's setting), ``K`` perturbations per
sample, ``P`` trainable parameters, ``D`` elements of one sample.
"""
from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from . import frontdoor
from .attack import invert
from .flat import FlatLayout
from .influence import InversionInfluence

OBJECTIVE_ATTACKS = {"l2": "dlg", "cosine": "gs"}
"""Prediction objective → the :func:`~i2f_fast.attack.invert` attack that minimises it."""

LIMIT_EPS_REL = 1e-10
"""Default damping of :func:`validate`, relative to λ_max: the limit ε → 0, i.e. the converged
attacker that the local attack is (README.md, "Which damping")."""

RATIO_TOLERANCE = 0.10
MIN_COSINE = 0.98
"""The linear regime: local/predicted within ±10 % and direction cosine ≥ 0.98 (see :func:`linear_regime`)."""


@dataclass
class ValidationResult:
    """Result of :func:`validate`; every tensor is on the CPU, ``(N,)``, or ``(K, N)`` for ``(K, N, P)`` deltas.

    Attributes:
        objective: ``"l2"`` or ``"cosine"``; ``attack``: the :func:`invert` attack run (``"dlg"``/``"gs"``).
        method: the solver of the prediction (``"spectral"``, ``"lsqr"``, ...).
        eps: absolute damping of the prediction per system (``eps_rel · λ_max``).
        predicted, predicted_rmse: ``‖Δ‖`` and ``‖Δ‖/√D`` of the predicted shift.
        local, local_rmse: ``‖x̂ − x‖`` and ``‖x̂ − x‖/√D`` of the local attack (started at ``x``).
        local_ratio: ``local / predicted``.
        local_cosine: cosine between ``x̂ − x`` and the predicted ``Δ``.
        local_iterations: L-BFGS iterations run (int64).
        local_converged: the local attack stopped before its iteration cap (its gradient fell to
            ``grad_tol`` of the start, or a step could not move it: converged to the float64 floor).
        global_rmse: RMSE of the global attack's best restart (smallest matching loss).
        global_ratio: ``global_rmse / predicted_rmse``.
        global_matching_loss: the best restart's final matching loss.
        bounds: whether the global attack projected onto the box ``bounds``.
        seconds: wall time of ``"prediction"``, ``"local"`` and ``"global"`` (all systems).
    """

    objective: str
    attack: str
    method: str
    eps: torch.Tensor
    predicted: torch.Tensor
    predicted_rmse: torch.Tensor
    local: torch.Tensor
    local_rmse: torch.Tensor
    local_ratio: torch.Tensor
    local_cosine: torch.Tensor
    local_iterations: torch.Tensor
    local_converged: torch.Tensor
    global_rmse: torch.Tensor
    global_ratio: torch.Tensor
    global_matching_loss: torch.Tensor
    bounds: bool
    seconds: dict


@dataclass
class LinearRegime:
    """Where the local attack stops agreeing with the prediction, over increasing noise levels.

    Attributes:
        levels: ``(K,)`` the noise levels, ascending.
        inside: ``(K,)`` fraction of samples inside the linear regime at each level
            (``|local_ratio − 1| ≤ ratio_tolerance`` and ``local_cosine ≥ min_cosine``).
        last_inside: the largest level up to which every sample at every level is inside (None
            when the smallest level already is not).
        first_outside: the smallest level with a sample outside (None when all are inside).
    """

    levels: list
    inside: list
    last_inside: float | None
    first_outside: float | None


def _as_deltas(delta, shapes, N: int) -> tuple[torch.Tensor, bool]:
    """``delta`` → ``(K, N, P)`` float64 and whether K was given; ValueError/TypeError naming ``delta``."""
    P = sum(math.prod(s) for s in shapes)
    if isinstance(delta, (list, tuple)):
        delta = frontdoor.parameter_vectors(delta, FlatLayout(shapes), "delta")
    if not isinstance(delta, torch.Tensor) or not delta.is_floating_point():
        raise TypeError("delta must be a floating-point tensor (P,), (N, P), (K, N, P) or a list of parameter-shaped tensors")
    if delta.dim() == 1 and delta.shape == (P,):
        deltas, batched = delta.expand(1, N, P), False
    elif delta.dim() == 2 and delta.shape == (N, P):
        deltas, batched = delta.unsqueeze(0), False
    elif delta.dim() == 3 and delta.shape[1:] == (N, P) and delta.shape[0] > 0:
        deltas, batched = delta, True
    else:
        raise ValueError(f"delta must have shape ({P},), ({N}, {P}) or (K, {N}, {P}) (P parameters, N samples), "
                         f"got {tuple(delta.shape)}")
    if not torch.isfinite(deltas).all():
        raise ValueError("delta contains NaN or Inf")
    return deltas.detach().to(torch.float64), batched


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of two tensors as flat vectors (0 when either is 0)."""
    a, b = a.reshape(-1), b.reshape(-1)
    denom = a.norm() * b.norm()
    return float(a @ b / denom) if denom > 0 else 0.0


def validate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    delta,
    objective: str = "l2",
    *,
    restarts: int = 2,
    iterations: int = 400,
    local_iterations: int = 2000,
    grad_tol: float = 1e-6,
    eps_rel: float = LIMIT_EPS_REL,
    layer_weights: Sequence[float] | None = None,
    method: str = "auto",
    bounds: tuple | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> ValidationResult:
    """Predict each sample's reconstruction shift under ``δ`` and run the attacks that check it.

    For every sample ``n`` (a batch of one) and perturbation ``k``: the shared gradient is
    ``t = ∇_θL(x_n, y_n) + δ[k, n]``; the prediction is ``InversionInfluence(...).i2f(δ, eps_rel=...,
    objective=..., layer_weights=...)``; the local and the global attack (module docstring) attack
    ``t`` with the labels ``y_n`` known.

    Args:
        model: the attacked model, used as given (``eval()`` mode for BatchNorm / Dropout); a float64
            copy runs everything.
        x: ``(N, *input_shape)`` private inputs (e.g. ``(N, C, H, W)`` normalised images).
        y: ``(N,)`` int64 labels.
        delta: the gradient perturbation: flat ``(P,)`` or a list of parameter-shaped tensors (the
            same for every sample), ``(N, P)`` (one per sample) or ``(K, N, P)`` (K per sample).
        objective: ``"l2"`` (checked with DLG) or ``"cosine"`` (GS).
        restarts: random starts of the global attack (≥ 1), run together; the best is reported.
        iterations: iterations of the global attack.
        local_iterations: cap on the local attack's L-BFGS iterations.
        grad_tol: the local attack stops once its largest gradient entry is ``grad_tol`` times the
            one at ``x`` (or when no step moves it).
        eps_rel: damping of the prediction relative to each sample's λ_max (> 0); the default
            :data:`LIMIT_EPS_REL` is the converged attacker's limit ε → 0.
        layer_weights: the attack's per-layer weights (one ``>= 0`` per trainable parameter tensor),
            used by the prediction and both attacks.
        method: the prediction's solver (:meth:`InversionInfluence.i2f
            <i2f_fast.influence.InversionInfluence.i2f>`: ``"auto"``, ``"spectral"``, ``"lsqr"``, ...).
        bounds: ``(lower, upper)`` box of the global attack (e.g. ``ImageBatch.pixel_bounds``); None:
            no box. The local attack never uses one (the optimum is inside the box).
        generator: ``torch.Generator`` for the global attack's random starts.
        progress: a progress bar on stderr over the ``K·N`` systems.

    Returns:
        :class:`ValidationResult`.

    Raises:
        TypeError / ValueError naming the argument: ``model`` not a module; unknown ``objective``;
        ``restarts`` / ``iterations`` / ``local_iterations`` < 1; negative ``grad_tol``; ``delta``
        of the wrong shape or not finite; bad ``x``, ``y``, ``eps_rel``, ``layer_weights``, ``method``
        or ``bounds`` (checked by :class:`InversionInfluence` and :func:`invert`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if objective not in OBJECTIVE_ATTACKS:
        raise ValueError(f"objective must be one of {tuple(OBJECTIVE_ATTACKS)}, got {objective!r}")
    restarts = frontdoor.positive_int(restarts, "restarts")
    iterations = frontdoor.positive_int(iterations, "iterations")
    local_iterations = frontdoor.positive_int(local_iterations, "local_iterations")
    grad_tol = frontdoor.number(grad_tol, "grad_tol", minimum=0)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError("x must be a floating-point tensor (N, *input_shape)")
    model64 = copy.deepcopy(model).to(torch.float64)
    x64 = x.detach().to(torch.float64)
    shapes = [p.shape for p in model64.parameters() if p.requires_grad]
    deltas, batched = _as_deltas(delta, shapes, x.shape[0])
    deltas = deltas.to(x64.device)

    start = time.perf_counter()
    influence = InversionInfluence(model64, x64, y, per_sample=True, generator=generator)
    pred = influence.i2f(deltas, eps_rel=eps_rel, objective=objective, layer_weights=layer_weights, method=method)
    clean = influence.jacobian.gradient.detach()  # (N, P): each sample's own gradient
    predicted = pred.value.detach().to(device="cpu", dtype=torch.float64)  # (K, N)
    seconds = {"prediction": time.perf_counter() - start, "local": 0.0, "global": 0.0}

    K, N = deltas.shape[:2]
    attack = OBJECTIVE_ATTACKS[objective]
    local = torch.zeros(K, N, dtype=torch.float64)
    cosine, global_rmse, global_loss = torch.zeros_like(local), torch.zeros_like(local), torch.zeros_like(local)
    local_its = torch.zeros(K, N, dtype=torch.int64)
    from tqdm.auto import tqdm

    bar = tqdm(total=K * N, desc=f"validate ({attack})", unit="system", file=sys.stderr, leave=False, disable=not progress)
    common = dict(attack=attack, layer_weights=layer_weights, progress=False)
    for k in range(K):
        for n in range(N):
            xn, yn, target = x64[n : n + 1], y[n : n + 1], clean[n] + deltas[k, n]
            t0 = time.perf_counter()
            found = invert(model64, target, yn, tuple(xn.shape), iterations=iterations, restarts=restarts,
                           bounds=bounds, generator=generator, **common)
            t1 = time.perf_counter()
            near = invert(model64, target, yn, tuple(xn.shape), iterations=local_iterations, optimizer="lbfgs",
                          line_search="strong_wolfe", grad_tol=grad_tol, signed=False, decay=False,
                          init=xn.unsqueeze(0), **common)
            seconds["global"] += t1 - t0
            seconds["local"] += time.perf_counter() - t1
            shift = near.x - xn
            local[k, n] = shift.norm()
            cosine[k, n] = _cosine(shift, pred.shift[k, n])
            local_its[k, n] = near.iterations
            global_rmse[k, n] = (found.x - xn).norm() / math.sqrt(xn.numel())
            global_loss[k, n] = found.loss
            bar.set_postfix_str(f"local/predicted {local[k, n] / predicted[k, n]:.3f}")
            bar.update()
    bar.close()

    def shaped(t: torch.Tensor) -> torch.Tensor:
        return t if batched else t[0]

    D = x[0].numel()
    return ValidationResult(
        objective=objective,
        attack=attack,
        method=pred.method,
        eps=shaped(pred.eps.cpu()),
        predicted=shaped(predicted),
        predicted_rmse=shaped(predicted / math.sqrt(D)),
        local=shaped(local),
        local_rmse=shaped(local / math.sqrt(D)),
        local_ratio=shaped(local / predicted),
        local_cosine=shaped(cosine),
        local_iterations=shaped(local_its),
        local_converged=shaped(local_its < local_iterations),
        global_rmse=shaped(global_rmse),
        global_ratio=shaped(global_rmse * math.sqrt(D) / predicted),
        global_matching_loss=shaped(global_loss),
        bounds=bounds is not None,
        seconds=seconds,
    )


def linear_regime(
    levels: Sequence[float],
    result: ValidationResult,
    ratio_tolerance: float = RATIO_TOLERANCE,
    min_cosine: float = MIN_COSINE,
) -> LinearRegime:
    """Where the linear regime ends, from a :func:`validate` run over noise levels.

    Args:
        levels: ``(K,)`` ascending noise levels (e.g. variances), one per row of a ``(K, N, P)`` run.
        result: the :class:`ValidationResult` of that run (tensors ``(K, N)``).
        ratio_tolerance, min_cosine: a sample is inside when ``|local_ratio − 1| ≤ ratio_tolerance``
            and ``local_cosine ≥ min_cosine``.

    Raises:
        ValueError: ``levels`` not ascending or not matching the result's K.
    """
    levels = [float(v) for v in levels]
    ratio, cos = result.local_ratio, result.local_cosine
    if ratio.dim() != 2 or len(levels) != ratio.shape[0]:
        raise ValueError(f"levels must hold one level per perturbation row ({tuple(ratio.shape)[:1]}), got {len(levels)}")
    if any(b <= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"levels must be strictly ascending, got {levels}")
    ok = ((ratio - 1).abs() <= ratio_tolerance) & (cos >= min_cosine)  # (K, N)
    inside = ok.double().mean(dim=1).tolist()
    outside = [lv for lv, row in zip(levels, ok) if not row.all()]
    first_outside = outside[0] if outside else None
    below = [lv for lv in levels if first_outside is None or lv < first_outside]
    return LinearRegime(levels, inside, below[-1] if below else None, first_outside)
