"""Files the jobs write: JSON without non-finite numbers, the reconstruction grid, the log-log scatter;
every file written atomically (temp file + rename, :func:`atomic_path`)."""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path

import torch

from .. import metrics
from ..influence import DEFAULT_EPS_REL


def _finite(obj):
    """Replace inf / NaN floats (e.g. the PSNR of a perfect reconstruction) by None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path`` (one
    ``os.replace``), on failure removed: a reader never sees a half-written file, even when the
    job is killed mid-write (the old file, if any, stays until the rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: dict) -> None:
    """Strict JSON (non-finite numbers written as null), written atomically (:func:`atomic_path`)."""
    text = json.dumps(_finite(obj), indent=2, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_figure(fig, path: Path, dpi: int) -> None:
    """``fig`` as a PNG at ``path``, written atomically (:func:`atomic_path`), then closed."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    _pyplot().close(fig)


def damping_label(eps: float | None, eps_rel: float | None) -> str:
    """``ε = …`` as a job ran it: absolute, else relative to λ_max (the calibrated default when None)."""
    return f"ε = {eps:g}" if eps is not None else f"ε = {DEFAULT_EPS_REL if eps_rel is None else eps_rel:g}·λ_max"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_grid(original: torch.Tensor, restarts: torch.Tensor, batch, best: int, path: Path) -> None:
    """PNG grid: one column per sample, the original on top, then one row per restart.

    ``original`` is ``(N, C, H, W)`` and ``restarts`` ``(R, N, C, H, W)``, both normalised with
    ``batch.mean`` / ``batch.std``.
    """
    plt = _pyplot()
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
    plt = _pyplot()
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
