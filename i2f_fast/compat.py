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
* The caller's ``img`` is not modified (the original set ``img.requires_grad = True`` on it).
"""
from __future__ import annotations

import numpy as np
import torch

from .influence import InversionInfluence


def _prepare(model, img, label, device, dtype=None):
    device = torch.device(device) if device is not None else img.device
    param = next(model.parameters())
    dtype = dtype or param.dtype
    model = model.to(device=device, dtype=dtype)
    img = img.detach().to(device=device, dtype=dtype)
    label = torch.as_tensor(label, device=device).reshape(-1).long()
    return model, img, label


def _noise_list(noise, device, dtype):
    if isinstance(noise, torch.Tensor):
        return noise.to(device=device, dtype=dtype)
    return [torch.as_tensor(n).to(device=device, dtype=dtype) for n in noise]


def I2F_lb(model, img, label, noise, device=None) -> torch.Tensor:  # noqa: N802 (paper's name)
    """``‖Jᵀδ‖ / λ_max(JᵀJ)`` for the batch ``img`` (``(N, C, H, W)``), labels ``label``.

    ``noise`` is the gradient perturbation δ: a list of parameter-shaped tensors (as in the paper's
    code) or a flat ``(P,)`` tensor. Returns a tensor of shape ``(1,)`` (the original divided by
    the ``(1,)`` eigenvalue array).
    """
    model, img, label = _prepare(model, img, label, device)
    inf = InversionInfluence(model, img, label)
    res = inf.lower_bound(_noise_list(noise, img.device, img.dtype))
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
    setup = setup or {}
    model, img, label = _prepare(model, img, label, setup.get("device"), setup.get("dtype"))
    res = InversionInfluence(model, img, label).i2f(_noise_list(noise, img.device, img.dtype), float(regu))
    return res.shift
