"""Attacks that survive an interruption: every sample under every shared gradient, each finished
attack kept in the experiment's folder (used by pruning, init, training and unfairness).

:func:`~i2f_fast.experiments.reproduce.common.attack_rmse` runs the attacks of one call and
returns their RMSE; the experiments with many attacks (tens to a hundred, minutes each batch) also
need the MSE and SSIM the paper plots and must not redo finished attacks after an interruption, so
:func:`attack_each` writes every result to ``workdir/<tag>.json`` (atomic) as it finishes.
"""
from __future__ import annotations

import json
import pathlib

import torch
import torch.nn as nn

from ... import metrics
from ...attack import invert
from ...data import ImageBatch
from ...files import tensor_digest, write_json
from . import common


def attack_each(model: nn.Module, batch: ImageBatch, targets: torch.Tensor, config: dict, workdir: pathlib.Path, *,
                progress: bool = True, desc: str = "attack", tag: str = "attacks") -> dict:
    """Attack sample n of ``batch`` under every shared gradient ``targets[k, n]``.

    Args:
        model: the attacked model (``eval()`` mode).
        batch: the N private samples (images ``(N, C, H, W)``, labels known to the attacker).
        targets: ``(K, N, P)`` shared (defended) gradients.
        config: ``"attack"`` (``"dlg"`` / ``"gs"``, the preset; GS projects onto the pixel box, as
            the paper's code), ``"iterations"``, ``"restarts"`` and ``"seed"``: attack (k, n) starts
            from a generator seeded ``seed + k·N + n``, so a result does not depend on the order or
            on resuming. The attack runs PyTorch's native convolution kernels (fixed, not chosen by
            timing), so a rerun reproduces the same numbers bit for bit.
        workdir: where ``<tag>.json`` keeps the finished attacks, each under its index and a digest
            of its shared gradient, private sample and label (a changed model, data or defense is
            never served a stale attack), the file under these settings (other settings: ignored).

    Returns:
        ``{"rmse", "mse", "ssim"}``, each a K × N list: RMSE and MSE per element in the normalised
        space, SSIM of the [0, 1] pixel images.
    """
    K, N = targets.shape[:2]
    settings = dict(attack=config["attack"], iterations=config["iterations"], restarts=config["restarts"],
                    seed=config["seed"], conv_kernels="native")
    path = pathlib.Path(workdir) / f"{tag}.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    if cache.get("settings") != settings:
        cache = {"settings": settings, "done": {}}
    bounds = batch.pixel_bounds if config["attack"] == "gs" else None
    window = min(11, min(batch.images.shape[-2:]) // 2 * 2 - 1)  # SSIM's window: odd, inside the image
    out = {key: [[0.0] * N for _ in range(K)] for key in ("rmse", "mse", "ssim")}
    bar = common.progress_bar(K * N, desc, progress)
    for k in range(K):
        for n in range(N):
            key = f"{k},{n}:{tensor_digest(targets[k, n], batch.images[n], batch.labels[n])[:16]}"
            if key not in cache["done"]:
                x = batch.images[n : n + 1]
                found = invert(model, targets[k, n], batch.labels[n : n + 1], tuple(x.shape), attack=config["attack"],
                               iterations=config["iterations"], restarts=config["restarts"], bounds=bounds,
                               generator=torch.Generator().manual_seed(config["seed"] + k * N + n), progress=False,
                               onednn=False)  # fixed kernels, as common.attack_rmse: a rerun gives the same numbers
                guess = found.x.detach().to(x.dtype)
                cache["done"][key] = dict(rmse=metrics.rmse(guess, x).item(), mse=metrics.mse(guess, x).item(),
                                          ssim=metrics.ssim(guess, x, batch.mean, batch.std, win_size=window).item())
                write_json(path, cache)
            for metric in out:
                out[metric][k][n] = cache["done"][key][metric]
            bar.update()
    bar.close()
    return out
