"""A Flower client mod that predicts how well each training reply's batch can be reconstructed.

:class:`ReconstructionRiskMod` wraps a Flower ``ClientApp``'s training function (the ``flwr.app``
``Message`` API, tested with flwr 1.42; the optional extra ``i2f_fast[flower]``, imported on first
use). For every training reply it

1. turns the update into the gradient the server (or an eavesdropper) can invert:
   ``g = −(θ_reply − θ_sent) / (η·S)`` for learning rate η and S local steps. With S = 1 (FedSGD) this
   is the batch's gradient exactly; with S > 1 (multi-step FedAvg) it is the average of S gradients
   along the local trajectory, an approximation the reply flags (``i2f-approximation`` = 1);
2. predicts the reconstruction risk of the client's batch at the received parameters under the
   configured defense (:func:`~i2f_fast.audit.risk.predicted_risk`, the whole batch as one
   system: the attacker inverts the batch's mean gradient);
3. writes the numbers into the reply's ``MetricRecord``, next to the client's own metrics.

Metrics written (floats):

=========================  ============================================================================
``i2f-predicted-rmse``     expected RMSE per element of the attack on the batch under ``defense``
``i2f-update-rmse``        the prediction for the reply as sent: the I²F of ``g − ∇L(θ_sent)``, what
                           separates the shared gradient from the batch's (noise the client already
                           added, the drift of several local steps); ≈ 0 for plain FedSGD
``i2f-gradient-mismatch``  ``‖g − ∇L(θ_sent)‖ / ‖∇L(θ_sent)‖``
``i2f-approximation``      1 when S > 1 (the update is only approximately a gradient), else 0
``i2f-exact``              1 when the expectation is exact (spectral route), 0 for an estimate
=========================  ============================================================================

RMSE is in the model's input space (normalised images), per element, as everywhere in i2f_fast. The
prediction holds in the attack's linear regime (``i2f-fast validate``); a large mismatch is outside it.

Usage (see ``examples/flower/``)::

    mod = ReconstructionRiskMod(make_model, lambda msg, ctx: load_batch(ctx), defense="gaussian:1e-4")
    app = ClientApp()

    @app.train(mods=[mod])
    def train(msg, context): ...
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .. import frontdoor
from ..audit.risk import parse_defense, predicted_risk
from ..influence import DEFAULT_EPS_REL, InversionInfluence
from ..validate import OBJECTIVE_ATTACKS

METRICS = ("i2f-predicted-rmse", "i2f-update-rmse", "i2f-gradient-mismatch", "i2f-approximation", "i2f-exact")
"""The keys :class:`ReconstructionRiskMod` writes into a training reply's metrics."""

_NAME = "ReconstructionRiskMod"


def _flwr():
    """The ``flwr`` package (imported here: Flower is the optional extra ``i2f_fast[flower]``)."""
    try:
        import flwr.app
    except ImportError as err:
        raise ImportError(f"the Flower mod needs flwr, the optional extra i2f_fast[flower]: "
                          f"pip install 'i2f_fast[flower]' ({err})") from err
    return flwr


class ReconstructionRiskMod:
    """Client-side Flower mod: the predicted reconstruction risk of each training reply (module docstring).

    Args:
        model_fn: ``() -> nn.Module``, a fresh model of the client's architecture; the mod loads the
            received parameters into it (``load_state_dict`` of the message's ``ArrayRecord``).
        batch_fn: ``(message, context) -> (x (B, *input_shape), y (B,))``, the batch the client
            trains on in this round (the private data the risk is about).
        defense: the noise the shared gradient carries beyond this mod, as a spec of
            :func:`~i2f_fast.audit.risk.parse_defense` (``none``, ``gaussian:VAR``,
            ``dp:clip=C,noise=Z,batch=B``, ``prune:R``, ``topk:R``, ``quantize:BITS``).
        learning_rate: the client's step size η; None: read from the message's ``ConfigRecord`` under
            ``learning_rate_key``.
        learning_rate_key: the config key of η (default ``"lr"``, as Flower's PyTorch template).
        local_steps: S, the optimiser steps one round runs (1: FedSGD); the message's config value
            under ``local_steps_key`` wins when present.
        local_steps_key: the config key of S.
        objective: the attack's objective, ``"l2"`` or ``"cosine"``.
        eps_rel: damping relative to λ_max (default the calibrated 1e-8).

    Raises:
        TypeError / ValueError naming the argument; ImportError naming the extra when flwr is missing.
        At run time a reply the mod cannot assess (no learning rate, several ``ArrayRecord``\\ s,
        parameters missing from the reply, a batch that does not fit the model) becomes an error
        reply with the reason, as Flower's own mods do.
    """

    def __init__(
        self,
        model_fn: Callable[[], nn.Module],
        batch_fn: Callable,
        defense: str = "none",
        *,
        learning_rate: float | None = None,
        learning_rate_key: str = "lr",
        local_steps: int = 1,
        local_steps_key: str = "local-steps",
        objective: str = "l2",
        eps_rel: float | None = None,
    ) -> None:
        _flwr()
        for name, fn in (("model_fn", model_fn), ("batch_fn", batch_fn)):
            if not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        self.model_fn, self.batch_fn = model_fn, batch_fn
        self.defense = parse_defense(defense)
        self.learning_rate = None if learning_rate is None else frontdoor.number(learning_rate, "learning_rate", positive=True)
        self.local_steps = frontdoor.positive_int(local_steps, "local_steps")
        for name, key in (("learning_rate_key", learning_rate_key), ("local_steps_key", local_steps_key)):
            if not isinstance(key, str) or not key:
                raise TypeError(f"{name} must be a non-empty string, got {key!r}")
        self.learning_rate_key, self.local_steps_key = learning_rate_key, local_steps_key
        self.objective = frontdoor.choice(objective, "objective", tuple(OBJECTIVE_ATTACKS))
        self.eps_rel = DEFAULT_EPS_REL if eps_rel is None else frontdoor.number(eps_rel, "eps_rel", positive=True)

    def __call__(self, msg, ctxt, call_next):
        """Run the training function ``call_next`` and add the risk metrics to its reply (Flower's ``Mod``)."""
        from flwr.app import MessageType, MetricRecord

        if msg.metadata.message_type.split(".")[0] != MessageType.TRAIN:
            return call_next(msg, ctxt)
        if len(msg.content.array_records) != 1:
            return _error_reply(msg, f"{_NAME} expects exactly one ArrayRecord in the training message, "
                                     f"found {len(msg.content.array_records)}")
        sent = next(iter(msg.content.array_records.values()))
        config = {k: v for record in msg.content.config_records.values() for k, v in record.items()}
        learning_rate = self.learning_rate if self.learning_rate is not None else config.get(self.learning_rate_key)
        if learning_rate is None:
            return _error_reply(msg, f"{_NAME} needs the learning rate: pass learning_rate= or send it in the "
                                     f"ConfigRecord under {self.learning_rate_key!r}")
        steps = config.get(self.local_steps_key, self.local_steps)

        out = call_next(msg, ctxt)
        if out.has_error():
            return out
        if len(out.content.array_records) != 1:
            return _error_reply(msg, f"{_NAME} expects exactly one ArrayRecord in the reply, "
                                     f"found {len(out.content.array_records)}")
        if len(out.content.metric_records) > 1:
            return _error_reply(msg, f"{_NAME} expects at most one MetricRecord in the reply, "
                                     f"found {len(out.content.metric_records)}")
        returned = next(iter(out.content.array_records.values()))
        try:
            learning_rate = frontdoor.number(learning_rate, f"learning rate ({self.learning_rate_key!r})", positive=True)
            steps = frontdoor.positive_int(steps, f"local steps ({self.local_steps_key!r})")
            metrics = self.assess(sent.to_torch_state_dict(), returned.to_torch_state_dict(), learning_rate, steps,
                                  *self.batch_fn(msg, ctxt))
        except (TypeError, ValueError, KeyError, RuntimeError) as err:
            return _error_reply(msg, f"{_NAME}: {err}")
        if out.content.metric_records:
            record = next(iter(out.content.metric_records.values()))
        else:
            record = out.content["metrics"] = MetricRecord()
        for key, value in metrics.items():
            record[key] = value
        return out

    def assess(self, sent: dict, returned: dict, learning_rate: float, steps: int, x: torch.Tensor,
               y: torch.Tensor) -> dict:
        """The metrics of one update (module docstring), without Flower's message objects.

        Args:
            sent, returned: state dicts (name → tensor) of the parameters before and after local training.
            learning_rate: η > 0; steps: S ≥ 1.
            x: ``(B, *input_shape)`` the client's batch; y: ``(B,)`` its labels.

        Returns:
            ``{metric: float}`` for every key of :data:`METRICS`.

        Raises:
            ValueError / KeyError naming what does not fit: the model, the batch, parameters missing
            from ``returned``.
        """
        model = self.model_fn()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model_fn must return a torch.nn.Module, got {type(model).__name__}")
        model.load_state_dict(sent)
        model.eval()
        named = frontdoor.model_parameters(model)
        missing = [name for name, _ in named if name not in returned]
        if missing:
            raise KeyError(f"the reply lacks the parameters {missing}")
        layout = frontdoor.layout_of(named)
        update = layout.flatten([returned[name].to(p) - p.detach() for name, p in named])
        shared = -update / (learning_rate * steps)  # (P,)
        x = frontdoor.float_tensor(x, "the batch's x", min_dims=2, like=named[0][1])
        if self.defense.kind == "dp" and self.defense.batch != x.shape[0]:
            raise ValueError(f"defense {self.defense.spec!r}: dp's batch={self.defense.batch} must be the client's batch "
                             f"size {x.shape[0]} (Opacus divides the noise by it)")
        influence = InversionInfluence(model, x, y, per_sample=False)
        clean = influence.jacobian.gradient.reshape(-1).detach()
        departure = shared - clean
        update_rmse = influence.i2f(departure, eps_rel=self.eps_rel, objective=self.objective).rmse
        risk = predicted_risk(influence, self.defense, objective=self.objective, eps_rel=self.eps_rel)
        clean_norm = clean.norm().item()
        return {
            "i2f-predicted-rmse": float(risk.rmse[0]),
            "i2f-update-rmse": float(update_rmse),
            "i2f-gradient-mismatch": departure.norm().item() / clean_norm if clean_norm > 0 else float("inf"),
            "i2f-approximation": float(steps > 1),
            "i2f-exact": float(risk.exact),
        }


def _error_reply(msg, reason: str):
    """An error reply to ``msg`` (Flower's ``MOD_FAILED_PRECONDITION``), as Flower's built-in mods answer."""
    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode

    return Message(Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=reason), reply_to=msg)
