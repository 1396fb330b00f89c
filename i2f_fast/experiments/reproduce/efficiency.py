"""E8 (the paper's efficiency figure): what the prediction costs next to the attack it predicts.

Per model, on one sample with Gaussian gradient noise, measured in one process with the
measurements interleaved round by round (median over rounds): the paper's lower bound
(``‖Jᵀδ‖/λ_max``, λ_max by Lanczos), I²F at the paper's ε = 1 (CG), the calibrated I²F (ε =
1e-8·λ_max, the spectral route, for the models in ``calibrated_models``), each on a fresh
:class:`~i2f_fast.influence.InversionInfluence` (nothing cached), and the DLG attack (after one
untimed warm-up call): the time of ``timed_iterations`` iterations, scaled to ``iterations`` (the paper's 24,000; the scaling is
reported as such). Timings depend on the machine and its load; the ratios are the result.
"""
from __future__ import annotations

import math
import os
import time

import torch

from ...influence import InversionInfluence
from . import common

NAME = "efficiency"
PAPER = "efficiency figure"
CLAIM = "I²F and its lower bound cost a small fraction of running the attack they predict, on every model"

MEASURES = ("bound", "i2f_paper", "i2f_calibrated", "attack")
LABELS = {"bound": "I²F_lb (Lanczos)", "i2f_paper": "I²F, ε = 1 (CG)", "i2f_calibrated": "I²F calibrated (spectral)",
          "attack": "DLG attack"}


def options(quick: bool) -> dict:
    """Defaults: LeNet, Linear, MLP on 28×28 digits and ResNet18 on 8×8 (one round: its CG alone takes
    minutes on one core), 3 rounds, the attack timed over 10 iterations and scaled to 24,000; quick:
    LeNet and Linear at 12×12, 2 rounds, 5 timed iterations."""
    return dict(
        dataset="digits", root=None, iterations=24000, seed=0,
        models=["lenet", "linear"] if quick else ["lenet", "linear", "mlp", "resnet18"],
        image_size=12 if quick else 28, model_image_size={"resnet18": 8}, rounds=2 if quick else 3,
        model_rounds={"resnet18": 1}, timed_iterations=5 if quick else 10, variance=1e-4,
        calibrated_models=["lenet", "linear", "mlp"],
    )


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _time_model(config: dict, model_name: str, gen: torch.Generator) -> dict:
    """Median seconds of every measure for one model (None where not measured)."""
    size = config.get("model_image_size", {}).get(model_name, config["image_size"])
    batch = common.load_batch(config, 1, image_size=size)
    model = common.model_for(model_name, batch, seed=config["seed"])
    x, y = batch.images, batch.labels
    grads = common.sample_gradients(model, x, y)
    delta = math.sqrt(config["variance"]) * torch.randn(grads.shape, generator=gen)  # (1, P): one sample
    fresh = lambda: InversionInfluence(model, x, y, per_sample=True, generator=gen)  # noqa: E731
    jobs = dict(
        bound=lambda: fresh().lower_bound(delta),
        i2f_paper=lambda: fresh().i2f(delta, common.PAPER_EPS, method="cg"),
        i2f_calibrated=(lambda: fresh().i2f(delta, method="spectral")) if model_name in config["calibrated_models"] else None,
        attack=lambda: common.attack_rmse(model, batch, x, grads + delta, attack="dlg",
                                          iterations=config["timed_iterations"], generator=gen),
    )
    # warm-up, not timed: the attack picks its convolution kernels by timing them on its first call
    common.attack_rmse(model, batch, x, grads + delta, attack="dlg", iterations=1, generator=gen)
    samples = {m: [] for m in MEASURES}
    for _ in range(config.get("model_rounds", {}).get(model_name, config["rounds"])):
        for measure in MEASURES:  # interleaved: every round runs every measure once, in the same order
            if jobs[measure] is not None:
                samples[measure].append(_seconds(jobs[measure]))
    medians = {m: common.median(v) for m, v in samples.items()}
    per_iteration = medians["attack"] / config["timed_iterations"]
    return dict(
        model=model_name, image_size=size, num_params=common.num_params(model), input_dim=x[0].numel(),
        rounds=len(samples["bound"]), seconds=medians, attack_per_iteration=per_iteration,
        attack_full=per_iteration * config["iterations"], all_seconds=samples,
    )


def run(config: dict, workdir, progress: bool = True) -> dict:
    """``models``: per model its size, the median seconds of every measure, the attack per iteration and
    scaled to ``iterations``, and every timing; ``threads`` and ``load`` (1-minute load average) as context."""
    gen = torch.Generator().manual_seed(config["seed"])
    bar = common.progress_bar(len(config["models"]), "efficiency: timing models", progress)
    models = []
    for name in config["models"]:
        models.append(_time_model(config, name, gen))
        bar.update()
    bar.close()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return dict(models=models, threads=torch.get_num_threads(), load=load)


def _ratios(entry: dict) -> dict:
    """The full attack's time over each prediction's (None where not measured)."""
    s = entry["seconds"]
    return {m: entry["attack_full"] / s[m] if s[m] else None for m in ("bound", "i2f_paper", "i2f_calibrated")}


def plot(result: dict, config: dict, path) -> None:
    models = result["models"]
    fig, axes = common.subplots(1, 1, size=(7.5, 4.8))
    ax = axes[0][0]
    width = 0.2
    for k, measure in enumerate(MEASURES):
        values = [m["attack_full"] if measure == "attack" else m["seconds"][measure] for m in models]
        xs = [i + (k - 1.5) * width for i in range(len(models))]
        shown = [(xi, v) for xi, v in zip(xs, values) if v]
        label = (f"DLG attack, {config['iterations']} iterations (scaled from {config['timed_iterations']})"
                 if measure == "attack" else LABELS[measure])
        ax.bar([p[0] for p in shown], [p[1] for p in shown], width, label=label, color=f"C{k}")
        if measure != "attack":
            for m, (xi, v) in zip([m for m, v in zip(models, values) if v], shown):
                ax.text(xi, v, f"{m['attack_full'] / v:.0f}×", ha="center", va="bottom", fontsize=6)
    ax.set_yscale("log")
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels([f"{m['model']}\n{m['num_params']:,} params, {m['image_size']}²" for m in models], fontsize=7)
    ax.set_ylabel("seconds (median, one sample, 1 thread)")
    load = f", load {result['load']:.1f}" if result.get("load") is not None else ""
    ax.set_title(f"cost of the prediction vs the attack (labels: attack time / prediction time){load}", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    common.save(fig, path)


def table(result: dict, config: dict) -> str:
    rows = []
    for m in result["models"]:
        r = _ratios(m)
        rows.append((m["model"], m["num_params"], m["image_size"], m["seconds"]["bound"], m["seconds"]["i2f_paper"],
                     m["seconds"]["i2f_calibrated"], m["attack_per_iteration"], m["attack_full"],
                     *(None if r[k] is None else f"{r[k]:.0f}×" for k in ("bound", "i2f_paper", "i2f_calibrated"))))
    header = ("model", "P", "size", "bound s", "I²F ε=1 s", "I²F cal s", "attack s/it", f"attack {config['iterations']} s",
              "÷bound", "÷I²F ε=1", "÷I²F cal")
    load = f", load {result['load']:.1f}" if result.get("load") is not None else ""
    return (common.format_table(header, rows)
            + f"\n(median seconds over rounds, {result['threads']} thread(s){load}; the attack's total is its measured "
              f"time per iteration × {config['iterations']}; ÷: attack time / prediction time)")


def verdict(result: dict, config: dict) -> dict:
    ratios = {m["model"]: _ratios(m) for m in result["models"]}
    measured = [(model, kind, v) for model, r in ratios.items() for kind, v in r.items() if v is not None]
    cheaper = [v > 1 for _, _, v in measured]
    status = "holds" if all(cheaper) else "partly" if any(cheaper) else "does not hold"
    worst = min(measured, key=lambda t: t[2])
    text = ", ".join(f"{model} {r['bound']:.0f}×/{r['i2f_paper']:.0f}×" for model, r in ratios.items())
    return dict(status=status, measured=(
        f"the {config['iterations']}-iteration attack takes (bound / I²F ε=1) {text} longer than the prediction; "
        f"smallest ratio {worst[2]:.1f}× ({worst[0]}, {LABELS[worst[1]]})"))
