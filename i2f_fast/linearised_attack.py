"""The gradient-inversion attack's optimality condition, linearised at the private input.

An attack that matches the shared gradient ``t = g + δ`` lands, to first order in ``δ``, at
``x̂ = x + Δ`` with (README.md, "What I²F predicts, and how well")::

    Δ = (AᵀA + εI)⁻¹ Aᵀ Π W^½ δ ,      A = Π W^½ J      (P × D)

* ``objective="l2"`` (DLG: ½‖W^½(g' − t)‖²): ``Π = I``;
* ``objective="cosine"`` (GS / Inverting Gradients: 1 − cos_W(g', t)): ``Π = I − ĝĝᵀ`` with
  ``ĝ = W^½g/‖W^½g‖``, because the cosine attack is blind to the gradient's scale;
* ``W`` = the attack's per-element weights (per-layer weights expanded to ``P``; ``I`` by default).

With ``W = I`` and ``objective="l2"`` this is I²F's system ``(JᵀJ + εI)⁻¹Jᵀδ``. This module builds
the matrix-free products of that system on top of an :class:`~i2f_fast.operators.InversionJacobian`;
solving it is :mod:`i2f_fast.influence`'s job. All products work on *rows*: ``(m·n, *row_shape)``
input rows and ``(m·n, P)`` parameter rows, ``n`` = systems per perturbation (N in per-sample
mode, else 1), row ``i·n + s`` belonging to system ``s``.
"""
from __future__ import annotations

import math

import torch

from .operators import InversionJacobian

OBJECTIVES = ("l2", "cosine")


class LinearisedAttack:
    """Products of the linearised attack system for one objective and weighting.

    Args:
        jacobian: the operator ``J`` (per-sample or batch mode).
        objective: ``"l2"`` or ``"cosine"``.
        weights: ``(P,)`` non-negative per-element weights ``W`` (the attack's per-layer weights
            expanded), or ``None`` for ``W = I``; in the jacobian's dtype and device.

    Raises:
        ValueError: unknown ``objective``; ``objective="cosine"`` where ``W^½g = 0`` (the cosine
            attack is undefined for a zero shared gradient).
    """

    def __init__(self, jacobian: InversionJacobian, objective: str = "l2", weights: torch.Tensor | None = None):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        self.jacobian = jacobian
        self.objective = objective
        shape = jacobian.input_shape
        self.row_shape = tuple(shape[1:]) if jacobian.per_sample else tuple(shape)
        self.systems = shape[0] if jacobian.per_sample else 1
        self.row_dim = math.prod(self.row_shape)
        self.num_params = jacobian.num_params
        self.weights = weights
        self.sqrt_weights = None if weights is None else weights.sqrt()
        self.unit_gradient = None  # ĝ (n, P) for the cosine objective
        self.gradient_pullback = None  # c = Jᵀ W^½ ĝ, (n, *row_shape)
        if objective == "cosine":
            g = self._weigh(jacobian.gradient.reshape(self.systems, self.num_params))
            norms = g.norm(dim=1)
            if not (norms > 0).all():
                zero = torch.nonzero(norms == 0).flatten().tolist()
                raise ValueError(
                    f"objective='cosine' is undefined where the (weighted) shared gradient is zero: systems {zero}"
                )
            self.unit_gradient = g / norms.unsqueeze(1)
            self.gradient_pullback = self._jt(self._weigh(self.unit_gradient))

    # ------------------------------------------------------------------------------- helpers
    def _weigh(self, u: torch.Tensor) -> torch.Tensor:
        return u if self.sqrt_weights is None else u * self.sqrt_weights

    def _per_system(self, t: torch.Tensor) -> torch.Tensor:
        """``(m·n, ...)`` rows → ``(m, n, ...)``."""
        return t.reshape(-1, self.systems, *t.shape[1:])

    def _project(self, u: torch.Tensor) -> torch.Tensor:
        """``Π u`` on ``(m·n, P)`` parameter rows."""
        if self.unit_gradient is None:
            return u
        rows = self._per_system(u)
        return (rows - self.unit_gradient * (rows * self.unit_gradient).sum(-1, keepdim=True)).reshape(u.shape)

    def _remove_gradient_direction(self, out: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        """``out − c · coefficients`` on input rows, ``c`` the pulled-back unit gradient."""
        rows = self._per_system(out)
        c = self.gradient_pullback.reshape(self.systems, *self.row_shape)
        coef = coefficients.reshape(*coefficients.shape, *([1] * len(self.row_shape)))
        return (rows - c * coef).reshape(out.shape)

    def _c_dot(self, v: torch.Tensor) -> torch.Tensor:
        """``cᵀv`` per row, shaped ``(m, n)``."""
        rows = self._per_system(v).flatten(2)
        return (rows * self.gradient_pullback.reshape(self.systems, -1)).sum(-1)

    def _j(self, v_rows: torch.Tensor) -> torch.Tensor:
        """``J v``: ``(m·n, *row_shape)`` → ``(m·n, P)``."""
        op = self.jacobian
        return op.jvp(v_rows.reshape(-1, *op.input_shape)).reshape(-1, self.num_params)

    def _jt(self, u_rows: torch.Tensor) -> torch.Tensor:
        """``Jᵀ u``: ``(m·n, P)`` → ``(m·n, *row_shape)``."""
        op = self.jacobian
        lead = (-1, self.systems) if op.per_sample else (-1,)
        return op.vjp(u_rows.reshape(*lead, self.num_params)).reshape(-1, *self.row_shape)

    # ------------------------------------------------------------------------------ products
    def apply(self, v_rows: torch.Tensor) -> torch.Tensor:
        """``A v = Π W^½ J v``: ``(m·n, *row_shape)`` → ``(m·n, P)``."""
        return self._project(self._weigh(self._j(v_rows)))

    def adjoint(self, u_rows: torch.Tensor) -> torch.Tensor:
        """``Aᵀ u = Jᵀ W^½ Π u``: ``(m·n, P)`` → ``(m·n, *row_shape)``."""
        return self._jt(self._weigh(self._project(u_rows)))

    def normal(self, v_rows: torch.Tensor) -> torch.Tensor:
        """``AᵀA v = JᵀWJ v − c cᵀv``: input rows → input rows (``c = 0`` for ``"l2"``).

        With ``W = I`` this is the engine's fused ``JᵀJ v`` (one product, ``J v`` never formed)."""
        if self.weights is None:
            op = self.jacobian
            out = op.gram(v_rows.reshape(-1, *op.input_shape)).reshape(v_rows.shape)
        else:
            out = self._jt(self.weights * self._j(v_rows))
        if self.gradient_pullback is None:
            return out
        return self._remove_gradient_direction(out, self._c_dot(v_rows))

    def target(self, delta_rows: torch.Tensor) -> torch.Tensor:
        """``Π W^½ δ``: the perturbation as the least-squares problem sees it, ``(m·n, P)``."""
        return self._project(self._weigh(delta_rows))

    def rhs(self, delta_rows: torch.Tensor) -> torch.Tensor:
        """``Aᵀ Π W^½ δ = JᵀWδ − c (ĝᵀW^½δ)``: ``(m·n, P)`` → input rows."""
        weighted = self._weigh(delta_rows)
        out = self._jt(self._weigh(weighted))
        if self.gradient_pullback is None:
            return out
        along = (self._per_system(weighted) * self.unit_gradient).sum(-1)
        return self._remove_gradient_direction(out, along)

    def noise_energy(self, s_rows: torch.Tensor) -> torch.Tensor:
        """``sᵀ C s`` per row with ``C = Cov(rhs(δ))`` for ``δ ~ N(0, I)``: ``‖W^½ A s‖²``, ``(m·n,)``.

        ``E‖(AᵀA + εI)⁻¹ rhs(δ)‖² = tr((AᵀA+εI)⁻¹ C (AᵀA+εI)⁻¹)``, which a Hutchinson probe ``z``
        estimates as ``sᵀCs`` with ``s = (AᵀA+εI)⁻¹z``."""
        return self._weigh(self.apply(s_rows)).pow(2).sum(-1)

    def noise_covariance(self, v_rows: torch.Tensor) -> torch.Tensor:
        """``C v = Jᵀ W^½ Π W Π W^½ J v`` (``= AᵀA v`` when ``W = I``): input rows → input rows."""
        if self.weights is None:
            return self.normal(v_rows)
        return self.adjoint(self.weights * self.apply(v_rows))
