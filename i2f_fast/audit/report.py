"""The audit's report: a summary per class, figures, the real attack on a few samples, one HTML page.

:func:`write_report` writes, next to an audit's ``results.parquet`` / ``results.csv``:

- ``summary.json``: the configuration, quantiles of the predicted RMSE overall and per class, and
  the attack check;
- ``risk_histogram.png`` (per-sample risk), ``risk_by_class.png`` (a box plot per class: the paper's
  unfairness figure), ``most_exposed.png`` (the 16 samples with the smallest predicted error, each
  with it);
- ``report.html``: one static page with the figures embedded (base64) and the tables.

A smaller predicted RMSE means a better reconstruction: the *most exposed* samples are those with
the smallest one. Following the rule that a number a user acts on is shown next to the attack that
checks it, :func:`check_with_attack` draws one perturbation of the defense for a few of the most
and of the least exposed samples and runs :func:`i2f_fast.validate.validate` on it: the attack from
the true input to convergence (the optimum the prediction describes) and the attack from a random
start (what a real attacker gets), next to the audit's expectation and the prediction for that draw.
"""
from __future__ import annotations

import base64
import copy
import html
import math
from pathlib import Path

import pyarrow as pa
import torch
import torch.nn as nn

from .. import frontdoor
from ..data import ImageBatch
from ..files import atomic_path, pyplot, save_figure, write_json
from ..influence import SPECTRAL_MAX_DIM
from ..validate import LIMIT_EPS_REL, OBJECTIVE_ATTACKS, validate
from .core import AuditResult
from .risk import draw_delta, parse_defense

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
"""Quantiles of the predicted RMSE in ``summary.json`` (overall and per class)."""
MOST_EXPOSED = 16
"""Samples in the grid of the most exposed."""
CHECK_SAMPLES = 2
"""Default number of most and of least exposed samples the real attack checks."""
CHECK_ITERATIONS = 200
CHECK_LOCAL_ITERATIONS = 300
"""Cheap attack settings of the check: the random-start attack's iterations (1 restart) and the
cap on the attack from the true input (L-BFGS; it reports whether it converged)."""

FIGURES = {
    "risk_histogram.png": "Predicted reconstruction error of every sample",
    "risk_by_class.png": "Predicted reconstruction error per class",
    "most_exposed.png": f"The {MOST_EXPOSED} most exposed samples",
}


def _quantiles(values: list[float]) -> dict:
    t = torch.tensor(values, dtype=torch.float64)
    q = torch.quantile(t, torch.tensor(QUANTILES, dtype=torch.float64)).tolist()
    return dict(count=len(values), mean=t.mean().item(), **{f"q{round(100 * p):02d}": v for p, v in zip(QUANTILES, q)})


def summary(table: pa.Table) -> dict:
    """Quantiles (and count, mean) of the predicted RMSE overall and per label (per-sample rows)."""
    rmse, labels = table.column("rmse").to_pylist(), table.column("label").to_pylist()
    per_class = {}
    for label in sorted({lb for lb in labels if lb is not None}):
        per_class[str(label)] = _quantiles([r for r, lb in zip(rmse, labels) if lb == label])
    exact = table.column("exact").to_pylist()
    return dict(overall=_quantiles(rmse), per_class=per_class, exact_rows=sum(exact), estimated_rows=len(exact) - sum(exact))


def _exposure_order(table: pa.Table) -> list[int]:
    """Row positions from the most exposed (smallest predicted RMSE) to the least."""
    rmse = table.column("rmse").to_pylist()
    return sorted(range(len(rmse)), key=lambda i: (rmse[i], i))


def check_with_attack(
    model: nn.Module,
    samples: ImageBatch,
    result: AuditResult,
    count: int = CHECK_SAMPLES,
    *,
    iterations: int = CHECK_ITERATIONS,
    local_iterations: int = CHECK_LOCAL_ITERATIONS,
    seed: int = 0,
) -> list[dict]:
    """Run the attack on the ``count`` most and the ``count`` least exposed samples (per-sample audits).

    For each sample, one perturbation is drawn from the audit's defense (its clean gradient through
    :func:`i2f_fast.defenses.apply_defense`, a batch of one) and :func:`i2f_fast.validate.validate`
    attacks it, in float64, with the audit's objective and relative damping (else validate's ε → 0).

    Returns:
        one dict per sample: index, label, group (``"most exposed"`` / ``"least exposed"``), the
        audit's expected RMSE, the prediction for this draw, the attack from the true input (RMSE,
        converged) and from a random start (RMSE).

    Raises:
        ValueError: ``count`` < 0, or a batch-mode audit (``count`` > 0).
    """
    count = frontdoor.integer(count, "check", minimum=0)
    if count == 0:
        return []
    config = result.config
    if config["mode"] != "per_sample":
        raise ValueError("check: the attack check runs on per-sample audits only")
    table = result.table
    order = _exposure_order(table)
    picks = [("most exposed", p) for p in order[:count]] + [("least exposed", p) for p in order[count:][-count:]]
    defense = parse_defense(config["defense"])
    model64 = copy.deepcopy(model).to(torch.float64)
    gen = torch.Generator().manual_seed(seed)
    index = table.column("index").to_pylist()
    rows = [index[p] for _, p in picks]
    x = samples.images[rows].to(torch.float64)
    y = samples.labels[rows]
    deltas = torch.stack([
        draw_delta(defense, model64, x[i : i + 1], y[i : i + 1], config["objective"], gen) for i in range(len(rows))
    ])  # (n, P)
    D = math.prod(x.shape[1:])
    res = validate(
        model64, x, y, deltas, config["objective"], restarts=1, iterations=iterations, local_iterations=local_iterations,
        eps_rel=config["eps_rel"] or LIMIT_EPS_REL, method="spectral" if D <= SPECTRAL_MAX_DIM else "auto", generator=gen,
    )
    expected = table.column("rmse").to_pylist()
    return [
        dict(index=index[p], label=int(y[i]), group=group, expected_rmse=expected[p],
             predicted_rmse=res.predicted_rmse[i].item(), local_rmse=res.local_rmse[i].item(),
             local_converged=bool(res.local_converged[i]), global_rmse=res.global_rmse[i].item(),
             attack=OBJECTIVE_ATTACKS[config["objective"]])
        for i, (group, p) in enumerate(picks)
    ]


# ------------------------------------------------------------------------------------ figures
def _histogram(table: pa.Table, path: Path) -> None:
    plt = pyplot()
    rmse = torch.tensor(table.column("rmse").to_pylist(), dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    positive = rmse[rmse > 0]
    if len(positive) == len(rmse) and positive.max() > positive.min():
        bins = torch.logspace(math.log10(positive.min()), math.log10(positive.max()), 40).tolist()
        ax.set_xscale("log")
    else:
        bins = 40
    ax.hist(rmse.tolist(), bins=bins, color="tab:blue", alpha=0.8)
    ax.set_xlabel("predicted attack RMSE per element (normalised space; smaller = more exposed)")
    ax.set_ylabel("samples" if table.column("label").null_count == 0 else "batches")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _box_by_class(table: pa.Table, path: Path) -> None:
    plt = pyplot()
    rmse, labels = table.column("rmse").to_pylist(), table.column("label").to_pylist()
    classes = sorted(set(labels))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(classes) + 2), 4.0))
    ax.boxplot([[r for r, lb in zip(rmse, labels) if lb == c] for c in classes], tick_labels=[str(c) for c in classes])
    if min(rmse) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("class")
    ax.set_ylabel("predicted attack RMSE (smaller = more exposed)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _most_exposed_grid(table: pa.Table, samples: ImageBatch, path: Path) -> None:
    plt = pyplot()
    order = _exposure_order(table)[:MOST_EXPOSED]
    index, rmse, labels = (table.column(c).to_pylist() for c in ("index", "rmse", "label"))
    cols = 4
    rows = math.ceil(len(order) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    pixels = samples.to_pixels(samples.images[[index[p] for p in order]]).clamp(0, 1)
    for ax, p, img in zip(axes.flat, order, pixels):
        img = img.permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"#{index[p]} (label {labels[p]})\nRMSE {rmse[p]:.3g}", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


# ------------------------------------------------------------------------------------- report
def write_report(result: AuditResult, samples: ImageBatch, checks: list[dict], out: Path) -> list[Path]:
    """Write ``summary.json``, the figures and ``report.html`` into ``out`` (atomically each).

    Args:
        result: the audit.
        samples: the audited :class:`~i2f_fast.data.ImageBatch` (for the images of the grid).
        checks: :func:`check_with_attack`'s rows (may be empty).
        out: the folder.

    Returns:
        the paths written.
    """
    out = Path(out)
    table = result.table
    per_sample = result.config["mode"] == "per_sample"
    stats = summary(table)
    written = [out / "summary.json"]
    write_json(written[0], dict(config=result.config, seconds=result.seconds, summary=stats, attack_check=checks))
    figures = {"risk_histogram.png": out / "risk_histogram.png"}
    _histogram(table, figures["risk_histogram.png"])
    if per_sample:  # per class and per image: rows of single samples only
        figures["risk_by_class.png"] = out / "risk_by_class.png"
        _box_by_class(table, figures["risk_by_class.png"])
        figures["most_exposed.png"] = out / "most_exposed.png"
        _most_exposed_grid(table, samples, figures["most_exposed.png"])
    written += list(figures.values())
    page = _html(result, stats, checks, figures)
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(page)
    written.append(out / "report.html")
    return written


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _table_html(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(result: AuditResult, stats: dict, checks: list[dict], figures: dict) -> str:
    cfg = result.config
    qs = [k for k in stats["overall"] if k.startswith("q")]
    groups = [("all", stats["overall"])] + [(f"class {c}", s) for c, s in stats["per_class"].items()]
    quantile_rows = [[name, s["count"], s["mean"], *(s[k] for k in qs)] for name, s in groups]
    damping = f"ε = {cfg['eps']:g}" if cfg["eps"] is not None else f"ε = {cfg['eps_rel']:g}·λ_max"
    unit = "sample" if cfg["mode"] == "per_sample" else f"batch of {cfg['batch_size']}"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>i2f_fast privacy audit</title><style>"
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:2px 8px;text-align:right}"
        "img{max-width:100%}</style></head><body>",
        "<h1>Privacy audit: predicted gradient-inversion risk</h1>",
        f"<p>{cfg['dataset']['size']} samples of <b>{html.escape(cfg['dataset']['name'])}</b>, one row per {unit}; "
        f"model {html.escape(cfg['model']['cls'])} ({cfg['model']['num_params']:,} parameters); defense "
        f"<code>{html.escape(cfg['defense'])}</code>; attack objective {cfg['objective']} "
        f"({OBJECTIVE_ATTACKS[cfg['objective']]}); damping {damping}; {result.table.num_rows} rows, "
        f"{stats['exact_rows']} exact, {stats['estimated_rows']} estimated.</p>",
        "<p>Each number is the attack's predicted reconstruction error (RMSE per element, in the model's "
        "normalised input space), averaged over the defense's randomness: exact from each sample's spectrum "
        "where the dimension allows, else an estimate with its standard error (column <code>stderr</code> of "
        "<code>results.csv</code>). <b>Smaller means a better reconstruction: the most exposed samples are those "
        "with the smallest predicted error.</b> The prediction is the attack's optimum linearised at the private "
        "input: it holds while the defense's perturbation is small against the gradient; well above about 1 "
        "it says \"large\" rather than how large.</p>",
        "<h2>Predicted RMSE quantiles</h2>",
        _table_html(["group", "count", "mean", *qs], quantile_rows),
    ]
    for name, path in figures.items():
        data = base64.b64encode(Path(path).read_bytes()).decode()
        parts.append(f"<h2>{html.escape(FIGURES[name])}</h2><img alt='{name}' src='data:image/png;base64,{data}'>")
    parts.append("<h2>The real attack on a few samples</h2>")
    if checks:
        attack = checks[0]["attack"].upper()
        parts.append(
            f"<p>One perturbation drawn from the defense per sample, attacked with {attack}: <i>from x</i> starts "
            "at the true input and runs L-BFGS to convergence (the optimum the prediction describes; "
            "'no' = stopped at its iteration cap), <i>random start</i> is the attack a real attacker runs "
            "(1 start, few iterations: it may stop far from the optimum, i.e. above the prediction).</p>"
        )
        parts.append(_table_html(
            ["sample", "label", "group", "audit E RMSE", "predicted (this draw)", "attack from x", "converged",
             "attack, random start"],
            [[c["index"], c["label"], c["group"], c["expected_rmse"], c["predicted_rmse"], c["local_rmse"],
              "yes" if c["local_converged"] else "no", c["global_rmse"]] for c in checks],
        ))
    else:
        parts.append("<p>Not run (turned off, or a per-batch audit).</p>")
    parts.append(f"<p>Computed in {result.seconds:.1f} s. Files: <code>results.parquet</code>, <code>results.csv</code>, "
                 "<code>summary.json</code>.</p></body></html>")
    return "\n".join(parts)
