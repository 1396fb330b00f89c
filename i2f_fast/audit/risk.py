"""Predicted reconstruction risk of a sample (or a batch) under a gradient defense.

The audit's unit of work: for every system of an :class:`~i2f_fast.influence.InversionInfluence`
(one per sample in per-sample mode, the whole batch otherwise) the expected squared reconstruction
error of the linearised attack, ``E‖Δ‖²`` with ``Δ = M δ`` and ``M = (AᵀA + εI)⁻¹AᵀΠW^½``, over
the defense's randomness, reported as a predicted RMSE per element ``√(E‖Δ‖²/D)``.

A defense is written as a short spec string (the ``--defense`` flag of ``i2f-fast audit``):

==================================  ==========================================================
spec                                the perturbation δ of the gradient the attacker inverts
==================================  ==========================================================
``none``                            0 (the attack recovers x: risk 0)
``gaussian:VAR``                    ``N(0, VAR·I)`` (VAR is the variance)
``dp:clip=C,noise=Z[,batch=B]``     DP-SGD as Opacus: each sample's gradient clipped to C,
                                    noise of std ``Z·C`` on the clipped sum, divided by B
``prune:R``                         global magnitude pruning of the fraction R (deterministic)
``topk:R``                          keep the fraction R of largest entries (deterministic)
``quantize:BITS``                   unbiased stochastic rounding onto ``2^BITS`` levels
==================================  ==========================================================

How each expectation is computed (``E‖Mδ‖² = ‖M E δ‖² + tr(M Cov(δ) Mᵀ)``):

- Gaussian noise (``gaussian`` and the noise of ``dp``): ``σ² tr(MMᵀ)`` from
  :meth:`~i2f_fast.influence.InversionInfluence.expected_i2f_sq`: exact on the float64 spectral
  route where the dimension allows, else a Hutchinson estimate with its standard error.
- Deterministic parts (pruning, top-k, and dp's clipping bias ``(c − 1)·g`` with
  ``c = min(1, C/(‖g‖ + 1e-6))``): one solve of ``M δ``, exact.
- ``quantize``: the mean of ``‖M δ_k‖²`` over ``draws`` independent quantisations (unbiased, so
  ``E δ = 0``), with its standard error.

DP in the two modes. Per batch of B (``per_sample=False``) the attacker inverts the mean gradient:
the bias is ``mean(clip(g_n)) − mean(g_n)`` and the noise std ``Z·C/B``, as Opacus adds it. Per
sample (the paper's setting) the attacker inverts one sample's gradient, i.e. the batch's sum
rescaled to that sample: bias ``(c − 1)·g``, noise std ``Z·C``; the other samples' gradients in the
sum are ignored, which favours the attacker (the per-sample risk is a conservative one). The L2
attack sees the clipping bias; the cosine attack is blind to a rescaling of the gradient, so the
projection removes it (see :class:`~i2f_fast.linearised_attack.LinearisedAttack`).

All of this is the linear regime of the attack: it holds while the perturbation is small against the
gradient (``i2f-fast validate`` shows where it ends). A clipping factor far below 1 or a large noise is
outside it; the prediction then says "large" rather than how large.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import defenses, frontdoor
from ..influence import InversionInfluence

DEFENSE_KINDS = ("none", "gaussian", "dp", "prune", "topk", "quantize")
"""The defense kinds :func:`parse_defense` accepts."""

DEFAULT_DRAWS = 32
"""Quantisation draws per sample for the Monte Carlo expectation of ``quantize``."""

_DP_KEYS = {"clip", "noise", "batch"}


@dataclass(frozen=True)
class Defense:
    """A parsed defense spec (see the module docstring).

    Attributes:
        kind: one of :data:`DEFENSE_KINDS`.
        var: Gaussian variance (``gaussian``).
        clip, noise_multiplier, batch: DP-SGD's clipping norm C, noise multiplier Z and batch size B.
        ratio: the fraction of ``prune`` / ``topk``.
        bits: the bits of ``quantize``.
    """

    kind: str
    var: float = 0.0
    clip: float = 0.0
    noise_multiplier: float = 0.0
    batch: int = 1
    ratio: float = 0.0
    bits: int = 0

    @property
    def spec(self) -> str:
        """The canonical spec string (``parse_defense(d.spec) == d``)."""
        if self.kind == "gaussian":
            return f"gaussian:{self.var!r}"
        if self.kind == "dp":
            return f"dp:clip={self.clip!r},noise={self.noise_multiplier!r},batch={self.batch}"
        if self.kind in ("prune", "topk"):
            return f"{self.kind}:{self.ratio!r}"
        if self.kind == "quantize":
            return f"quantize:{self.bits}"
        return "none"

    def noise_std(self, per_sample: bool) -> float:
        """Std of the Gaussian noise on the gradient the attacker inverts (0 for the others)."""
        if self.kind == "gaussian":
            return math.sqrt(self.var)
        if self.kind == "dp":
            return self.noise_multiplier * self.clip / (1 if per_sample else self.batch)
        return 0.0

    def with_noise(self, value: float) -> "Defense":
        """The same defense with its noise level replaced: the variance of ``gaussian``, the noise
        multiplier of ``dp`` (used by noise calibration)."""
        if self.kind == "gaussian":
            return Defense("gaussian", var=value)
        if self.kind == "dp":
            return Defense("dp", clip=self.clip, noise_multiplier=value, batch=self.batch)
        raise ValueError(f"defense {self.spec!r} has no noise level to set (gaussian or dp only)")


def parse_defense(spec, argument: str = "defense") -> Defense:
    """A :class:`Defense` from its spec string (see the module docstring); a :class:`Defense` is
    returned as is.

    Raises:
        ValueError: an unknown kind, a missing or malformed value, or a value out of range, with a
        message naming ``argument`` and the expected form.
    """
    if isinstance(spec, Defense):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"{argument} must be a defense spec string such as 'gaussian:1e-4', got {type(spec).__name__}")
    kind, _, value = spec.strip().partition(":")
    kind = kind.strip().lower()
    forms = "none, gaussian:VAR, dp:clip=C,noise=Z[,batch=B], prune:R, topk:R, quantize:BITS"
    if kind not in DEFENSE_KINDS:
        raise ValueError(f"{argument}: unknown defense {kind!r} in {spec!r}; expected one of {forms}")
    if kind == "none":
        if value.strip():
            raise ValueError(f"{argument}: 'none' takes no value, got {spec!r}")
        return Defense("none")
    if not value.strip():
        raise ValueError(f"{argument}: {kind!r} needs a value, e.g. {_EXAMPLES[kind]!r}; got {spec!r}")
    if kind == "dp":
        return _parse_dp(value, spec, argument)
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{argument}: {kind} takes a number, e.g. {_EXAMPLES[kind]!r}; got {spec!r}") from None
    if kind == "gaussian":
        return Defense("gaussian", var=frontdoor.number(number, f"{argument} (gaussian variance)", minimum=0))
    if kind == "quantize":
        if not number.is_integer():
            raise ValueError(f"{argument}: quantize takes an integer number of bits, got {spec!r}")
        return Defense("quantize", bits=frontdoor.integer(int(number), f"{argument} (quantize bits)", minimum=1, maximum=32))
    return Defense(kind, ratio=frontdoor.number(number, f"{argument} ({kind} ratio)", minimum=0, maximum=1))


_EXAMPLES = {
    "gaussian": "gaussian:1e-4",
    "dp": "dp:clip=1,noise=1.1,batch=32",
    "prune": "prune:0.9",
    "topk": "topk:0.1",
    "quantize": "quantize:4",
}


def _parse_dp(value: str, spec: str, argument: str) -> Defense:
    fields = {}
    for item in value.split(","):
        key, eq, number = item.partition("=")
        key = key.strip().lower()
        if not eq or key not in _DP_KEYS or key in fields:
            raise ValueError(f"{argument}: dp takes clip=C,noise=Z[,batch=B] once each, e.g. {_EXAMPLES['dp']!r}; got {spec!r}")
        try:
            fields[key] = float(number)
        except ValueError:
            raise ValueError(f"{argument}: dp's {key} must be a number, got {number.strip()!r} in {spec!r}") from None
    if "clip" not in fields or "noise" not in fields:
        raise ValueError(f"{argument}: dp needs clip= and noise=, e.g. {_EXAMPLES['dp']!r}; got {spec!r}")
    batch = fields.get("batch", 1.0)
    if not batch.is_integer():
        raise ValueError(f"{argument}: dp's batch must be an integer, got {spec!r}")
    return Defense(
        "dp",
        clip=frontdoor.number(fields["clip"], f"{argument} (dp clip)", positive=True),
        noise_multiplier=frontdoor.number(fields["noise"], f"{argument} (dp noise)", minimum=0),
        batch=frontdoor.integer(int(batch), f"{argument} (dp batch)", minimum=1),
    )


@dataclass
class Risk:
    """Predicted risk per system; every tensor is ``(n,)`` float64 (n = samples per-sample, else 1).

    Attributes:
        rmse: ``√(E‖Δ‖²/D)``, the predicted RMSE per element of the attack's reconstruction.
        stderr: standard error of ``rmse`` (0 where the expectation is exact).
        bias_rmse: the deterministic part's ``‖M E δ‖/√D``.
        noise_rmse: the random part's ``√(tr(M Cov δ Mᵀ)/D)``.
        exact: True when no Monte Carlo / Hutchinson estimate entered.
        method: how the noise term was computed: ``"spectral"``, ``"hutchinson"``, ``"draws"`` or ``"none"``.
        eps: the absolute damping per system.
    """

    rmse: torch.Tensor
    stderr: torch.Tensor
    bias_rmse: torch.Tensor
    noise_rmse: torch.Tensor
    exact: bool
    method: str
    eps: torch.Tensor


def predicted_risk(
    influence: InversionInfluence,
    defense,
    *,
    objective: str = "l2",
    eps: float | None = None,
    eps_rel: float | None = None,
    draws: int = DEFAULT_DRAWS,
    generator: torch.Generator | None = None,
) -> Risk:
    """Predicted reconstruction risk of every system of ``influence`` under ``defense``.

    Args:
        influence: the prediction for a model and its input (per-sample or one batch).
        defense: a spec string or a :class:`Defense`.
        objective: the attack's objective, ``"l2"`` (DLG) or ``"cosine"`` (GS).
        eps, eps_rel: the damping (as :meth:`InversionInfluence.i2f`; default the calibrated one).
        draws: quantisation draws for ``quantize`` (≥ 2).
        generator: for the quantisation draws.

    Returns:
        :class:`Risk`.

    Raises:
        ValueError for a bad defense spec, objective or damping, naming the argument.
    """
    defense = parse_defense(defense)
    draws = frontdoor.integer(draws, "draws", minimum=2)
    solve = dict(eps=eps, eps_rel=eps_rel, objective=objective)
    op = influence.jacobian
    per_sample = influence.per_sample
    n = op.num_samples if per_sample else 1
    D = influence.row_dim
    clean = op.gradient.reshape(n, op.num_params).detach()
    zeros = torch.zeros(n, dtype=torch.float64, device=clean.device)

    bias_sq, noise_sq, noise_var, method, damping = zeros, zeros, zeros, "none", None
    bias = _deterministic_delta(influence, defense, clean)
    if bias is not None:
        result = influence.i2f(_delta_arg(bias, per_sample), **solve)
        bias_sq = result.value.reshape(n).to(torch.float64) ** 2
        damping = result.eps
    sigma = defense.noise_std(per_sample)
    if sigma > 0:
        expected = influence.expected_i2f_sq(sigma, **solve)
        noise_sq = expected.value.reshape(n).to(torch.float64)
        noise_var = expected.stderr.reshape(n).to(torch.float64) ** 2
        method, damping = expected.method, expected.eps
    elif defense.kind == "quantize":
        noise_sq, noise_var, damping = _quantisation_energy(influence, defense.bits, clean, draws, generator, solve)
        method = "draws"
    if damping is None:  # no perturbation at all: the damping the prediction would use
        damping = influence.i2f(torch.zeros(op.num_params, dtype=clean.dtype, device=clean.device), **solve).eps
    total = bias_sq + noise_sq
    rmse = (total / D).sqrt()
    # d√(E/D)/dE = 1/(2√(E·D)): the delta method on the estimate's standard error
    stderr = torch.where(total > 0, noise_var.sqrt() / (2 * (total * D).sqrt().clamp_min(1e-300)), zeros)
    return Risk(
        rmse=rmse, stderr=stderr, bias_rmse=(bias_sq / D).sqrt(), noise_rmse=(noise_sq / D).sqrt(),
        exact=method in ("none", "spectral"), method=method,
        eps=damping.reshape(n).to(torch.float64),
    )


def _delta_arg(rows: torch.Tensor, per_sample: bool) -> torch.Tensor:
    """``(n, P)`` rows as :meth:`InversionInfluence.i2f` takes them: ``(N, P)`` per sample, ``(P,)`` per batch."""
    return rows if per_sample else rows[0]


def _deterministic_delta(influence: InversionInfluence, defense: Defense, clean: torch.Tensor) -> torch.Tensor | None:
    """``E δ`` as ``(n, P)`` rows, or None when it is 0."""
    if defense.kind in ("prune", "topk"):
        apply = defenses.prune if defense.kind == "prune" else defenses.topk
        return torch.stack([apply(row, defense.ratio).delta for row in clean])
    if defense.kind != "dp":
        return None
    samples = influence.jacobian.sample_gradients().reshape(-1, clean.shape[1])  # (N, P)
    factor = (defense.clip / (samples.norm(dim=1, keepdim=True) + 1e-6)).clamp(max=1.0)  # Opacus's clipping factor
    bias = (factor - 1) * samples
    return bias if influence.per_sample else bias.mean(dim=0, keepdim=True)


def _quantisation_energy(influence, bits: int, clean: torch.Tensor, draws: int, generator, solve):
    """Mean and variance of the mean of ``‖M δ_k‖²`` over ``draws`` stochastic quantisations, ``(n,)`` each."""
    n, P = clean.shape
    deltas = torch.stack([
        torch.stack([defenses.quantize(row, bits, generator=generator).delta for row in clean]) for _ in range(draws)
    ])  # (draws, n, P)
    result = influence.i2f(deltas if influence.per_sample else deltas[:, 0], **solve)
    energy = result.value.reshape(draws, n).to(torch.float64) ** 2
    return energy.mean(0), energy.var(0) / draws, result.eps.reshape(draws, n)[0]
