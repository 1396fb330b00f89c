"""Small helpers the reproduction experiments share, thin wrappers over the library's API: the
configured data, a model checked against it, per-sample gradients and attacks, the prediction in
its three forms (calibrated, the paper's ε = 1, the lower bound) as RMSE per element, progress bars
and figures.

Shapes: ``N`` samples (each its own batch of one, the paper's setting), ``P`` trainable
parameters, ``D`` elements of one sample, ``K`` perturbations per sample.
"""
from __future__ import annotations

import math
import sys

import torch
import torch.nn as nn

from ... import frontdoor, metrics
from ...attack import invert
from ...data import DatasetUnavailableError, ImageBatch, load_dataset
from ...influence import InversionInfluence
from ...models import build_model
from ...files import save_figure
from ..compare_job import correlations

PAPER_EPS = 1.0
"""The damping of the paper's code (``regu = 1``), shown next to the calibrated default."""

BUILT_IN = ("digits", "natural")
"""Datasets bundled with the library (no files needed; ``image_size`` applies to them only)."""


class ReproduceInputError(ValueError):
    """A command-line choice that cannot run (dataset not on disk, model that does not fit the data);
    the message names the flag."""


def dataset_names(config: dict) -> list[str]:
    """``config["dataset"]`` as a list of dataset names (an experiment may cover several)."""
    value = config["dataset"]
    return [value] if isinstance(value, str) else list(value)


def load_batch(config: dict, n: int, *, dataset: str | None = None, start: int = 0,
               image_size: int | None = None) -> ImageBatch:
    """Samples ``start … start+n−1`` of ``dataset`` (default: the first of ``config["dataset"]``),
    read from ``config["root"]`` for the torchvision datasets; ``image_size`` resizes the built-in
    ones (torchvision images keep their size). Images ``(n, C, H, W)`` normalised.

    Raises:
        ReproduceInputError: the dataset is not on disk (names ``--dataset`` and ``--root``).
    """
    name = dataset or dataset_names(config)[0]
    extra = {"image_size": image_size} if image_size is not None and name in BUILT_IN else {}
    try:
        return load_dataset(name, n=n, start=start, root=config.get("root"), **extra)
    except DatasetUnavailableError as err:
        raise ReproduceInputError(f"--dataset {name} --root {config.get('root')}: {err}") from err


def check_datasets(config: dict) -> None:
    """Load one sample of every dataset of ``config`` (before any computation); ReproduceInputError if one is missing."""
    for name in dataset_names(config):
        load_batch(config, 1, dataset=name)


def model_for(name: str, batch: ImageBatch, *, init: str | None = None, seed: int = 0,
              dtype: torch.dtype = torch.float32) -> nn.Module:
    """``build_model(name, …)`` for ``batch``'s image shape and classes, in ``eval()`` mode and
    ``dtype``, checked with one forward pass.

    Raises:
        ReproduceInputError: the model does not accept the data's shape (names ``--model`` and ``--dataset``).
    """
    shape = tuple(batch.images.shape[1:])
    try:
        model = build_model(name, shape, batch.num_classes, init=init, seed=seed).to(dtype)
        with torch.no_grad():
            logits = model(batch.images[:1].to(dtype))
        if logits.shape != (1, batch.num_classes):
            raise ValueError(f"it returns logits of shape {tuple(logits.shape)}, not (1, {batch.num_classes})")
    except (RuntimeError, ValueError) as err:
        raise ReproduceInputError(
            f"--model {name} does not fit --dataset {batch.name} (images {shape}): {' '.join(str(err).split())}"
        ) from err
    return model


def num_params(model: nn.Module) -> int:
    """Trainable parameters ``P`` (the length of a flat gradient)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def sample_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(N, P)``: the clean shared gradient of every sample as its own batch of one."""
    return torch.stack([frontdoor.flat_gradient(model, x[n : n + 1], y[n : n + 1]) for n in range(x.shape[0])])


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr (a silent one when ``enabled`` is False)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, disable=not enabled)


def attack_rmse(model: nn.Module, batch: ImageBatch, x: torch.Tensor, targets: torch.Tensor, *, attack: str,
                iterations: int, generator: torch.Generator, restarts: int = 1, box: bool | None = None,
                bar=None) -> torch.Tensor:
    """Run ``invert`` on every sample's shared gradient and measure where it lands.

    Args:
        model: the attacked model (``eval()`` mode); batch: the data ``x`` came from (its box).
        x: ``(N, C, H, W)`` private inputs, labels ``batch.labels[:N]`` known to the attacker.
        targets: ``(N, P)`` shared (defended) gradients, one per sample.
        attack: ``"dlg"`` or ``"gs"`` with its preset; iterations, restarts: of ``invert``.
        box: project onto the valid pixel box (default: for GS only, as the paper's code).
        bar: a :func:`progress_bar` advanced once per sample.

    The attack runs PyTorch's native convolution kernels (the faster ones for one sample, and fixed, so
    a rerun reproduces the same numbers bit for bit).

    Returns:
        ``(N,)`` float64 RMSE per element of the best restart in the normalised space (``metrics.rmse``).
    """
    box = attack == "gs" if box is None else box
    rmse = torch.empty(x.shape[0], dtype=torch.float64)
    for n in range(x.shape[0]):
        res = invert(
            model, targets[n], batch.labels[n : n + 1], (1, *x.shape[1:]), attack=attack, iterations=iterations,
            restarts=restarts, bounds=batch.pixel_bounds if box else None, generator=generator, progress=False,
            onednn=False,  # fixed kernels (not chosen by timing): a rerun gives the same numbers
        )
        rmse[n] = metrics.rmse(res.x.to(x.dtype), x[n : n + 1]).item()
        if bar is not None:
            bar.update()
    return rmse


def predicted_rmse(influence: InversionInfluence, deltas: torch.Tensor, objective: str = "l2",
                   method: str = "auto") -> dict[str, torch.Tensor]:
    """The prediction for ``deltas`` (``(K, N, P)``, per-sample ``influence``) as RMSE per element
    (``‖Δ‖/√D``, normalised space), each ``(K, N)`` float64:

    - ``"calibrated"``: ``influence.i2f`` at the default damping (ε = 1e-8·λ_max, the converged attacker);
    - ``"paper"``: the paper's damping ε = :data:`PAPER_EPS`;
    - ``"lower_bound"``: ``‖Jᵀδ‖/λ_max`` (the paper's I²F_lb), divided by √D like the others.

    ``method`` is the calibrated prediction's solver (``"spectral"`` for few δ on small systems: exact,
    where ``"auto"`` would take LSQR for fewer than three).
    """
    root_d = math.sqrt(influence.row_dim)
    return dict(
        calibrated=influence.i2f(deltas, objective=objective, method=method).rmse.to(torch.float64),
        paper=influence.i2f(deltas, PAPER_EPS, objective=objective).rmse.to(torch.float64),
        lower_bound=(influence.lower_bound(deltas).value / root_d).to(torch.float64),
    )


def log_correlation(xs, ys) -> dict:
    """Pearson and Spearman correlations of log xs with log ys (``n``, ``pearson``, ``spearman`` and
    their p-values; None when undefined), as ``i2f-fast compare`` reports them."""
    return correlations(list(xs), list(ys))


def median(values) -> float | None:
    """Median of the finite values (None when there are none)."""
    finite = sorted(v for v in values if v is not None and math.isfinite(v))
    if not finite:
        return None
    mid = len(finite) // 2
    return finite[mid] if len(finite) % 2 else 0.5 * (finite[mid - 1] + finite[mid])


def fmt(value, spec: str = ".3g") -> str:
    """``format(value, spec)``, or ``"n/a"`` for None (e.g. a correlation over fewer than three points)."""
    return "n/a" if value is None else format(value, spec)


def subplots(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (6.4, 4.8)):
    """``(fig, axes)`` from matplotlib's Agg backend; ``axes`` always a 2-D array."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=size, squeeze=False)


def save(fig, path) -> None:
    """Write ``fig`` as a PNG at ``path`` atomically (``output.save_figure``) and close it."""
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def format_table(header, rows) -> str:
    """Plain-text table: ``header`` (strings) and ``rows`` (sequences of cells, already formatted or numbers)."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3e}" if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4) else f"{v:.4g}"
        return "-" if v is None else str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = [" ".join(f"{h:>{w}}" for h, w in zip(header, widths))]
    lines += [" ".join(f"{c:>{w}}" for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)
