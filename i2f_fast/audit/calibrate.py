"""Noise calibration: the smallest noise that protects a dataset, and the risk of a DP budget.

:func:`calibrate` answers "how much noise do I need?": the smallest Gaussian variance, or DP-SGD
noise multiplier ``z`` for a given clip C, such that the chosen quantile of the per-sample
predicted attack RMSE reaches a target (quantile 0.05: 95 % of the samples are reconstructed
with at least that error). :func:`risk_of_budget` answers the reverse question for a DP budget a
user already has: Opacus's ``get_noise_multiplier`` gives ``z`` for ``(ε, δ, q, T)``, and the audit
gives the predicted risk of that configuration.

**One audit pass gives every noise level.** The prediction is the linearised attack ``Δ = Mδ``
(:mod:`~i2f_fast.audit.risk`), so with δ = b + s·ξ (b deterministic, ξ Gaussian of unit scale)::

    rmse_n(s)² = bias_rmse_n² + s² · noise_rmse_n(1)²

per sample n, with s the noise std (Gaussian: σ, the square root of the variance; DP: ``z``, the
std being ``z·C``). :func:`calibrate` therefore runs :func:`~i2f_fast.audit.audit` once at unit
noise and solves the quantile equation in closed form over s. It checks that claim twice at the
calibrated level: it re-predicts the most exposed samples there (``repredicted_rmse`` next to the
closed form's ``predicted_rmse``), and it runs the real attack on them
(:func:`~i2f_fast.validate.validate`: the attack started at x, converged, and the global attack from
random starts) with noise drawn at that level, so the number a user acts on comes with the attack
that checks it. This holds in the attack's linear regime (small noise against the gradient); where
the attack leaves it, the check shows it.

Per-sample setting only (the paper's: each sample's gradient inverted on its own); DP there is the
conservative per-sample risk of :mod:`~i2f_fast.audit.risk` (noise std ``z·C``, the other samples of
the batch ignored). Opacus is the optional extra ``i2f_fast[dp]``, needed only to turn ``z`` into ε.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .. import frontdoor
from ..influence import DEFAULT_EPS_REL
from ..validate import validate
from .accounting import TrainingConfig, epsilon_spent, noise_multiplier_for
from .core import as_samples, audit
from .risk import Defense, draw_delta

CALIBRATED_DEFENSES = ("gaussian", "dp")
"""The defenses :func:`calibrate` sets the noise of."""

MAX_NOISE = {"gaussian": 1.0, "dp": 100.0}
"""Default upper end of the noise searched: Gaussian variance 1 (std 1 per gradient entry), DP noise
multiplier 100. Far beyond both the linear regime ends; a target not reached there is refused."""

DEFAULT_QUANTILES = (0.05, 0.25, 0.5)
"""Quantiles of the predicted RMSE :func:`risk_of_budget` reports."""

_BISECTION_STEPS = 200


@dataclass
class AttackCheck:
    """The real attack at the calibrated noise on one of the most exposed samples.

    Attributes:
        index, label: the sample (index into the data).
        predicted_rmse: the expected RMSE from the unit-noise pass, scaled to the calibrated noise.
        repredicted_rmse: the expected RMSE predicted afresh at the calibrated noise.
        draw_predicted_rmse: the prediction for the one noise draw the attacks invert.
        local_rmse: the attack started at x and run to convergence (the optimum the prediction describes).
        global_rmse: the attack from random starts (what an attacker gets).
    """

    index: int
    label: int
    predicted_rmse: float
    repredicted_rmse: float
    draw_predicted_rmse: float
    local_rmse: float
    global_rmse: float


@dataclass
class Calibration:
    """Result of :func:`calibrate`.

    Attributes:
        defense: the calibrated defense's spec (``gaussian:VAR`` or ``dp:clip=C,noise=Z,batch=B``).
        kind: ``"gaussian"`` or ``"dp"``.
        noise: the calibrated variance (gaussian) or noise multiplier z (dp); 0 when the target is met without noise.
        noise_std: std of the noise on the attacked gradient (σ, or z·C).
        target_rmse, quantile: the target and the quantile it applies to.
        quantile_rmse: the quantile of the predicted RMSE at ``noise`` (≥ ``target_rmse``).
        met_without_noise: the target is met at zero noise (the DP clipping bias alone, or a target of 0).
        epsilon: the ε the DP run spends at ``noise`` (inf for z = 0); None for gaussian.
        training: the DP training configuration (sample rate, steps, δ, accountant); None for gaussian.
        objective: the attack's objective; eps_rel: the damping relative to λ_max.
        exact: every per-sample expectation was exact (spectral route).
        table: the unit-noise audit (pyarrow Table, one row per sample) every level is computed from.
        checks: :class:`AttackCheck` per checked sample (most exposed first).
    """

    defense: str
    kind: str
    noise: float
    noise_std: float
    target_rmse: float
    quantile: float
    quantile_rmse: float
    met_without_noise: bool
    epsilon: float | None
    training: TrainingConfig | None
    objective: str
    eps_rel: float
    exact: bool
    table: object
    checks: list = field(default_factory=list)

    def rmse_at(self, noise_std: float) -> torch.Tensor:
        """``(n,)`` per-sample predicted RMSE at noise std ``noise_std`` (σ, or z for dp), closed form."""
        bias, unit = _unit_columns(self.table)
        return (bias**2 + noise_std**2 * unit**2).sqrt()


@dataclass
class BudgetRisk:
    """Result of :func:`risk_of_budget`.

    Attributes:
        defense: the DP defense spec at the noise multiplier the budget allows.
        noise_multiplier: z from Opacus's ``get_noise_multiplier``.
        epsilon: the ε that z actually spends (≤ the budget, within Opacus's tolerance).
        training: the training configuration.
        quantiles: ``{q: predicted RMSE quantile}``.
        table: the audit at that defense (pyarrow Table, one row per sample).
    """

    defense: str
    noise_multiplier: float
    epsilon: float
    training: TrainingConfig
    quantiles: dict
    table: object


def calibrate(
    model: nn.Module,
    data,
    target_rmse: float,
    quantile: float = 0.05,
    defense: str = "gaussian",
    *,
    clip: float | None = None,
    batch: int = 1,
    sample_rate: float | None = None,
    steps: int | None = None,
    delta: float | None = None,
    accountant: str = "rdp",
    objective: str = "l2",
    eps_rel: float | None = None,
    max_noise: float | None = None,
    check_samples: int = 3,
    restarts: int = 2,
    iterations: int = 400,
    local_iterations: int = 2000,
    seed: int = 0,
    progress: bool = False,
) -> Calibration:
    """The smallest noise such that the ``quantile`` of per-sample predicted RMSE reaches ``target_rmse``.

    One audit pass at unit noise, the closed form over the noise level, a re-prediction and the real
    attack on the ``check_samples`` most exposed samples at the calibrated level (module docstring).

    Args:
        model: the attacked model, used as given (``eval()`` mode for BatchNorm / Dropout); not modified.
        data: an :class:`~i2f_fast.data.ImageBatch` or a torch Dataset of ``(image (C, H, W), label)``.
        target_rmse: the predicted RMSE per element (normalised space) to reach, > 0.
        quantile: which quantile of the per-sample RMSE must reach it, in [0, 1) (0.05: all but the
            5 % most exposed samples; 0: every sample).
        defense: ``"gaussian"`` (calibrates the variance) or ``"dp"`` (the noise multiplier z).
        clip: DP's per-sample clipping norm C > 0 (dp only, required).
        batch: DP's batch size B (recorded in the spec; the per-sample risk does not depend on it).
        sample_rate, steps, delta: the DP training run ε is reported for (dp only, all required):
            Poisson sample rate q in (0, 1], steps T ≥ 1, δ in (0, 1).
        accountant: Opacus accountant, ``"rdp"`` (default) or ``"prv"``.
        objective: the attack's objective, ``"l2"`` (DLG) or ``"cosine"`` (GS).
        eps_rel: damping relative to each sample's λ_max (default the calibrated 1e-8).
        max_noise: upper end of the search (variance, or z); default :data:`MAX_NOISE`.
        check_samples: how many of the most exposed samples the attack checks (0: none).
        restarts, iterations, local_iterations: the check's attacks (:func:`~i2f_fast.validate.validate`).
        seed: seeds the audit and the check's noise draws and random starts.
        progress: progress bars.

    Returns:
        :class:`Calibration`.

    Raises:
        ValueError naming the argument: a bad target, quantile, defense, clip or DP configuration; a
        target that no noise up to ``max_noise`` reaches (with the RMSE reached there).
        ImportError: ``defense="dp"`` without Opacus (names the extra ``i2f_fast[dp]``).
    """
    target_rmse = frontdoor.number(target_rmse, "target_rmse", positive=True)
    quantile = frontdoor.number(quantile, "quantile", minimum=0)
    if not quantile < 1:
        raise ValueError(f"quantile must be < 1 (the fraction of samples allowed below the target), got {quantile!r}")
    kind = frontdoor.choice(defense, "defense", CALIBRATED_DEFENSES)
    unit, training = _unit_defense(kind, clip, batch, sample_rate, steps, delta, accountant)
    max_noise = frontdoor.number(MAX_NOISE[kind] if max_noise is None else max_noise, "max_noise", positive=True)
    check_samples = frontdoor.integer(check_samples, "check_samples", minimum=0)
    eps_rel = DEFAULT_EPS_REL if eps_rel is None else frontdoor.number(eps_rel, "eps_rel", positive=True)
    seed = frontdoor.integer(seed, "seed")

    result = _audit(model, data, unit, objective, eps_rel, seed, progress)
    bias, unit_rmse = _unit_columns(result.table)
    max_std = math.sqrt(max_noise) if kind == "gaussian" else max_noise
    std, reached = _solve(bias, unit_rmse, target_rmse, quantile, max_std)
    if std is None:
        what = "variance" if kind == "gaussian" else "noise multiplier"
        raise ValueError(
            f"target_rmse={target_rmse:g} is out of reach: at the largest {what} searched (max_noise={max_noise:g}) the "
            f"{quantile:g} quantile of the predicted RMSE is {reached:.4g}; lower target_rmse or raise max_noise "
            "(far outside the attack's linear regime the prediction only says 'large')"
        )
    noise = std**2 if kind == "gaussian" else std
    calibrated = unit.with_noise(noise)
    calibration = Calibration(
        defense=calibrated.spec, kind=kind, noise=noise, noise_std=calibrated.noise_std(per_sample=True),
        target_rmse=target_rmse, quantile=quantile, quantile_rmse=reached, met_without_noise=std == 0,
        epsilon=None if training is None else epsilon_spent(noise, training), training=training,
        objective=objective, eps_rel=eps_rel, exact=bool(all(result.table.column("exact").to_pylist())),
        table=result.table,
    )
    if check_samples:
        calibration.checks = _check(model, data, calibration, calibrated, check_samples, restarts, iterations,
                                    local_iterations, seed, progress)
    return calibration


def risk_of_budget(
    model: nn.Module,
    data,
    epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    clip: float,
    batch: int = 1,
    *,
    accountant: str = "rdp",
    quantiles=DEFAULT_QUANTILES,
    objective: str = "l2",
    eps_rel: float | None = None,
    seed: int = 0,
    progress: bool = False,
) -> BudgetRisk:
    """The predicted reconstruction risk of a DP-SGD configuration given by its budget.

    ``z = get_noise_multiplier(ε, δ, q, T)`` (Opacus), then the audit of ``dp:clip=C,noise=z,batch=B``.

    Args:
        model, data: as :func:`calibrate`.
        epsilon, delta: the (ε, δ) budget: ε > 0, δ in (0, 1).
        sample_rate, steps: Poisson sample rate q in (0, 1] and number of steps T ≥ 1.
        clip: per-sample clipping norm C > 0; batch: batch size B ≥ 1.
        accountant: ``"rdp"`` or ``"prv"``.
        quantiles: the quantiles of the per-sample RMSE to report, each in [0, 1].
        objective, eps_rel, seed, progress: as :func:`calibrate`.

    Raises:
        ValueError naming the argument: bad values, or a budget Opacus cannot meet (``epsilon``).
        ImportError: Opacus missing (names the extra ``i2f_fast[dp]``).
    """
    unit, training = _unit_defense("dp", clip, batch, sample_rate, steps, delta, accountant)
    quantiles = [frontdoor.number(q, "quantiles", minimum=0, maximum=1) for q in quantiles]
    if not quantiles:
        raise ValueError("quantiles must hold at least one quantile")
    eps_rel = DEFAULT_EPS_REL if eps_rel is None else frontdoor.number(eps_rel, "eps_rel", positive=True)
    z = noise_multiplier_for(epsilon, training)
    dp = unit.with_noise(z)
    result = _audit(model, data, dp, objective, eps_rel, seed, progress)
    rmse = torch.tensor(result.table.column("rmse").to_pylist(), dtype=torch.float64)
    values = torch.quantile(rmse, torch.tensor(quantiles, dtype=torch.float64))
    return BudgetRisk(dp.spec, z, epsilon_spent(z, training), training, dict(zip(quantiles, values.tolist())), result.table)


# ------------------------------------------------------------------------------ the pieces
def _unit_defense(kind, clip, batch, sample_rate, steps, delta, accountant) -> tuple[Defense, TrainingConfig | None]:
    """The defense at unit noise, and the DP training configuration (None for gaussian)."""
    dp_only = dict(clip=clip, sample_rate=sample_rate, steps=steps, delta=delta)
    if kind == "gaussian":
        given = [name for name, value in dp_only.items() if value is not None] + (["batch"] if batch != 1 else [])
        if given:
            raise ValueError(f"{', '.join(given)} only apply to defense='dp', not 'gaussian'")
        return Defense("gaussian", var=1.0), None
    missing = [name for name, value in dp_only.items() if value is None]
    if missing:
        raise ValueError(f"defense='dp' needs {', '.join(missing)} (the clip norm and the training run ε is spent over)")
    clip = frontdoor.number(clip, "clip", positive=True)
    batch = frontdoor.positive_int(batch, "batch")
    return Defense("dp", clip=clip, noise_multiplier=1.0, batch=batch), TrainingConfig(sample_rate, steps, delta, accountant)


def _audit(model, data, defense: Defense, objective: str, eps_rel: float, seed: int, progress: bool):
    """One per-sample audit pass (:func:`i2f_fast.audit.audit`)."""
    return audit(model, data, defense.spec, objective=objective, per_sample=True, eps_rel=eps_rel, seed=seed,
                       progress=progress)


def _unit_columns(table) -> tuple[torch.Tensor, torch.Tensor]:
    """``(bias_rmse, noise_rmse)`` per sample, ``(n,)`` float64 each, from a unit-noise audit table."""
    return tuple(torch.tensor(table.column(c).to_pylist(), dtype=torch.float64) for c in ("bias_rmse", "noise_rmse"))


def _quantile_rmse(bias: torch.Tensor, unit: torch.Tensor, std: float, quantile: float) -> float:
    """The ``quantile`` (linear interpolation, as ``numpy.quantile``) of ``√(bias² + std²·unit²)`` over samples."""
    return float(torch.quantile((bias**2 + std**2 * unit**2).sqrt(), quantile))


def _solve(bias, unit, target: float, quantile: float, max_std: float) -> tuple[float | None, float]:
    """Smallest noise std in ``[0, max_std]`` whose RMSE quantile reaches ``target`` (bisection: the quantile
    is continuous and increasing in the std), and the quantile reached; ``(None, reached at max_std)`` when none."""
    def at(std: float) -> float:
        return _quantile_rmse(bias, unit, std, quantile)

    if at(0.0) >= target:
        return 0.0, at(0.0)
    if at(max_std) < target:
        return None, at(max_std)
    low, high = 0.0, max_std
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        low, high = (middle, high) if at(middle) < target else (low, middle)
    return high, at(high)


def _subset(data, indices: list[int]):
    if hasattr(data, "subset"):
        return data.subset(indices)
    return torch.utils.data.Subset(data, indices)


def _check(model, data, calibration: Calibration, calibrated: Defense, count: int, restarts: int, iterations: int,
           local_iterations: int, seed: int, progress: bool) -> list[AttackCheck]:
    """Re-predict and attack the ``count`` most exposed samples at the calibrated noise."""
    table = calibration.table
    std = math.sqrt(calibration.noise) if calibration.kind == "gaussian" else calibration.noise
    scaled = calibration.rmse_at(std)
    order = torch.argsort(scaled)[:count].tolist()
    indices = [int(table.column("index")[i].as_py()) for i in order]
    recheck = _audit(model, _subset(data, indices), calibrated, calibration.objective, calibration.eps_rel, seed, progress)
    like = next(model.parameters())
    samples = as_samples(data, model, like.dtype)  # checked as the audit checks it
    index = torch.tensor(indices, dtype=torch.int64)
    x, y = samples.x[index].to(like.device), samples.y[index].to(like.device)
    generator = torch.Generator().manual_seed(seed)
    deltas = torch.stack([draw_delta(calibrated, model, x[k : k + 1], y[k : k + 1], calibration.objective, generator)
                          for k in range(len(indices))])
    attack = validate(model, x, y, deltas, calibration.objective, restarts=restarts, iterations=iterations,
                      local_iterations=local_iterations, eps_rel=calibration.eps_rel, generator=generator,
                      progress=progress)
    repredicted = dict(zip(recheck.table.column("index").to_pylist(), recheck.table.column("rmse").to_pylist()))
    return [
        AttackCheck(
            index=indices[k], label=int(y[k]), predicted_rmse=float(scaled[order[k]]), repredicted_rmse=repredicted[k],
            draw_predicted_rmse=float(attack.predicted_rmse[k]), local_rmse=float(attack.local_rmse[k]),
            global_rmse=float(attack.global_rmse[k]),
        )
        for k in range(len(indices))
    ]
