"""Figures and labels the jobs share: the reconstruction grid, the log-log scatter, the damping label
(files written atomically through :mod:`i2f_fast.files`)."""
from __future__ import annotations

from pathlib import Path

import torch

from .. import metrics
from ..files import pyplot, save_figure
from ..influence import DEFAULT_EPS_REL


def damping_label(eps: float | None, eps_rel: float | None) -> str:
    """``ε = …`` as a job ran it: absolute, else relative to λ_max (the calibrated default when None)."""
    return f"ε = {eps:g}" if eps is not None else f"ε = {DEFAULT_EPS_REL if eps_rel is None else eps_rel:g}·λ_max"


def save_grid(original: torch.Tensor, restarts: torch.Tensor, batch, best: int, path: Path) -> None:
    """PNG grid: one column per sample, the original on top, then one row per restart.

    ``original`` is ``(N, C, H, W)`` and ``restarts`` ``(R, N, C, H, W)``, both normalised with
    ``batch.mean`` / ``batch.std``.
    """
    plt = pyplot()
    R, N = restarts.shape[:2]
    rows = [("original", original)] + [(f"restart {r}" + (" (best)" if r == best else ""), restarts[r]) for r in range(R)]
    fig, axes = plt.subplots(len(rows), N, figsize=(1.6 * N + 1.2, 1.6 * len(rows)), squeeze=False)
    for i, (title, images) in enumerate(rows):
        pixels = metrics.to_pixels(images.detach().float(), batch.mean, batch.std)
        for n in range(N):
            ax = axes[i][n]
            img = pixels[n].permute(1, 2, 0).numpy()
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if n == 0:
                ax.set_ylabel(title, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def save_scatter(predicted, measured, strengths, title: str, xlabel: str, path: Path, kinds=None,
                 level_name: str = "strength") -> None:
    """Log-log scatter of ``measured`` against ``predicted`` with y = x: one colour per strength and,
    when ``kinds`` (a series name per point, e.g. ``"local"`` / ``"global"``) is given, one marker
    per series. All sequences have one entry per point."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    kinds = [None] * len(predicted) if kinds is None else list(kinds)
    levels = sorted(set(strengths), key=lambda s: (s is None, s))
    colors = plt.cm.viridis([i / max(1, len(levels) - 1) for i in range(len(levels))])
    for kind, marker in zip(dict.fromkeys(kinds), "oxs^dv"):
        for color, level in zip(colors, levels):
            pts = [(p, m) for p, m, s, k in zip(predicted, measured, strengths, kinds) if s == level and k == kind]
            label = " ".join(([kind] if kind else []) + ([f"{level_name} {level:g}"] if level is not None else []))
            ax.loglog([p for p, _ in pts], [m for _, m in pts], marker, color=color, label=label)
    positive = [v for v in list(predicted) + list(measured) if v > 0]
    if positive:
        lo, hi = min(positive) / 2, max(positive) * 2
        ax.loglog([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("attack RMSE (normalised space)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2 if len(set(kinds)) > 1 else 1)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
