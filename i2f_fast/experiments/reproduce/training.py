"""E6: the privacy risk as the model trains.

The paper's code evaluates I²F on training checkpoints it did not release, so this experiment
trains the model itself: LeNet on the training split (Adam, mini-batches, a per-epoch shuffle from
a seeded generator), a checkpoint after each listed epoch under ``workdir/checkpoints`` (atomic;
an interrupted run resumes from the last one and gives the same weights). At every checkpoint, for
each test sample: the exact ``E‖I²F‖²`` under Gaussian gradient noise (calibrated damping and the
paper's ε = 1), λ_max of ``JᵀJ``, and the DLG attack on the gradient plus one noise draw (the same
draw at every checkpoint). Errors are RMSE per element in the normalised space.
"""
from __future__ import annotations

import math
import pathlib
import sys

import torch
import torch.nn.functional as F

from ...data import load_dataset
from ...influence import InversionInfluence
from ...models import build_model
from ..output import atomic_path
from . import persample as common

NAME = "training"
PAPER = "— (the paper's bound_training.py; no figure)"
CLAIM = ("I²F follows the attack's error as the model trains: across training checkpoints the predicted "
         "and the measured reconstruction error rank the same way.")


def options(quick: bool) -> dict:
    """LeNet on digits: train on the first 1597 digits, attack test digits from 1597 on; checkpoints
    after epochs 0 (the initialisation), 1, 2, 4, 8. --quick: 16×16 digits, 300 training digits,
    checkpoints 0, 3, 8 at a larger step size, 2 samples, 200 attack iterations."""
    return dict(
        dataset="digits", root=None, iterations=200 if quick else 2000, seed=1,
        model="lenet", init="uniform", image_size=16 if quick else 28,
        train_samples=300 if quick else 1597, start=1597, samples=2 if quick else 5, test_samples=200,
        epochs=[0, 3, 8] if quick else [0, 1, 2, 4, 8], batch_size=32, lr=1e-2 if quick else 3e-3, sigma=1e-3,
        attack="dlg", restarts=1,
    )


def _splits(config: dict):
    """(training batch, test batch): disjoint index ranges of the bundled datasets, or the
    torchvision train / test sets."""
    extra = {"image_size": config["image_size"]} if config["dataset"] in ("digits", "natural") else {}
    if config["dataset"] in ("digits", "natural"):
        train = load_dataset(config["dataset"], n=config["train_samples"], start=0, root=config["root"], **extra)
        if config["start"] < config["train_samples"]:
            raise ValueError(f"start ({config['start']}) must be >= train_samples ({config['train_samples']}): "
                             "the test digits must not be trained on")
        test = load_dataset(config["dataset"], n=config["test_samples"], start=config["start"], root=config["root"], **extra)
    else:
        train = load_dataset(config["dataset"], n=config["train_samples"], root=config["root"], train=True)
        test = load_dataset(config["dataset"], n=config["test_samples"], start=config["start"], root=config["root"])
    return train, test


def _settings(config: dict) -> dict:
    """What the checkpoints depend on (a checkpoint trained with other settings is not reused)."""
    keys = ("dataset", "model", "init", "image_size", "train_samples", "batch_size", "lr", "seed")
    return {key: config[key] for key in keys}


def train_checkpoints(config: dict, workdir: pathlib.Path, train, progress: bool = True) -> dict:
    """Train ``config["model"]`` and return ``{epoch: state_dict}`` for every epoch in ``config["epochs"]``.

    Epoch e's checkpoint is ``workdir/checkpoints/epoch{e}.pt`` (model and optimiser state, the
    settings); existing ones with the same settings are loaded instead of retrained, and training
    continues from the latest. Epoch e shuffles with a generator seeded ``seed·1000 + e``, so a
    resumed run gives the same weights as an uninterrupted one.
    """
    from tqdm.auto import tqdm

    folder = pathlib.Path(workdir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    settings = _settings(config)
    model = build_model(config["model"], tuple(train.images.shape[1:]), train.num_classes, init=config["init"],
                        seed=config["seed"])
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    states, epoch = {}, 0
    wanted = sorted(set(int(e) for e in config["epochs"]))
    last = max(wanted)
    for e in range(last, -1, -1):  # resume from the latest usable checkpoint
        path = folder / f"epoch{e}.pt"
        if path.exists():
            saved = torch.load(path, weights_only=False)
            if saved["settings"] == settings:
                model.load_state_dict(saved["model"])
                optimizer.load_state_dict(saved["optimizer"])
                epoch = e
                break
    for e in wanted:
        path = folder / f"epoch{e}.pt"
        if e <= epoch and path.exists():
            saved = torch.load(path, weights_only=False)
            if saved["settings"] == settings:
                states[e] = saved["model"]
    bar = tqdm(total=last - epoch, desc=f"{NAME}: epochs", unit="epoch", file=sys.stderr, leave=False, disable=not progress)
    if 0 in wanted and 0 not in states:
        states[0] = _save(folder / "epoch0.pt", model, optimizer, settings)
    model.train()
    while epoch < last:
        epoch += 1
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config["seed"] * 1000 + epoch))
        for start in range(0, len(train), config["batch_size"]):
            index = order[start : start + config["batch_size"]]
            optimizer.zero_grad()
            F.cross_entropy(model(train.images[index]), train.labels[index]).backward()
            optimizer.step()
        if epoch in wanted:
            states[epoch] = _save(folder / f"epoch{epoch}.pt", model, optimizer, settings)
        bar.update()
    bar.close()
    return states


def _save(path: pathlib.Path, model, optimizer, settings: dict) -> dict:
    """Write the checkpoint atomically; returns a copy of the model's state."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"model": state, "optimizer": optimizer.state_dict(), "settings": settings}, tmp)
    return state


def run(config: dict, workdir: pathlib.Path, progress: bool = True) -> dict:
    """Per checkpoint: test accuracy and loss, and per attacked sample the predicted RMSE
    (calibrated, ε = 1), λ_max and the attack's RMSE; medians over samples in ``median``."""
    train, test = _splits(config)
    states = train_checkpoints(config, workdir, train, progress)
    sigma = float(config["sigma"])
    epochs = sorted(states)
    attacked = range(config["samples"])
    rows = {key: [] for key in ("test_accuracy", "test_loss", "predicted_rmse", "paper_eps_rmse", "lambda_max",
                                "attack_rmse")}
    noise = None
    for epoch in epochs:
        model = build_model(config["model"], tuple(train.images.shape[1:]), train.num_classes, init=config["init"],
                            seed=config["seed"])
        model.load_state_dict(states[epoch])
        model.eval()
        with torch.no_grad():
            logits = model(test.images)
        rows["test_accuracy"].append(float((logits.argmax(1) == test.labels).double().mean()))
        rows["test_loss"].append(float(F.cross_entropy(logits, test.labels)))
        problem = common.Problem(test.subset(list(attacked)), model, [config["start"] + n for n in attacked])
        influence = InversionInfluence(model, problem.x, problem.y, per_sample=True)
        clean = influence.jacobian.gradient.detach()
        if noise is None:
            noise = sigma * torch.randn(clean.shape, generator=common.generator(config), dtype=clean.dtype)
        attacks = common.attack_each(problem, (clean + noise).unsqueeze(0), config, workdir, progress=progress,
                                     desc=f"{NAME}: DLG at epoch {epoch}", tag=f"attacks-epoch{epoch}")
        rows["predicted_rmse"].append(influence.expected_i2f_sq(sigma).rmse.tolist())
        rows["paper_eps_rmse"].append(influence.expected_i2f_sq(sigma, eps=common.PAPER_EPS).rmse.tolist())
        rows["lambda_max"].append(influence.spectrum().eigenvalues[:, -1].tolist())
        rows["attack_rmse"].append(attacks["rmse"][0])
    keys = ("predicted_rmse", "paper_eps_rmse", "lambda_max", "attack_rmse")
    return dict(epochs=epochs, samples=problem.indices, labels=problem.y.tolist(), sigma=sigma,
                input_dim=math.prod(problem.x.shape[1:]), **rows,
                median={key: common.median_rows(rows[key]) for key in keys})


def plot(result: dict, config: dict, path: pathlib.Path) -> None:
    """Left: RMSE against the epoch (attack per sample and median, calibrated I²F, ε = 1), log
    scale. Right: test accuracy."""
    plt = common.pyplot()
    epochs, med = result["epochs"], result["median"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for row, epoch in zip(result["attack_rmse"], epochs):
        left.semilogy([epoch] * len(row), row, ".", color="tab:red", alpha=0.4)
    left.semilogy(epochs, med["attack_rmse"], "o-", color="tab:red", label="DLG attack (median)")
    left.semilogy(epochs, med["predicted_rmse"], "s-", color="tab:blue", label="√E‖I²F‖²/D, calibrated ε")
    left.semilogy(epochs, med["paper_eps_rmse"], "^--", color="tab:green", label="√E‖I²F‖²/D, paper's ε = 1")
    left.set_xlabel("epoch")
    left.set_ylabel("RMSE per element (normalised space)")
    left.legend(fontsize=8)
    left.grid(True, which="both", alpha=0.3)
    right.plot(epochs, result["test_accuracy"], "o-", color="black")
    right.set_xlabel("epoch")
    right.set_ylabel("test accuracy")
    right.grid(True, alpha=0.3)
    fig.suptitle(f"training: {config['model']} on {config['dataset']}, Gaussian noise σ = {result['sigma']:g}, "
                 f"{len(result['samples'])} test samples", fontsize=9)
    fig.tight_layout()
    common.save_figure(fig, path)


def table(result: dict, config: dict) -> str:
    """One line per checkpoint: accuracy and medians over the attacked samples."""
    med = result["median"]
    lines = [f"{'epoch':>5} {'test acc':>8} {'λ_max':>10} {'I²F calib':>10} {'I²F ε=1':>10} {'attack':>10}"]
    for k, epoch in enumerate(result["epochs"]):
        lines.append(f"{epoch:>5} {result['test_accuracy'][k]:>8.3f} {med['lambda_max'][k]:>10.3e} "
                     f"{med['predicted_rmse'][k]:>10.3e} {med['paper_eps_rmse'][k]:>10.3e} {med['attack_rmse'][k]:>10.3e}")
    lines.append(f"(medians over samples; RMSE per element in the normalised space; noise σ = {result['sigma']:g})")
    return "\n".join(lines)


def verdict(result: dict, config: dict) -> dict:
    """Spearman of predicted (calibrated) against attack RMSE over every (checkpoint, sample):
    holds above 0.5, partly above 0."""
    pooled = common.spearman(sum(result["predicted_rmse"], []), sum(result["attack_rmse"], []))
    pooled_paper = common.spearman(sum(result["paper_eps_rmse"], []), sum(result["attack_rmse"], []))
    med, epochs = result["median"], result["epochs"]
    measured = (f"Spearman(I²F, attack) over {len(epochs)} checkpoints × {len(result['samples'])} samples: "
                f"{pooled:+.2f} calibrated, {pooled_paper:+.2f} with ε = 1; median attack RMSE "
                f"{med['attack_rmse'][0]:.3g} → {med['attack_rmse'][-1]:.3g}, I²F {med['predicted_rmse'][0]:.3g} → "
                f"{med['predicted_rmse'][-1]:.3g} from epoch {epochs[0]} to {epochs[-1]} (test accuracy "
                f"{result['test_accuracy'][0]:.2f} → {result['test_accuracy'][-1]:.2f})")
    status = "holds" if pooled > 0.5 else "partly" if pooled > 0 else "does not hold"
    return {"status": status, "measured": measured}
