"""E7, the authors' blog Fig. 2: the privacy risk is unequal across samples and classes.

Every test digit gets its own predicted risk under the paper's Gaussian gradient noise
(``δ ~ N(0, σ²I)``, σ² = 1e-3): the exact ``√(E‖I²F‖²/D)`` from each sample's float64 spectrum
(:meth:`~i2f_fast.influence.InversionInfluence.expected_i2f_sq`, per sample, in chunks), with the
calibrated damping and with the paper's ε = 1, and the I²F of one actual noise draw. Predictions
are kept chunk by chunk in ``workdir`` (atomic), so an interrupted run resumes. The DLG attack then
runs on a class-stratified subset (per class, samples at evenly spaced ranks of the predicted
risk) with the same noise draws, to check that the measured errors rank like the predicted ones.
Errors are RMSE per element in the normalised space.
"""
from __future__ import annotations

import json
import math
import pathlib

import torch

from ...influence import InversionInfluence
from ...files import write_json
from . import common
from .resumable_attacks import attack_each

NAME = "unfairness"
PAPER = "blog Fig. 2"
CLAIM = ("Under the same Gaussian noise (σ² = 1e-3) the risk differs widely between samples and classes: "
         "some are much less protected than the average suggests, and the attack's errors follow the per-sample "
         "prediction.")


def options(quick: bool) -> dict:
    """Every test digit (the last 200 of the 1797; 20 from there at 16×16 for --quick), LeNet with
    the U(±0.5) init, noise variance 1e-3; the attack on ``per_class`` digits of each class."""
    return dict(
        dataset="digits", root=None, iterations=300 if quick else 1000, seed=1,
        model="lenet", init="uniform", image_size=16 if quick else 28, start=1597, samples=20 if quick else 200,
        chunk=10 if quick else 25, variance=1e-3, per_class=1 if quick else 2, attack="dlg", restarts=1,
    )


def _predict(config: dict, model, noise: torch.Tensor, workdir: pathlib.Path, progress: bool) -> dict:
    """Per-sample predictions over all samples, chunk by chunk, resumable from ``workdir/predictions.json``."""
    sigma = math.sqrt(float(config["variance"]))
    keys = ("predicted_rmse", "paper_eps_rmse", "draw_rmse", "lambda_max")
    settings = {k: config[k] for k in ("dataset", "root", "model", "init", "image_size", "start", "samples", "chunk",
                                       "variance", "seed")}
    path = pathlib.Path(workdir) / "predictions.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    if cache.get("settings") != settings:
        cache = {"settings": settings, "chunks": {}}
    chunk, total = config["chunk"], config["samples"]
    starts = list(range(0, total, chunk))
    bar = common.progress_bar(len(starts), f"{NAME}: predicted risk per chunk of {chunk}", progress)
    for offset in starts:
        bar.update()
        if str(offset) in cache["chunks"]:
            continue
        size = min(chunk, total - offset)
        part = common.load_batch(config, size, start=config["start"] + offset, image_size=config["image_size"])
        influence = InversionInfluence(model, part.images, part.labels, per_sample=True)
        cache["chunks"][str(offset)] = dict(
            predicted_rmse=influence.expected_i2f_sq(sigma).rmse.tolist(),
            paper_eps_rmse=influence.expected_i2f_sq(sigma, eps=common.PAPER_EPS).rmse.tolist(),
            draw_rmse=influence.i2f(noise[offset : offset + size]).rmse.tolist(),
            lambda_max=influence.spectrum().eigenvalues[:, -1].tolist(),
        )
        write_json(path, cache)
    bar.close()
    return {key: sum((cache["chunks"][str(offset)][key] for offset in starts), []) for key in keys}


def stratified_subset(labels: list, risk: list, per_class: int) -> list:
    """Positions of ``per_class`` samples of every class, at evenly spaced ranks ((i + ½)/k) of
    ``risk`` within the class (all of a class that has fewer)."""
    chosen = []
    for label in sorted(set(labels)):
        members = sorted((p for p, l in enumerate(labels) if l == label), key=lambda p: risk[p])
        k = min(per_class, len(members))
        chosen += [members[int((i + 0.5) * len(members) / k)] for i in range(k)]
    return sorted(chosen)


def run(config: dict, workdir: pathlib.Path, progress: bool = True) -> dict:
    """Per-sample predicted RMSE (calibrated, ε = 1, one draw), per-class summaries, and the attack on
    the stratified subset with the Spearman correlations of its errors with the predictions."""
    try:
        everything = common.load_batch(config, config["samples"], start=config["start"], image_size=config["image_size"])
    except ValueError as err:
        if isinstance(err, common.ReproduceInputError):
            raise
        raise ValueError(f"--dataset {config['dataset']}: {err} ({NAME} reads the {config['samples']} test samples "
                         f"from {config['start']})") from err
    model = common.model_for(config["model"], everything, init=config["init"], seed=config["seed"])
    labels = everything.labels.tolist()
    draw = torch.Generator().manual_seed(config["seed"])
    noise = math.sqrt(float(config["variance"])) * torch.randn(len(labels), common.num_params(model), generator=draw)
    predicted = _predict(config, model, noise, workdir, progress)
    subset = stratified_subset(labels, predicted["predicted_rmse"], config["per_class"])
    attacked = everything.subset(subset)
    targets = common.sample_gradients(model, attacked.images, attacked.labels) + noise[subset]
    attacks = attack_each(model, attacked, targets.unsqueeze(0), config, workdir, progress=progress,
                          desc=f"{NAME}: DLG on the stratified subset")
    per_class = {}
    for label in sorted(set(labels)):
        values = [v for v, l in zip(predicted["predicted_rmse"], labels) if l == label]
        per_class[str(label)] = dict(count=len(values), median=common.median(values), mean=sum(values) / len(values),
                                     min=min(values), max=max(values))
    sub = {key: [predicted[key][p] for p in subset] for key in ("predicted_rmse", "paper_eps_rmse", "draw_rmse")}
    return dict(
        samples=list(range(config["start"], config["start"] + len(labels))), labels=labels, variance=float(config["variance"]),
        input_dim=math.prod(everything.images.shape[1:]), **predicted, per_class=per_class,
        subset=dict(positions=subset, samples=[config["start"] + p for p in subset], labels=attacked.labels.tolist(),
                    **sub, attack_rmse=attacks["rmse"][0], attack_ssim=attacks["ssim"][0],
                    **{f"spearman_{name}": common.log_correlation(sub[key], attacks["rmse"][0])["spearman"] or 0.0
                       for name, key in (("expected", "predicted_rmse"), ("draw", "draw_rmse"),
                                         ("paper_eps", "paper_eps_rmse"))}),
    )


def plot(result: dict, config: dict, path: pathlib.Path) -> None:
    """Three panels: histogram of the per-sample predicted RMSE (calibrated and ε = 1, log bins);
    per-class box plot of the calibrated prediction with the attacked digits' RMSE on top; attack
    against prediction on the subset (log-log, y = x)."""
    from matplotlib.ticker import NullFormatter

    fig, axes = common.subplots(1, 3, size=(15, 4.3))
    hist, boxes, scatter = axes[0]
    series = (("predicted_rmse", "calibrated ε", "tab:blue"), ("paper_eps_rmse", "paper's ε = 1", "tab:green"))
    values = [v for key, _, _ in series for v in result[key] if v > 0]
    bins = torch.logspace(math.log10(min(values)), math.log10(max(values)), 40).tolist()
    for key, label, color in series:
        hist.hist(result[key], bins=bins, color=color, alpha=0.6, label=label)
    hist.set_xscale("log")
    hist.set_xlabel("predicted RMSE √(E‖I²F‖²/D)")
    hist.set_ylabel("test digits")
    hist.legend(fontsize=8)
    classes = sorted(result["per_class"], key=int)
    data = [[v for v, l in zip(result["predicted_rmse"], result["labels"]) if str(l) == c] for c in classes]
    boxes.boxplot(data, positions=range(len(classes)))
    sub = result["subset"]
    boxes.plot([classes.index(str(l)) for l in sub["labels"]], sub["attack_rmse"], "o", color="tab:red",
               alpha=0.7, label="DLG attack (subset)")
    boxes.set_xticks(range(len(classes)))
    boxes.set_xticklabels(classes)
    boxes.set_yscale("log")
    boxes.set_xlabel("class")
    boxes.set_ylabel("RMSE per element (normalised space)")
    boxes.legend(fontsize=8)
    scatter.loglog(sub["predicted_rmse"], sub["attack_rmse"], "o", color="tab:blue",
                   label=f"expected (Spearman {sub['spearman_expected']:+.2f})")
    scatter.loglog(sub["draw_rmse"], sub["attack_rmse"], "x", color="tab:purple",
                   label=f"this draw (Spearman {sub['spearman_draw']:+.2f})")
    points = [v for v in sub["predicted_rmse"] + sub["draw_rmse"] + sub["attack_rmse"] if v > 0]
    scatter.loglog([min(points) / 2, max(points) * 2], [min(points) / 2, max(points) * 2], "k--", lw=1, label="y = x")
    scatter.set_xlabel("predicted RMSE (calibrated ε)")
    scatter.set_ylabel("attack RMSE")
    scatter.legend(fontsize=8)
    for ax in (hist, boxes, scatter):
        ax.grid(True, which="both", alpha=0.3)
    for axis in (scatter.xaxis, scatter.yaxis, boxes.yaxis):
        axis.set_minor_formatter(NullFormatter())
    fig.suptitle(f"{PAPER}: unequal risk, {config['model']} on {len(result['samples'])} test samples of {config['dataset']}, "
                 f"Gaussian noise σ² = {result['variance']:g}", fontsize=9)
    common.save(fig, path)


def table(result: dict, config: dict) -> str:
    """One line per class (predicted RMSE over its test digits, the attacked digits' RMSE), then the ranking check."""
    sub = result["subset"]
    lines = [f"{'class':>5} {'digits':>6} {'median':>10} {'min':>10} {'max':>10} {'attacked':>24}"]
    for label, stats in sorted(result["per_class"].items(), key=lambda item: int(item[0])):
        attacked = ", ".join(f"{a:.3g}" for a, l in zip(sub["attack_rmse"], sub["labels"]) if str(l) == label)
        lines.append(f"{label:>5} {stats['count']:>6} {stats['median']:>10.3e} {stats['min']:>10.3e} "
                     f"{stats['max']:>10.3e} {attacked:>24}")
    lines.append("(predicted RMSE √(E‖I²F‖²/D), calibrated ε, per element in the normalised space; attacked: DLG RMSE)")
    lines.append(f"Spearman(attack, prediction) on {len(sub['samples'])} attacked digits: expected "
                 f"{sub['spearman_expected']:+.2f}, this draw {sub['spearman_draw']:+.2f}, ε = 1 {sub['spearman_paper_eps']:+.2f}")
    return "\n".join(lines)


def verdict(result: dict, config: dict) -> dict:
    """Holds when the risk is unequal (class medians of the predicted RMSE span at least 2×, and the
    average over the digits, ``√(mean predicted MSE)``, overstates the protection of some digits by
    more than 2×) and the attack ranks the subset like the prediction (Spearman > 0.5); partly when
    only one of the two holds."""
    values = torch.tensor(result["predicted_rmse"], dtype=torch.float64)
    average = values.square().mean().sqrt().item()
    overstated = (values < average / 2).double().mean().item()
    p10, p90 = torch.quantile(values, 0.1).item(), torch.quantile(values, 0.9).item()
    medians = {c: s["median"] for c, s in result["per_class"].items()}
    low, high = min(medians, key=medians.get), max(medians, key=medians.get)
    sub = result["subset"]
    unequal = medians[high] >= 2 * medians[low] and overstated > 0
    ranks = sub["spearman_expected"] > 0.5
    measured = (f"predicted RMSE over {len(values)} digits from {values.min().item():.3g} to {values.max().item():.3g} "
                f"(10th–90th percentile {p10:.3g}–{p90:.3g}); class medians from {medians[low]:.3g} (class {low}) to "
                f"{medians[high]:.3g} (class {high}), {medians[high] / medians[low]:.1f}×; the average over the digits "
                f"(√mean MSE = {average:.3g}) overstates the protection of {overstated:.0%} of them by more than 2×; "
                f"Spearman(attack, prediction) on {len(sub['samples'])} attacked digits {sub['spearman_expected']:+.2f} "
                f"(this draw {sub['spearman_draw']:+.2f}, paper's ε = 1 {sub['spearman_paper_eps']:+.2f})")
    status = "holds" if unequal and ranks else "partly" if unequal or ranks else "does not hold"
    return {"status": status, "measured": measured}
