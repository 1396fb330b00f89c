"""Reference kernel of the anisotropic total variation used as an image prior by GS attacks.

``TV(x) = mean|x[..., :, 1:] − x[..., :, :-1]| + mean|x[..., 1:, :] − x[..., :-1, :]|``: the mean
absolute horizontal plus the mean absolute vertical neighbour difference, over all samples and
channels of one restart (inversefed's ``total_variation``). Value and gradient in closed form
(``d|t|/dt = sign(t)``, 0 at 0, as autograd), so a fused kernel can replace it one to one.
"""
from __future__ import annotations

import torch


def tv_ref(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Total variation of images and its gradient.

    Args:
        x: ``(R, N, C, H, W)`` (R restarts of an NCHW batch) or ``(N, C, H, W)``; float dtype.

    Returns:
        ``(value, grad)``: ``value`` ``(R,)`` (one TV per restart, the mean taken over its N·C
        images) or ``()`` for NCHW input; ``grad`` shaped like ``x``. A side of length 1 has no
        neighbour differences and contributes 0.

    Raises:
        ValueError: ``x`` is not 4-D or 5-D.
    """
    if x.dim() not in (4, 5):
        raise ValueError(f"x must be (N, C, H, W) or (R, N, C, H, W), got shape {tuple(x.shape)}")
    batched = x.dim() == 5
    xr = x if batched else x.unsqueeze(0)
    value = xr.new_zeros(xr.shape[0])
    grad = torch.zeros_like(xr)
    for dim in (-1, -2):  # horizontal, vertical differences
        length = xr.shape[dim]
        if length < 2:
            continue
        diff = xr.narrow(dim, 1, length - 1) - xr.narrow(dim, 0, length - 1)
        count = diff.shape[1:].numel()  # per restart (also defined for R = 0)
        value = value + diff.abs().flatten(1).sum(dim=1) / count
        s = diff.sign() / count
        grad.narrow(dim, 1, length - 1).add_(s)
        grad.narrow(dim, 0, length - 1).sub_(s)
    return (value, grad) if batched else (value[0], grad[0])
