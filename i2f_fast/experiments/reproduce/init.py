"""E4, the paper's Fig. 7: how the initialisation of the model changes the privacy risk.

For every initialisation scheme (:func:`i2f_fast.models.initialize`: uniform, normal, kaiming,
xavier) and every one of the paper's seeds, LeNet is built with that scheme; for each sample the
exact expectation ``E‖I²F‖²`` under Gaussian gradient noise ``δ ~ N(0, σ²I)``
(:meth:`~i2f_fast.influence.InversionInfluence.expected_i2f_sq`, float64 spectrum) is computed with
the calibrated damping and with the paper's ε = 1, and the DLG attack is run on the gradient plus
one draw of that noise (the same draw for every scheme at a given seed, so the schemes are
compared on paired noise). Errors are RMSE per element in the normalised space:
``√(E‖Δ‖²/D)`` for the prediction.
"""
from __future__ import annotations

import math
import pathlib

import torch

from ...influence import InversionInfluence
from . import common
from .resumable_attacks import attack_each

NAME = "init"
PAPER = "Fig. 7"
CLAIM = ("The initialisation changes the risk: uniform is the riskiest (smallest E‖I²F‖² and attack error), "
         "normal next, and kaiming / xavier give the largest E‖I²F‖², i.e. they are preferred for privacy.")

SCHEMES = ("uniform", "normal", "kaiming", "xavier")
PAPER_SEEDS = (1, 123, 12345, 234, 345)


def options(quick: bool) -> dict:
    """The paper's setting: LeNet, 5 samples × the paper's 5 seeds per scheme, DLG. ``sigma`` is the
    noise std: the paper's code passes var = 1e-3 as the std. ``seeds`` seed the models, ``seed``
    the noise draws and the attacks' starts. --quick: 16×16 digits, 2 samples × 2 seeds, 200 attack
    iterations."""
    return dict(
        dataset="digits", root=None, iterations=200 if quick else 1000, seed=0,
        model="lenet", image_size=16 if quick else 28, start=0, samples=2 if quick else 5,
        schemes=list(SCHEMES), seeds=list(PAPER_SEEDS[:2] if quick else PAPER_SEEDS), sigma=1e-3,
        attack="dlg", restarts=1,
    )


def run(config: dict, workdir: pathlib.Path, progress: bool = True) -> dict:
    """Per scheme: ``seeds × samples`` lists of the predicted RMSE (calibrated and ε = 1), the exact
    ``E‖I²F‖²`` (calibrated), λ_max of ``JᵀJ`` and the attack's RMSE / MSE; medians in ``median``."""
    sigma = float(config["sigma"])
    batch = common.load_batch(config, config["samples"], start=config["start"], image_size=config["image_size"])
    per_scheme = {}
    bar = common.progress_bar(len(config["schemes"]) * len(config["seeds"]), f"{NAME}: spectra and DLG per scheme and seed",
                              progress)
    for scheme in config["schemes"]:
        rows = {key: [] for key in ("predicted_rmse", "paper_eps_rmse", "expected_sq", "lambda_max",
                                    "attack_rmse", "attack_mse")}
        for seed in config["seeds"]:
            model = common.model_for(config["model"], batch, init=scheme, seed=seed)
            influence = InversionInfluence(model, batch.images, batch.labels, per_sample=True)
            calibrated = influence.expected_i2f_sq(sigma)
            paper_eps = influence.expected_i2f_sq(sigma, eps=common.PAPER_EPS)
            clean = influence.jacobian.gradient.detach()  # (N, P)
            # the same draw for every scheme at this seed: the schemes are compared on paired noise
            draw = torch.Generator().manual_seed(config["seed"] + seed)
            noise = sigma * torch.randn(clean.shape, generator=draw, dtype=clean.dtype)
            attacks = attack_each(model, batch, (clean + noise).unsqueeze(0), config, workdir, progress=False,
                                  tag=f"attacks-{scheme}-{seed}")
            rows["predicted_rmse"].append(calibrated.rmse.tolist())
            rows["paper_eps_rmse"].append(paper_eps.rmse.tolist())
            rows["expected_sq"].append(calibrated.value.tolist())
            rows["lambda_max"].append(influence.spectrum().eigenvalues[:, -1].tolist())
            rows["attack_rmse"].append(attacks["rmse"][0])
            rows["attack_mse"].append(attacks["mse"][0])
            bar.update()
        rows["median"] = {key: common.median(sum(values, [])) for key, values in rows.items()}
        per_scheme[scheme] = rows
    bar.close()
    return dict(samples=list(range(config["start"], config["start"] + len(batch))), sigma=sigma,
                input_dim=math.prod(batch.images.shape[1:]), schemes=per_scheme)


def plot(result: dict, config: dict, path: pathlib.Path) -> None:
    """Box plots per scheme with every seed × sample as a point, log scale: the predicted RMSE
    (calibrated and ε = 1) next to the attack's RMSE."""
    schemes = list(result["schemes"])
    series = (("predicted_rmse", "I²F, calibrated ε", "tab:blue"), ("paper_eps_rmse", "I²F, paper's ε = 1", "tab:green"),
              ("attack_rmse", "DLG attack", "tab:red"))
    fig, axes = common.subplots(size=(8, 4.5))
    ax = axes[0][0]
    width = 0.25
    for offset, (key, label, color) in zip((-width, 0.0, width), series):
        data = [sum(result["schemes"][s][key], []) for s in schemes]
        positions = [i + offset for i in range(len(schemes))]
        parts = ax.boxplot(data, positions=positions, widths=width * 0.9, patch_artist=True, showfliers=False)
        for box in parts["boxes"]:
            box.set_facecolor(color)
            box.set_alpha(0.3)
        for position, values in zip(positions, data):  # every seed × sample as a point
            ax.plot([position] * len(values), values, ".", color=color, alpha=0.8)
        ax.plot([], [], "s", color=color, alpha=0.6, label=label)
    ax.set_yscale("log")
    ax.set_xticks(range(len(schemes)))
    ax.set_xticklabels(schemes)
    ax.set_ylabel("RMSE per element (normalised space)")
    ax.set_title(f"{PAPER}: initialisation, {config['model']} on {config['dataset']}, Gaussian noise σ = "
                 f"{result['sigma']:g}, {len(config['seeds'])} seeds × {len(result['samples'])} samples", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    common.save(fig, path)


def table(result: dict, config: dict) -> str:
    """One line per scheme: medians over seeds × samples."""
    lines = [f"{'scheme':>8} {'E‖I²F‖²':>10} {'I²F calib':>10} {'I²F ε=1':>10} {'λ_max':>10} {'attack':>10}"]
    for scheme, rows in result["schemes"].items():
        med = rows["median"]
        lines.append(f"{scheme:>8} {med['expected_sq']:>10.3e} {med['predicted_rmse']:>10.3e} "
                     f"{med['paper_eps_rmse']:>10.3e} {med['lambda_max']:>10.3e} {med['attack_rmse']:>10.3e}")
    lines.append(f"(medians over seeds × samples; RMSE per element in the normalised space; noise σ = {result['sigma']:g})")
    return "\n".join(lines)


def verdict(result: dict, config: dict) -> dict:
    """Holds when kaiming and xavier are above uniform and normal, and normal above uniform, in the
    calibrated prediction and in the attack (medians); partly when only kaiming/xavier above
    uniform/normal holds in the prediction."""
    med = {s: rows["median"] for s, rows in result["schemes"].items()}
    missing = [s for s in SCHEMES if s not in med]
    if missing:
        return {"status": "partly", "measured": f"schemes {missing} were not run"}

    def ordered(key: str) -> tuple[bool, bool]:
        safe_above = min(med["kaiming"][key], med["xavier"][key]) > max(med["uniform"][key], med["normal"][key])
        return safe_above, med["normal"][key] > med["uniform"][key]

    predicted, attack = ordered("predicted_rmse"), ordered("attack_rmse")
    paper_eps = ordered("paper_eps_rmse")
    measured = ("median RMSE calibrated I²F / attack / I²F ε=1: " + "; ".join(
        f"{s} {med[s]['predicted_rmse']:.2g} / {med[s]['attack_rmse']:.2g} / {med[s]['paper_eps_rmse']:.2g}" for s in SCHEMES)
        + f"; kaiming/xavier above uniform/normal: prediction {predicted[0]}, attack {attack[0]}, ε=1 {paper_eps[0]}"
        + f"; normal above uniform: prediction {predicted[1]}, attack {attack[1]}")
    if all(predicted) and all(attack):
        status = "holds"
    elif predicted[0]:
        status = "partly"
    else:
        status = "does not hold"
    return {"status": status, "measured": measured}
