"""Per-sample pieces shared by the pruning, init, training and unfairness experiments.

The paper attacks one sample at a time (a batch of one). :func:`load_problem` loads the configured
samples and builds the configured model; :func:`attack_each` runs the attack on every sample under
every perturbation and keeps each finished attack in ``workdir`` (atomic JSON), so an interrupted
run resumes where it stopped; :func:`median_rows` and :func:`spearman` summarise.
"""
from __future__ import annotations

import json
import math
import pathlib
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn

from ... import metrics
from ...attack import invert
from ...data import ImageBatch, load_dataset
from ...models import build_model
from ..output import save_figure as _save_figure, write_json

PAPER_EPS = 1.0
"""The damping of the paper's code (``regu = 1``), shown next to the calibrated prediction."""


@dataclass
class Problem:
    """The configured model (``eval()`` mode) and samples: ``x`` ``(N, C, H, W)``, ``y`` ``(N,)``."""

    batch: ImageBatch
    model: nn.Module
    indices: list

    @property
    def x(self) -> torch.Tensor:
        return self.batch.images

    @property
    def y(self) -> torch.Tensor:
        return self.batch.labels


def load_problem(config: dict, *, start: int | None = None, samples: int | None = None, model: nn.Module | None = None,
                 seed: int | None = None, init: str | None = None) -> Problem:
    """Samples ``start … start+samples−1`` of ``config["dataset"]`` and ``config["model"]`` built for
    them with ``config["init"]`` and ``config["seed"]`` (each overridable; ``model`` given: used as is)."""
    start = config["start"] if start is None else start
    samples = config["samples"] if samples is None else samples
    extra = {"image_size": config["image_size"]} if config["dataset"] in ("digits", "natural") else {}
    batch = load_dataset(config["dataset"], n=samples, start=start, root=config["root"], **extra)
    if model is None:
        model = build_model(config["model"], tuple(batch.images.shape[1:]), batch.num_classes,
                            init=config["init"] if init is None else init, seed=config["seed"] if seed is None else seed)
    return Problem(batch, model, list(range(start, start + samples)))


def generator(config: dict, offset: int = 0) -> torch.Generator:
    """A CPU generator seeded with ``config["seed"] + offset``."""
    return torch.Generator().manual_seed(config["seed"] + offset)


def attack_each(problem: Problem, targets: torch.Tensor, config: dict, workdir: pathlib.Path, *,
                progress: bool = True, desc: str = "attack", tag: str = "attacks") -> dict:
    """Attack every sample n under every shared gradient ``targets[k, n]`` ``(K, N, P)``.

    Runs ``invert(attack=config["attack"], iterations=config["iterations"], restarts=config["restarts"])``
    with labels known; attack (k, n) draws its start from a generator seeded with
    ``config["seed"] + k·N + n``, so results do not depend on the order or on resuming. Finished
    attacks are kept in ``workdir/<tag>.json`` (atomic) keyed by the attack's settings, and reused.

    Returns ``{"rmse", "mse", "ssim"}``, each a K × N list (normalised space; SSIM on [0, 1] pixels).
    """
    from tqdm.auto import tqdm

    K, N = targets.shape[:2]
    batch = problem.batch
    settings = dict(attack=config["attack"], iterations=config["iterations"], restarts=config["restarts"],
                    seed=config["seed"])
    cache_path = pathlib.Path(workdir) / f"{tag}.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    if cache.get("settings") != settings:
        cache = {"settings": settings, "done": {}}
    out = {key: [[0.0] * N for _ in range(K)] for key in ("rmse", "mse", "ssim")}
    bar = tqdm(total=K * N, desc=desc, unit="attack", file=sys.stderr, leave=False, disable=not progress)
    for k in range(K):
        for n in range(N):
            key = f"{k},{n}"
            if key not in cache["done"]:
                xn, yn = problem.x[n : n + 1], problem.y[n : n + 1]
                found = invert(problem.model, targets[k, n], yn, tuple(xn.shape), attack=config["attack"],
                               iterations=config["iterations"], restarts=config["restarts"],
                               generator=generator(config, k * N + n), progress=False)
                reconstruction = found.x.detach()
                cache["done"][key] = dict(
                    rmse=metrics.rmse(reconstruction, xn).item(), mse=metrics.mse(reconstruction, xn).item(),
                    ssim=metrics.ssim(reconstruction, xn, batch.mean, batch.std,
                                      win_size=min(11, _odd_below(min(xn.shape[-2:])))).item(),
                )
                write_json(cache_path, cache)
            for metric in out:
                out[metric][k][n] = cache["done"][key][metric]
            bar.update()
    bar.close()
    return out


def _odd_below(size: int) -> int:
    """The largest odd number ≤ size."""
    return size if size % 2 else size - 1


def median(values) -> float:
    """Median of a sequence, or of every entry of a nested list (the mean of the two middle values
    for an even count)."""
    return float(torch.as_tensor(values, dtype=torch.float64).flatten().quantile(0.5))


def median_rows(rows: list) -> list:
    """:func:`median` of every row of a K × N list."""
    return [median(row) for row in rows]


def spearman(a, b) -> float:
    """Spearman rank correlation of two equal-length sequences (0 when either is constant)."""
    from scipy.stats import spearmanr

    value = spearmanr(list(a), list(b)).statistic
    return 0.0 if value is None or not math.isfinite(value) else float(value)


def pyplot():
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: pathlib.Path) -> None:
    """``fig`` as a PNG at ``path`` (atomic), then closed."""
    _save_figure(fig, path, dpi=120)
