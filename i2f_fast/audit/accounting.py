"""DP-SGD privacy accounting through Opacus: noise multiplier ↔ (ε, δ) for a training configuration.

DP-SGD (Abadi et al. 2016, as Opacus runs it) clips each sample's gradient to C, adds Gaussian noise
of std ``z·C`` to the clipped sum of a Poisson-sampled batch (sample rate ``q``) and repeats for
``T`` steps. Opacus's accountants turn ``(z, q, T)`` into the ``ε`` of (ε, δ)-DP
(:func:`epsilon_spent`) and, by bisection on ``z``, a budget back into the smallest noise
multiplier that meets it (:func:`noise_multiplier_for`, Opacus's ``get_noise_multiplier``). The
clip ``C`` and the batch size do not enter ``ε``; they set the noise the attacker sees
(:class:`~i2f_fast.audit.risk.Defense`).

Opacus is an optional dependency (``pip install i2f_fast[dp]``), imported on first use.

Accountants: ``"rdp"`` (Rényi DP, Mironov 2017; Opacus's default) and ``"prv"`` (privacy random
variables, Gopi et al. 2021: a tighter ε, slower).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .. import frontdoor

ACCOUNTANTS = ("rdp", "prv")
"""Opacus accountants :func:`epsilon_spent` and :func:`noise_multiplier_for` accept."""

EPSILON_TOLERANCE = 0.01
"""Bisection tolerance on ε of :func:`noise_multiplier_for` (Opacus's default)."""


@dataclass(frozen=True)
class TrainingConfig:
    """The DP-SGD training run a budget is spent over.

    Attributes:
        sample_rate: Poisson sampling rate ``q`` of a batch (batch size / training set size), in (0, 1].
        steps: number of noisy steps ``T`` (≥ 1).
        delta: the δ of (ε, δ)-DP, in (0, 1) (commonly below 1 / training set size).
        accountant: ``"rdp"`` or ``"prv"``.
    """

    sample_rate: float
    steps: int
    delta: float
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sample_rate", frontdoor.number(self.sample_rate, "sample_rate", positive=True, maximum=1))
        object.__setattr__(self, "steps", frontdoor.positive_int(self.steps, "steps"))
        delta = frontdoor.number(self.delta, "delta", positive=True)
        if not delta < 1:
            raise ValueError(f"delta must be < 1, got {delta!r}")
        object.__setattr__(self, "delta", delta)
        frontdoor.choice(self.accountant, "accountant", ACCOUNTANTS)


def _opacus_accountants():
    """``opacus.accountants`` (imported here: Opacus is the optional extra ``i2f_fast[dp]``)."""
    try:
        from opacus import accountants
    except ImportError as err:
        raise ImportError(
            f"DP accounting needs Opacus, the optional extra i2f_fast[dp]: pip install 'i2f_fast[dp]' ({err})"
        ) from err
    return accountants


def epsilon_spent(noise_multiplier: float, config: TrainingConfig) -> float:
    """The ε of (ε, δ)-DP that ``config.steps`` DP-SGD steps with ``noise_multiplier`` spend.

    Args:
        noise_multiplier: ``z ≥ 0`` (noise std relative to the clip); ``z = 0`` is no DP: ``ε = inf``.
        config: the training run (sample rate, steps, δ, accountant).

    Returns:
        ε as a float (``inf`` for ``z = 0``).

    Raises:
        ValueError: a negative ``noise_multiplier``, or a configuration the accountant rejects
        (naming ``noise_multiplier`` and the configuration).
        ImportError: Opacus is not installed (names the extra ``i2f_fast[dp]``).
    """
    z = frontdoor.number(noise_multiplier, "noise_multiplier", minimum=0)
    if not isinstance(config, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig, got {type(config).__name__}")
    if z == 0:
        return math.inf
    accountant = _opacus_accountants().create_accountant(mechanism=config.accountant)
    accountant.history = [(z, config.sample_rate, config.steps)]
    try:
        epsilon = float(accountant.get_epsilon(delta=config.delta))
    except MemoryError as err:  # PRV discretises the privacy loss on a mesh that grows as z shrinks
        raise ValueError(f"noise_multiplier={z:g}: the {config.accountant} accountant needs more memory than there is for "
                         f"{_describe(config)} ({err}); small noise multipliers need accountant='rdp'") from err
    except (ValueError, ArithmeticError, RuntimeError) as err:
        raise ValueError(f"noise_multiplier={z:g}: the {config.accountant} accountant rejects {_describe(config)}: {err}") from err
    if not epsilon >= 0:  # NaN from the accountant's numerics
        raise ValueError(f"noise_multiplier={z:g}: the {config.accountant} accountant returned ε = {epsilon} for {_describe(config)}")
    return epsilon


def noise_multiplier_for(epsilon: float, config: TrainingConfig, tolerance: float = EPSILON_TOLERANCE) -> float:
    """The smallest noise multiplier whose run spends at most ``epsilon`` (Opacus's ``get_noise_multiplier``).

    Args:
        epsilon: the budget ε > 0.
        config: the training run (sample rate, steps, δ, accountant).
        tolerance: bisection tolerance on ε (> 0); the result spends between ``epsilon − tolerance``
            and ``epsilon``.

    Raises:
        ValueError: ``epsilon`` ≤ 0, or a budget no noise multiplier up to Opacus's limit reaches
        (naming ``epsilon`` and the configuration).
        ImportError: Opacus is not installed (names the extra ``i2f_fast[dp]``).
    """
    epsilon = frontdoor.number(epsilon, "epsilon", positive=True)
    tolerance = frontdoor.number(tolerance, "tolerance", positive=True)
    if not isinstance(config, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig, got {type(config).__name__}")
    _opacus_accountants()
    from opacus.accountants.utils import get_noise_multiplier

    try:
        z = get_noise_multiplier(
            target_epsilon=epsilon, target_delta=config.delta, sample_rate=config.sample_rate, steps=config.steps,
            accountant=config.accountant, epsilon_tolerance=tolerance,
        )
    except (ValueError, ArithmeticError, RuntimeError) as err:
        raise ValueError(f"epsilon={epsilon:g}: no noise multiplier reaches it for {_describe(config)} ({err})") from err
    return float(z)


def _describe(config: TrainingConfig) -> str:
    return f"sample_rate={config.sample_rate:g}, steps={config.steps}, delta={config.delta:g}"
