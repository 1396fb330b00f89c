"""E2, the paper's Fig. 13: global magnitude pruning of the shared gradient, predicted and attacked.

For every sample (a batch of one, the paper's setting) and pruning ratio r, the defense
:func:`i2f_fast.defenses.prune` zeroes the ``round(r·P)`` smallest gradient entries; its
perturbation ``δ = pruned − clean`` goes to the prediction (I²F with the calibrated damping and
with the paper's ε = 1, and the lower bound ``‖Jᵀδ‖/λ_max``) and the pruned gradient to the DLG
attack, whose reconstruction gives the MSE / RMSE / SSIM the paper plots. Every error is an RMSE
per element in the normalised input space (the prediction's ``‖Δ‖/√D``).
"""
from __future__ import annotations

import math
import pathlib

import torch

from ...defenses import prune
from ...influence import InversionInfluence
from . import common
from .resumable_attacks import attack_each

NAME = "pruning"
PAPER = "Fig. 13"
CLAIM = ("Under global magnitude pruning of the gradient, I²F and its lower bound grow with the pruning ratio "
         "as the DLG attack's reconstruction error does (MSE up, SSIM down).")

PAPER_LOG = dict(
    ratio=0.4,
    attack_rmse=[0.0149, 0.0139, 0.0142, 0.0179, 0.0135],
    attack_ssim=[0.9932, 0.995, 0.9846, 0.9939, 0.9962],
    bound_rmse=[1.71e-4, 9.33e-5, 8.82e-5, 1.79e-4, 1.07e-4],
)
"""The paper's published log at pruning ratio 0.4 (``demos/output/bound_pruning.log``: LeNet, MNIST test
images 0–4, 24,000 DLG iterations): RMSE = √MSE, SSIM, and the bound ``JtDelta / MaxEigenValue / √784``
per element, for comparison with ours in the table and the verdict."""


def options(quick: bool) -> dict:
    """The paper's setting (LeNet, U(±0.5) init, DLG, 5 samples, ratios 0.1–0.9); --quick: 16×16
    digits, 2 samples, 3 ratios, 300 attack iterations."""
    return dict(
        dataset="digits", root=None, iterations=300 if quick else 2000, seed=1,
        model="lenet", init="uniform", image_size=16 if quick else 28, start=0, samples=2 if quick else 5,
        ratios=[0.1, 0.5, 0.9] if quick else [round(0.1 * i, 1) for i in range(1, 10)],
        attack="dlg", restarts=1,
    )


def run(config: dict, workdir: pathlib.Path, progress: bool = True) -> dict:
    """Prune every sample's gradient at every ratio, predict, attack.

    Returns per-ratio × per-sample lists (K ratios × N samples): ``delta_norm``, ``predicted_rmse``
    (calibrated), ``paper_eps_rmse`` (ε = 1), ``bound_rmse``, ``attack_rmse``, ``attack_mse``,
    ``attack_ssim``; and the medians over samples per ratio in ``median``.
    """
    batch = common.load_batch(config, config["samples"], start=config["start"], image_size=config["image_size"])
    model = common.model_for(config["model"], batch, init=config["init"], seed=config["seed"])
    N, D = len(batch), math.prod(batch.images.shape[1:])
    influence = InversionInfluence(model, batch.images, batch.labels, per_sample=True,
                                   generator=torch.Generator().manual_seed(config["seed"]))
    clean = influence.jacobian.gradient.detach()  # (N, P): each sample's own gradient
    ratios = [float(r) for r in config["ratios"]]
    deltas = torch.stack([torch.stack([prune(clean[n], r).delta for n in range(N)]) for r in ratios])  # (K, N, P)
    predicted = common.predicted_rmse(influence, deltas)
    attacks = attack_each(model, batch, clean.unsqueeze(0) + deltas, config, workdir, progress=progress,
                          desc=f"{NAME}: DLG per ratio and sample")
    result = dict(
        samples=list(range(config["start"], config["start"] + N)), labels=batch.labels.tolist(), input_dim=D,
        num_params=clean.shape[1], ratios=ratios, delta_norm=deltas.norm(dim=2).tolist(),
        predicted_rmse=predicted["calibrated"].tolist(), paper_eps_rmse=predicted["paper"].tolist(),
        bound_rmse=predicted["lower_bound"].tolist(),
        attack_rmse=attacks["rmse"], attack_mse=attacks["mse"], attack_ssim=attacks["ssim"],
    )
    keys = ("predicted_rmse", "paper_eps_rmse", "bound_rmse", "attack_rmse", "attack_ssim")
    result["median"] = {key: [common.median(row) for row in result[key]] for key in keys}
    return result


def plot(result: dict, config: dict, path: pathlib.Path) -> None:
    """Left: RMSE against the pruning ratio (attack per sample and median; calibrated I²F, ε = 1,
    bound), log scale. Right: the attack's SSIM."""
    ratios, med = result["ratios"], result["median"]
    fig, axes = common.subplots(1, 2, size=(10, 4))
    left, right = axes[0]
    for row, ratio in zip(result["attack_rmse"], ratios):
        left.semilogy([ratio] * len(row), row, ".", color="tab:red", alpha=0.4)
    left.semilogy(ratios, med["attack_rmse"], "o-", color="tab:red", label="DLG attack (median)")
    left.semilogy(ratios, med["predicted_rmse"], "s-", color="tab:blue", label="I²F, calibrated ε")
    left.semilogy(ratios, med["paper_eps_rmse"], "^--", color="tab:green", label="I²F, paper's ε = 1")
    left.semilogy(ratios, med["bound_rmse"], "v:", color="tab:gray", label="lower bound ‖Jᵀδ‖/λ_max")
    left.set_xlabel("pruning ratio")
    left.set_ylabel("RMSE per element (normalised space)")
    left.legend(fontsize=8)
    left.grid(True, which="both", alpha=0.3)
    for row, ratio in zip(result["attack_ssim"], ratios):
        right.plot([ratio] * len(row), row, ".", color="tab:red", alpha=0.4)
    right.plot(ratios, med["attack_ssim"], "o-", color="tab:red", label="DLG attack (median)")
    right.set_xlabel("pruning ratio")
    right.set_ylabel("SSIM")
    right.grid(True, alpha=0.3)
    fig.suptitle(f"{PAPER}: gradient pruning, {config['model']} on {config['dataset']}, "
                 f"{len(result['samples'])} samples, {config['iterations']} DLG iterations", fontsize=9)
    common.save(fig, path)


def table(result: dict, config: dict) -> str:
    """One line per ratio: medians over the samples."""
    med = result["median"]
    lines = [f"{'ratio':>6} {'I²F calib':>10} {'I²F ε=1':>10} {'bound':>10} {'attack':>10} {'SSIM':>7}"]
    for k, ratio in enumerate(result["ratios"]):
        lines.append(f"{ratio:>6.1f} {med['predicted_rmse'][k]:>10.3e} {med['paper_eps_rmse'][k]:>10.3e} "
                     f"{med['bound_rmse'][k]:>10.3e} {med['attack_rmse'][k]:>10.3e} {med['attack_ssim'][k]:>7.4f}")
    lines.append("(RMSE per element in the normalised space, median over samples)")
    lines.append(f"paper's log at ratio {PAPER_LOG['ratio']:g} (MNIST, 24,000 iterations): attack "
                 f"{common.median(PAPER_LOG['attack_rmse']):.3e}, SSIM {common.median(PAPER_LOG['attack_ssim']):.4f}, "
                 f"bound {common.median(PAPER_LOG['bound_rmse']):.3e}")
    return "\n".join(lines)


def verdict(result: dict, config: dict) -> dict:
    """Holds when the attack's RMSE and the calibrated I²F both rise with the ratio (Spearman over
    the ratios > 0.5 each) and the SSIM falls; partly when only one of the two rises."""
    med, ratios = result["median"], result["ratios"]
    attack_trend = common.log_correlation(ratios, med["attack_rmse"])["spearman"] or 0.0
    predicted_trend = common.log_correlation(ratios, med["predicted_rmse"])["spearman"] or 0.0
    ssim_falls = med["attack_ssim"][-1] < med["attack_ssim"][0]
    attack, predicted = med["attack_rmse"], med["predicted_rmse"]
    agree = [r for r, a, p in zip(ratios, attack, predicted) if p > 0 and 0.8 <= a / p <= 1.25]
    agreement = (f"attack within ±25 % of the calibrated I²F at ratios {', '.join(f'{r:g}' for r in agree)}" if agree
                 else "attack never within ±25 % of the calibrated I²F")
    measured = (f"Spearman over the ratios: attack RMSE {attack_trend:+.2f}, I²F {predicted_trend:+.2f}; SSIM "
                f"{med['attack_ssim'][0]:.3f} → {med['attack_ssim'][-1]:.3f}; {agreement}; at ratio {ratios[0]:g} attack "
                f"{attack[0]:.3g} vs I²F {predicted[0]:.3g} (the attack's floor after {config['iterations']} iterations "
                f"when above), at {ratios[-1]:g} attack {attack[-1]:.3g} vs I²F {predicted[-1]:.3g} (ε = 1: "
                f"{med['paper_eps_rmse'][-1]:.3g}, bound {med['bound_rmse'][-1]:.3g})")
    if PAPER_LOG["ratio"] in ratios:
        k = ratios.index(PAPER_LOG["ratio"])
        measured += (f"; at ratio {PAPER_LOG['ratio']:g} the paper's log has attack RMSE "
                     f"{common.median(PAPER_LOG['attack_rmse']):.3g}, SSIM {common.median(PAPER_LOG['attack_ssim']):.3f}, "
                     f"bound {common.median(PAPER_LOG['bound_rmse']):.2g}, we measure {attack[k]:.3g}, "
                     f"{med['attack_ssim'][k]:.3f}, {med['bound_rmse'][k]:.2g}")
    if attack_trend > 0.5 and predicted_trend > 0.5 and ssim_falls:
        status = "holds"
    elif attack_trend > 0.5 or predicted_trend > 0.5:
        status = "partly"
    else:
        status = "does not hold"
    return {"status": status, "measured": measured}
