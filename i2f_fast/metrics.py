"""Reconstruction metrics of gradient-inversion attacks, on NCHW batches.

Every metric is ``metric(reconstruction, original, ...)`` with both tensors ``(N, C, H, W)`` and
returns one value per image, ``(N,)`` (``reduction="none"``, default) or their mean over the batch,
a 0-d tensor (``reduction="mean"``).

Two spaces, named explicitly:

* **normalised** (the space the model, gradients, I²F and the paper's MSE live in): :func:`mse`,
  :func:`rmse`. ``rmse = ‖x̂ − x‖ / √D`` per image, so ``I²F / √D`` is directly comparable.
* **pixel** [0, 1]: :func:`mse_pixels`, :func:`rmse_pixels`, :func:`psnr`, :func:`ssim`,
  :func:`lpips`. Both images are mapped back with the dataset's ``mean``/``std``
  (``pixels = x·std + mean``; pass None for both when the inputs already are pixels) and clamped
  to [0, 1], as breaching does (the paper's code measured PSNR/SSIM on unclamped normalised
  tensors, PAPER.md §4 bug 8).

:func:`feature_mse` compares the model's logits. :func:`ssim` uses ``pytorch_msssim``
(Gaussian window 11, σ 1.5, K = (0.01, 0.03), valid filtering), :func:`lpips` the ``lpips`` package,
which needs its network weights on disk (it raises :class:`LPIPSUnavailableError` otherwise).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from torch.func import functional_call

from . import frontdoor

REDUCTIONS = ("none", "mean")


class LPIPSUnavailableError(RuntimeError):
    """LPIPS cannot run here: the ``lpips`` package or its pretrained weights are missing."""


def _check_pair(reconstruction, original) -> None:
    """Both images: finite float32/float64 ``(N, C, H, W)`` tensors of one shape (a NaN or inf
    pixel is refused: it would make the metric NaN or inf without saying why)."""
    for name, t in (("reconstruction", reconstruction), ("original", original)):
        frontdoor.float_tensor(t, name, dims=4)
    if reconstruction.shape != original.shape:
        raise ValueError(
            f"reconstruction has shape {tuple(reconstruction.shape)}, original {tuple(original.shape)}: they must match"
        )


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    frontdoor.choice(reduction, "reduction", REDUCTIONS)
    return values if reduction == "none" else values.mean()


def to_pixels(x: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """``(N, C, H, W)`` normalised → pixels ``x·std + mean`` clamped to [0, 1] (``mean = std = None``:
    ``x`` already holds pixels and is only clamped).

    Raises: ValueError when only one of mean/std is given or their length is not C; TypeError /
    ValueError when ``x`` is not a float32/float64 ``(N, C, H, W)`` tensor.
    """
    frontdoor.float_tensor(x, "x", dims=4, finite=False)  # drawing a diverged reconstruction is allowed
    if (mean is None) != (std is None):
        raise ValueError("pass both mean and std (the dataset's normalisation) or neither")
    if mean is not None:
        C = x.shape[1]
        if not all(isinstance(v, (list, tuple)) and len(v) == C for v in (mean, std)):
            raise ValueError(f"mean and std must have {C} entries (one per channel), got {mean} and {std}")
        mean = [frontdoor.number(v, f"mean[{c}]") for c, v in enumerate(mean)]
        std = [frontdoor.number(v, f"std[{c}]", positive=True) for c, v in enumerate(std)]
        m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, C, 1, 1)
        s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, C, 1, 1)
        x = x * s + m
    return x.clamp(0, 1)


def mse(reconstruction, original, reduction: str = "none") -> torch.Tensor:
    """Mean squared error in the **normalised** space (the paper's MSE), per image."""
    _check_pair(reconstruction, original)
    return _reduce((reconstruction - original).square().flatten(1).mean(dim=1), reduction)


def rmse(reconstruction, original, reduction: str = "none") -> torch.Tensor:
    """Root mean squared error in the **normalised** space, per image: ``‖x̂ − x‖/√D``."""
    return _reduce(mse(reconstruction, original).sqrt(), reduction)


def mse_pixels(reconstruction, original, mean=None, std=None, reduction: str = "none") -> torch.Tensor:
    """Mean squared error of the [0, 1] **pixel** images (denormalised, clamped), per image."""
    _check_pair(reconstruction, original)
    return mse(to_pixels(reconstruction, mean, std), to_pixels(original, mean, std), reduction)


def rmse_pixels(reconstruction, original, mean=None, std=None, reduction: str = "none") -> torch.Tensor:
    """Root mean squared error of the [0, 1] **pixel** images, per image."""
    return _reduce(mse_pixels(reconstruction, original, mean, std).sqrt(), reduction)


def psnr(reconstruction, original, mean=None, std=None, reduction: str = "none") -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of the [0, 1] pixel images: ``10·log10(1/MSE)`` per image.

    ``+inf`` for a perfect reconstruction; ``reduction="mean"`` averages the per-image values
    (breaching's convention).
    """
    return _reduce(-10 * torch.log10(mse_pixels(reconstruction, original, mean, std)), reduction)


def ssim(reconstruction, original, mean=None, std=None, reduction: str = "none", win_size: int = 11) -> torch.Tensor:
    """Structural similarity of the [0, 1] pixel images (``pytorch_msssim.ssim``), per image.

    Gaussian window ``win_size`` (odd, ≤ H and W), σ = 1.5, data range 1, K = (0.01, 0.03), valid
    filtering (the same as scikit-image's ``structural_similarity(gaussian_weights=True,
    use_sample_covariance=False, data_range=1)``), averaged over channels.

    Raises: ValueError for a ``win_size`` that is even or larger than the images.
    """
    from pytorch_msssim import ssim as _ssim

    _check_pair(reconstruction, original)
    H, W = original.shape[-2:]
    win_size = frontdoor.integer(win_size, "win_size", minimum=1)
    if win_size % 2 != 1 or win_size > min(H, W):
        raise ValueError(f"win_size must be odd and <= min(H, W) = {min(H, W)}, got {win_size}")
    a, b = to_pixels(reconstruction, mean, std), to_pixels(original, mean, std)
    values = _ssim(a, b, data_range=1.0, size_average=False, win_size=win_size, win_sigma=1.5)
    return _reduce(values, reduction)


def feature_mse(model: nn.Module, reconstruction, original, reduction: str = "none") -> torch.Tensor:
    """Mean squared difference of the model's outputs (logits) on the two batches, per image.

    Inputs are in the model's (normalised) space; no gradient is recorded.
    """
    _check_pair(reconstruction, original)
    frontdoor.model_parameters(model)
    frontdoor.output_classes(model, original, "original")
    buffers = frontdoor.private_buffers(model)  # a training-mode BatchNorm must not update the caller's statistics
    with torch.no_grad():
        diff = functional_call(model, buffers, (reconstruction,)) - functional_call(model, buffers, (original,))
    return _reduce(diff.square().flatten(1).mean(dim=1), reduction)


_LPIPS_MODELS: dict[str, nn.Module] = {}


def lpips(reconstruction, original, mean=None, std=None, net: str = "alex", reduction: str = "none") -> torch.Tensor:
    """LPIPS distance (Zhang et al. 2018) of the [0, 1] pixel images, per image (lower = closer).

    Images are scaled to [−1, 1] as the ``lpips`` package expects; one-channel images are repeated
    to three channels.

    Args:
        net: ``"alex"``, ``"vgg"`` or ``"squeeze"`` backbone.

    Raises:
        LPIPSUnavailableError: the ``lpips`` package is not installed or its backbone / linear
            weights cannot be loaded (this machine cannot download them).
        ValueError: unknown ``net``, or images that are not 1- or 3-channel.
    """
    frontdoor.choice(net, "net", ("alex", "vgg", "squeeze"))
    _check_pair(reconstruction, original)
    if original.shape[1] not in (1, 3):
        raise ValueError(f"lpips needs 1- or 3-channel images, got {original.shape[1]} channels")
    if net not in _LPIPS_MODELS:
        try:
            import lpips as lpips_package
        except ImportError as err:
            raise LPIPSUnavailableError("lpips needs the 'lpips' package: pip install lpips") from err
        try:
            _LPIPS_MODELS[net] = lpips_package.LPIPS(net=net, verbose=False).eval()
        except Exception as err:  # noqa: BLE001 — any failure to fetch or read weights
            raise LPIPSUnavailableError(
                f"lpips could not load the pretrained {net} weights ({type(err).__name__}: {err}); they are "
                "downloaded by torchvision on first use, which this machine cannot do: put them in the torch hub "
                "cache (torch.hub.get_dir()) from a machine that can"
            ) from err
    model = _LPIPS_MODELS[net]
    a, b = to_pixels(reconstruction, mean, std), to_pixels(original, mean, std)
    if a.shape[1] == 1:
        a, b = a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)
    with torch.no_grad():
        values = model(2 * a.float() - 1, 2 * b.float() - 1).flatten()
    return _reduce(values.to(original.dtype), reduction)
