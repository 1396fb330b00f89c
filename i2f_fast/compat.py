"""Drop-in replacements for the helpers of the paper's published code (``utils.py``).

Change ``from utils import I2F_lb, max_eigen_val, compute_exact_bound`` to
``from i2f_fast.compat import I2F_lb, max_eigen_val, compute_exact_bound``: same names, arguments
and return types, computed with this library's solvers.

Differences from the originals, on purpose:

* ``max_eigen_val`` runs Lanczos on the input-space operator ``JᵀJ`` (dimension D) instead of
  ARPACK ``eigsh`` on the parameter-space operator (dimension P, with numpy round-trips); the
  non-zero spectrum is the same, the result is in the model's dtype rather than single precision.
* ``compute_exact_bound`` solves ``(JᵀJ + εI) b = Jᵀδ`` with CG **from a zero start** to a
  relative residual tolerance, instead of 2000 steps of fixed-step gradient descent from a random
  start (which leaves a random-start bias for small ε and diverges when λ_max > 2/lr).
* Nothing the caller passes is modified: the original set ``img.requires_grad = True`` on ``img``,
  and ``model.to(device, dtype)`` converts a module in place; here a model that must change
  dtype or device is copied first.
* Arguments are checked (front door): labels must be integers (``label=0.7`` is refused, not
  read as 0), and a list ``noise`` must hold tensors of the parameters' shapes.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from . import frontdoor
from .influence import InversionInfluence


def _prepare(model, img, label, device, dtype=None):
    """``(model, img, label)`` on ``device`` in ``dtype`` (default: the model's), the caller's
    model left as it is (a copy when it must move or change dtype)."""
    first = frontdoor.model_parameters(model)[0][1]
    frontdoor.float_tensor(img, "img", min_dims=2)
    device = frontdoor.device(device, "device") if device is not None else img.device
    if dtype is not None and dtype not in frontdoor.FLOAT_DTYPES:
        raise TypeError(f"setup['dtype'] must be torch.float32 or torch.float64, got {dtype!r}")
    dtype = dtype or first.dtype
    if any(t.dtype != dtype or t.device != device for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()):
        model = copy.deepcopy(model).to(device=device, dtype=dtype)
    img = img.detach().to(device=device, dtype=dtype)
    label = frontdoor.labels(label, "label", img.shape[0], frontdoor.output_classes(model, img, "img")).to(device)
    return model, img, label


def _noise(model, noise) -> torch.Tensor:
    """The perturbation ``noise`` (flat ``(P,)`` or a list of parameter-shaped tensors) as a flat
    ``(P,)`` tensor, each list entry checked against its parameter's shape."""
    return frontdoor.parameter_vectors(noise, frontdoor.layout_of(frontdoor.model_parameters(model)), "noise")


def I2F_lb(model, img, label, noise, device=None) -> torch.Tensor:  # noqa: N802 (paper's name)
    """``‖Jᵀδ‖ / λ_max(JᵀJ)`` for the batch ``img`` (``(N, C, H, W)``), labels ``label``.

    ``noise`` is the gradient perturbation δ: a list of parameter-shaped tensors (as in the paper's
    code) or a flat ``(P,)`` tensor. Returns a tensor of shape ``(1,)`` (the original divided by
    the ``(1,)`` eigenvalue array).
    """
    model, img, label = _prepare(model, img, label, device)
    res = InversionInfluence(model, img, label).lower_bound(_noise(model, noise))
    return res.value.reshape(1)


def max_eigen_val(model, img, label, device=None) -> np.ndarray:
    """``λ_max(JᵀJ)`` as a numpy array of shape ``(1,)``, like ``scipy.sparse.linalg.eigsh(k=1)``."""
    model, img, label = _prepare(model, img, label, device)
    lam = InversionInfluence(model, img, label).max_eigenvalue()
    return np.asarray([lam.item()], dtype=torch.empty((), dtype=img.dtype).numpy().dtype)


def compute_exact_bound(args, model, img, label, noise, setup=None, regu=1.0) -> torch.Tensor:
    """``b = (JᵀJ + εI)⁻¹ Jᵀ δ`` (input-shaped); ``torch.norm(b)`` is I²F with ``ε = regu``.

    ``args`` is accepted for signature compatibility and ignored (the original read its learning
    rate there); ``setup`` is inversefed's ``dict(device=..., dtype=...)`` (optional).
    """
    if setup is not None and not isinstance(setup, dict):
        raise TypeError(f"setup must be a dict(device=..., dtype=...) or None, got {type(setup).__name__}")
    setup = setup or {}
    model, img, label = _prepare(model, img, label, setup.get("device"), setup.get("dtype"))
    res = InversionInfluence(model, img, label).i2f(_noise(model, noise), frontdoor.number(regu, "regu", minimum=0))
    return res.shift
