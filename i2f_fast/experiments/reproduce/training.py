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

import torch
import torch.nn.functional as F

from ...data import DatasetUnavailableError, load_dataset
from ...influence import InversionInfluence
from ...files import atomic_path
from . import common
from .resumable_attacks import attack_each

NAME = "training"
PAPER = "no figure: the paper's bound_training.py"
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
    """(training batch, test batch): disjoint index ranges of the bundled datasets (``0 …
    train_samples−1`` and ``start …``), or the torchvision train / test sets.

    Raises:
        ValueError naming ``--dataset`` when the dataset is too small for these ranges or they overlap.
    """
    name, size = config["dataset"], config["image_size"]
    try:
        if name in common.BUILT_IN:
            if config["start"] < config["train_samples"]:
                raise ValueError(f"start ({config['start']}) must be >= train_samples ({config['train_samples']}): "
                                 "the test samples must not be trained on")
            train = common.load_batch(config, config["train_samples"], image_size=size)
        else:
            try:  # common.load_batch reads the test split; the training split needs train=True
                train = load_dataset(name, n=config["train_samples"], root=config["root"], train=True)
            except DatasetUnavailableError as err:
                raise common.ReproduceInputError(f"--dataset {name} --root {config['root']}: {err}") from err
        test = common.load_batch(config, config["test_samples"], start=config["start"], image_size=size)
    except common.ReproduceInputError:
        raise
    except ValueError as err:
        raise ValueError(f"--dataset {name}: {err} ({NAME} trains on samples 0…{config['train_samples'] - 1} and tests "
                         f"on {config['test_samples']} from {config['start']})") from err
    return train, test


def _settings(config: dict) -> dict:
    """What the checkpoints depend on (a checkpoint trained with other settings is not reused)."""
    keys = ("dataset", "root", "model", "init", "image_size", "train_samples", "batch_size", "lr", "seed")
    return {key: config[key] for key in keys}


def train_checkpoints(config: dict, workdir: pathlib.Path, train, progress: bool = True) -> dict:
    """Train ``config["model"]`` and return ``{epoch: state_dict}`` for every epoch in ``config["epochs"]``.

    Epoch e's checkpoint is ``workdir/checkpoints/epoch{e}.pt`` (model and optimiser state, the
    settings). The checkpoints of the listed epochs that exist in order, with the same settings,
    are loaded instead of retrained, and training continues from the last of them. Epoch e
    shuffles with a generator seeded ``seed·1000 + e``, so a resumed run gives the same weights as
    an uninterrupted one.
    """
    folder = pathlib.Path(workdir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    settings = _settings(config)
    model = common.model_for(config["model"], train, init=config["init"], seed=config["seed"])
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    wanted = sorted(set(int(e) for e in config["epochs"]))
    states, latest = {}, None
    for e in wanted:  # the finished prefix of the listed epochs
        saved = _load(folder / f"epoch{e}.pt", settings)
        if saved is None:
            break
        states[e], latest = saved["model"], saved
    epoch = 0
    if latest is not None:
        model.load_state_dict(latest["model"])
        optimizer.load_state_dict(latest["optimizer"])
        epoch = max(states)
    elif 0 in wanted:
        states[0] = _save(folder / "epoch0.pt", model, optimizer, settings)
    bar = common.progress_bar(wanted[-1] - epoch, f"{NAME}: training epochs", progress)
    model.train()
    while epoch < wanted[-1]:
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


def _load(path: pathlib.Path, settings: dict) -> dict | None:
    """The checkpoint at ``path`` if it exists and was trained with ``settings``, else None."""
    if not path.exists():
        return None
    saved = torch.load(path, weights_only=True)
    return saved if saved.get("settings") == settings else None


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
    attacked = test.subset(slice(0, config["samples"]))
    rows = {key: [] for key in ("test_accuracy", "test_loss", "predicted_rmse", "paper_eps_rmse", "lambda_max",
                                "attack_rmse")}
    noise = None
    for epoch in epochs:
        model = common.model_for(config["model"], train, init=config["init"], seed=config["seed"])
        model.load_state_dict(states[epoch])
        with torch.no_grad():
            logits = model(test.images)
        rows["test_accuracy"].append(float((logits.argmax(1) == test.labels).double().mean()))
        rows["test_loss"].append(float(F.cross_entropy(logits, test.labels)))
        influence = InversionInfluence(model, attacked.images, attacked.labels, per_sample=True)
        clean = influence.jacobian.gradient.detach()  # (N, P)
        if noise is None:  # one draw, the same at every checkpoint
            draw = torch.Generator().manual_seed(config["seed"])
            noise = sigma * torch.randn(clean.shape, generator=draw, dtype=clean.dtype)
        attacks = attack_each(model, attacked, (clean + noise).unsqueeze(0), config, workdir, progress=progress,
                              desc=f"{NAME}: DLG at epoch {epoch}", tag=f"attacks-epoch{epoch}")
        rows["predicted_rmse"].append(influence.expected_i2f_sq(sigma).rmse.tolist())
        rows["paper_eps_rmse"].append(influence.expected_i2f_sq(sigma, eps=common.PAPER_EPS).rmse.tolist())
        rows["lambda_max"].append(influence.spectrum().eigenvalues[:, -1].tolist())
        rows["attack_rmse"].append(attacks["rmse"][0])
    keys = ("predicted_rmse", "paper_eps_rmse", "lambda_max", "attack_rmse")
    return dict(epochs=epochs, samples=list(range(config["start"], config["start"] + len(attacked))),
                labels=attacked.labels.tolist(), sigma=sigma, input_dim=math.prod(attacked.images.shape[1:]), **rows,
                median={key: [common.median(row) for row in rows[key]] for key in keys})


def plot(result: dict, config: dict, path: pathlib.Path) -> None:
    """Left: RMSE against the epoch (attack per sample and median, calibrated I²F, ε = 1), log
    scale. Right: test accuracy."""
    epochs, med = result["epochs"], result["median"]
    fig, axes = common.subplots(1, 2, size=(10, 4))
    left, right = axes[0]
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
    common.save(fig, path)


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
    attack = sum(result["attack_rmse"], [])
    pooled = common.log_correlation(sum(result["predicted_rmse"], []), attack)["spearman"] or 0.0
    pooled_paper = common.log_correlation(sum(result["paper_eps_rmse"], []), attack)["spearman"] or 0.0
    med, epochs = result["median"], result["epochs"]
    measured = (f"Spearman(I²F, attack) over {len(epochs)} checkpoints × {len(result['samples'])} samples: "
                f"{pooled:+.2f} calibrated, {pooled_paper:+.2f} with ε = 1; median attack RMSE "
                f"{med['attack_rmse'][0]:.3g} → {med['attack_rmse'][-1]:.3g}, I²F {med['predicted_rmse'][0]:.3g} → "
                f"{med['predicted_rmse'][-1]:.3g} from epoch {epochs[0]} to {epochs[-1]} (test accuracy "
                f"{result['test_accuracy'][0]:.2f} → {result['test_accuracy'][-1]:.2f})")
    status = "holds" if pooled > 0.5 else "partly" if pooled > 0 else "does not hold"
    return {"status": status, "measured": measured}
