"""``i2f-fast attack``: defend the shared gradient of a batch, run a gradient-inversion attack on it,
measure the reconstruction and draw it (original / reconstruction of every restart)."""
from __future__ import annotations

import time

import torch

from .. import metrics
from ..attack import invert
from .. import frontdoor
from .problem import Problem, defend, load_problem

METRIC_COLUMNS = ("restart", "matching_loss", "mse", "rmse", "rmse_pixels", "psnr", "ssim")


def _ssim_or_none(rec, orig, batch):
    if min(orig.shape[-2:]) < 11:  # the SSIM window does not fit
        return [None] * orig.shape[0]
    return metrics.ssim(rec, orig, batch.mean, batch.std).tolist()


def image_metrics(rec: torch.Tensor, orig: torch.Tensor, batch) -> dict:
    """Per-image metrics (lists over the N images) of one reconstruction ``(N, C, H, W)``."""
    return dict(
        mse=metrics.mse(rec, orig).tolist(),
        rmse=metrics.rmse(rec, orig).tolist(),
        rmse_pixels=metrics.rmse_pixels(rec, orig, batch.mean, batch.std).tolist(),
        psnr=metrics.psnr(rec, orig, batch.mean, batch.std).tolist(),
        ssim=_ssim_or_none(rec, orig, batch),
    )


def run_attack(args) -> tuple[dict, Problem, torch.Tensor]:
    """Run the attack job; returns the JSON dict, the attacked problem and the ``(R, N, C, H, W)``
    reconstructions of every restart."""
    if args.threads:
        torch.set_num_threads(args.threads)
    problem = load_problem(args)
    gen = torch.Generator().manual_seed(args.seed)
    clean = frontdoor.flat_gradient(problem.model, problem.x, problem.y)
    defended = defend(args.defense, args.strength, clean, (problem.model, problem.x, problem.y), args, gen)
    start = time.perf_counter()
    res = invert(
        problem.model, defended.grads, None if args.infer_labels else problem.y, tuple(problem.x.shape),
        attack=args.attack, iterations=args.iterations, restarts=args.restarts, tv=args.tv, lr=args.lr,
        optimizer=args.optimizer, bounds=problem.batch.pixel_bounds if args.attack == "gs" else None,
        init=args.init_images, generator=gen, progress=not args.quiet,
    )
    seconds = time.perf_counter() - start
    per_restart = []
    for r in range(args.restarts):
        row = dict(restart=r, matching_loss=res.losses[r].item())
        row.update(image_metrics(res.restarts[r], problem.x, problem.batch))
        per_restart.append(row)
    result = dict(
        config=dict(
            dataset=args.dataset, model=args.model, samples=args.samples, start=args.start,
            shape=list(problem.x.shape), num_params=problem.num_params, defense=args.defense,
            strength=args.strength, attack=args.attack, optimizer=args.optimizer, iterations=args.iterations,
            restarts=args.restarts, tv=res.config.tv, lr=res.config.lr, seed=args.seed, dtype=args.dtype,
        ),
        defense_stats=defended.stats,
        labels=problem.y.tolist(),
        labels_used=res.labels.tolist(),
        best_restart=res.best,
        seconds=seconds,
        restarts=per_restart,
        history=dict(steps=res.history_steps.tolist(), objective=res.history.T.tolist()),
    )
    return result, problem, res.restarts


def print_attack(result: dict) -> None:
    cfg = result["config"]
    s = result["defense_stats"]
    print(f"{cfg['attack']} attack on {cfg['samples']} {cfg['dataset']} sample(s) through {cfg['model']} "
          f"({cfg['num_params']:,} parameters), {cfg['iterations']} iterations × {cfg['restarts']} restart(s), "
          f"{result['seconds']:.1f} s")
    strength = "" if cfg["strength"] is None else f" {cfg['strength']:g}"
    print(f"defense {cfg['defense']}{strength}: ‖g‖ {s['grad_norm']:.3e}, ‖δ‖ {s['delta_norm']:.3e}, "
          f"‖δ‖/‖g‖ {s['ratio']:.3g}, cos(g, g+δ) {s['cosine']:.4f}")
    if result["labels_used"] != result["labels"]:
        print(f"labels inferred: {result['labels_used']} (true {result['labels']})")
    header = ("restart", "match loss", "sample", "MSE", "RMSE", "RMSE px", "PSNR dB", "SSIM")
    print(" ".join(f"{h:>10}" for h in header))
    for row in result["restarts"]:
        for n in range(len(row["mse"])):
            ssim = row["ssim"][n]
            best = "*" if row["restart"] == result["best_restart"] else " "
            cells = (
                f"{row['restart']:>9d}{best}", f"{row['matching_loss']:>10.3e}", f"{n:>10d}", f"{row['mse'][n]:>10.3e}",
                f"{row['rmse'][n]:>10.3e}", f"{row['rmse_pixels'][n]:>10.3e}", f"{row['psnr'][n]:>10.2f}",
                f"{'-' if ssim is None else format(ssim, '.4f'):>10}",
            )
            print(" ".join(cells))
    print("(* best restart: smallest final matching loss; MSE/RMSE in the normalised space, the rest in [0, 1] pixels)")
