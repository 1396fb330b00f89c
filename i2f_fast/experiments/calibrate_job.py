"""``i2f-fast calibrate``: the smallest noise whose quantile of predicted attack RMSE reaches a target.

One audit pass at unit noise over the samples (:func:`i2f_fast.audit.calibrate.calibrate`), the
closed form over the noise level, the real attack on the most exposed samples at the calibrated
level. For ``--defense dp`` the noise multiplier comes with the ε it spends over the training run
(``--sample-rate``, ``--steps``, ``--delta``; Opacus's accountant). Writes ``calibrate.json`` and
``calibrate.png`` (risk against the noise std σ, or against ε for DP).
"""
from __future__ import annotations

import math

import torch

from ..audit.accounting import epsilon_spent
from ..audit.calibrate import calibrate
from ..audit.risk import parse_defense
from ..files import pyplot, save_figure
from .problem import load_problem

LEVEL_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
"""Noise std relative to the calibrated one, for the printed table."""

CURVE_POINTS = 13
CURVE_SPAN = 10.0
"""The plotted curve: ``CURVE_POINTS`` noise levels from 1/``CURVE_SPAN`` to ``CURVE_SPAN`` times the calibrated std."""

_DP_FLAGS = (("clip", "--clip"), ("sample_rate", "--sample-rate"), ("steps", "--steps"), ("delta", "--delta"))


def check_flags(args) -> None:
    """Ranges of the flags, and the DP flags belong to ``--defense dp``, which needs all of them (SystemExit
    naming the flags)."""
    ranges = [("--quantile", 0 <= args.quantile < 1, "in [0, 1)"), ("--check-samples", args.check_samples >= 0, ">= 0"),
              ("--batch", args.batch >= 1, ">= 1"), ("--steps", args.steps is None or args.steps >= 1, ">= 1"),
              ("--sample-rate", args.sample_rate is None or args.sample_rate <= 1, "<= 1"),
              ("--delta", args.delta is None or args.delta < 1, "< 1")]
    for flag, ok, expected in ranges:
        if not ok:
            raise SystemExit(f"i2f-fast calibrate: {flag} must be {expected}, got {getattr(args, flag[2:].replace('-', '_'))}")
    given = [flag for name, flag in _DP_FLAGS if getattr(args, name) is not None]
    if args.defense == "gaussian" and given:
        raise SystemExit(f"i2f-fast calibrate: {', '.join(given)} only apply to --defense dp")
    missing = [flag for name, flag in _DP_FLAGS if getattr(args, name) is None]
    if args.defense == "dp" and missing:
        raise SystemExit(f"i2f-fast calibrate: --defense dp needs {', '.join(missing)} (the clip norm and the DP-SGD "
                         "run the budget is spent over)")


def run_calibrate(args, progress: bool = True) -> dict:
    """Run the calibrate job; returns the dict written to ``calibrate.json``."""
    check_flags(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    problem = load_problem(args)
    dp = dict(clip=args.clip, batch=args.batch, sample_rate=args.sample_rate, steps=args.steps, delta=args.delta,
              accountant=args.accountant) if args.defense == "dp" else {}
    cal = calibrate(
        problem.model, problem.batch, args.target_rmse, args.quantile, args.defense, objective=args.objective,
        eps_rel=args.eps_rel, max_noise=args.max_noise, check_samples=args.check_samples, restarts=args.restarts,
        iterations=args.iterations, local_iterations=args.local_iterations, seed=args.seed, progress=progress, **dp,
    )
    std = math.sqrt(cal.noise) if cal.kind == "gaussian" else cal.noise
    table = cal.table
    rows = [
        dict(index=args.start + int(i), label=int(label), bias_rmse=b, unit_noise_rmse=u, rmse=float(r))
        for i, label, b, u, r in zip(table.column("index").to_pylist(), table.column("label").to_pylist(),
                                     table.column("bias_rmse").to_pylist(), table.column("noise_rmse").to_pylist(),
                                     cal.rmse_at(std))
    ]
    return dict(
        config=dict(
            dataset=args.dataset, model=args.model, samples=len(rows), start=args.start,
            input_dim=math.prod(problem.x.shape[1:]), num_params=problem.num_params, defense=args.defense,
            target_rmse=cal.target_rmse, quantile=cal.quantile, objective=cal.objective, eps_rel=cal.eps_rel,
            max_noise=args.max_noise, seed=args.seed,
            training=None if cal.training is None else dict(
                clip=args.clip, batch=args.batch, sample_rate=cal.training.sample_rate, steps=cal.training.steps,
                delta=cal.training.delta, accountant=cal.training.accountant),
            check=dict(samples=args.check_samples, restarts=args.restarts, iterations=args.iterations,
                       local_iterations=args.local_iterations),
        ),
        calibrated=dict(
            defense=cal.defense, noise=cal.noise, noise_std=cal.noise_std, quantile_rmse=cal.quantile_rmse,
            median_rmse=float(cal.rmse_at(std).median()), met_without_noise=cal.met_without_noise,
            epsilon=cal.epsilon, exact=cal.exact,
        ),
        levels=[_level(cal, factor * std) for factor in LEVEL_FACTORS] if std > 0 else [],
        curve=_curve(cal, std),
        checks=[{**vars(c), "index": args.start + c.index} for c in cal.checks],
        rows=rows,
    )


def _level(cal, std: float) -> dict:
    """The quantile and the median of the predicted RMSE at noise std ``std`` (and its ε for DP: None where the
    accountant cannot compute it, e.g. PRV at a tiny noise multiplier)."""
    rmse = cal.rmse_at(std)
    noise = std**2 if cal.kind == "gaussian" else std
    epsilon = None
    if cal.training is not None:
        try:
            epsilon = epsilon_spent(noise, cal.training)
        except ValueError:  # printed as "(no ε)", null in the JSON
            pass
    return dict(noise=noise, noise_std=parse_defense(cal.defense).with_noise(noise).noise_std(per_sample=True),
                quantile_rmse=float(torch.quantile(rmse, cal.quantile)), median_rmse=float(rmse.median()),
                epsilon=epsilon)


def _curve(cal, std: float) -> list[dict]:
    """The levels of the plot: log-spaced around the calibrated std (up to unit noise when it is 0)."""
    top = std * CURVE_SPAN if std > 0 else 1.0
    bottom = top / CURVE_SPAN**2
    grid = torch.logspace(math.log10(bottom), math.log10(top), CURVE_POINTS, dtype=torch.float64).tolist()
    return [_level(cal, s) for s in grid]


def print_calibrate(result: dict) -> None:
    cfg, cal = result["config"], result["calibrated"]
    dp = cfg["defense"] == "dp"
    noise_name = "z" if dp else "σ²"
    print(f"target: the {cfg['quantile']:g} quantile of the predicted {cfg['objective']} attack RMSE ≥ {cfg['target_rmse']:g} "
          f"over {cfg['samples']} {cfg['dataset']} samples ({cfg['model']}, D = {cfg['input_dim']})")
    if cal["met_without_noise"]:
        print(f"met without noise: the clipping bias alone gives a {cfg['quantile']:g} quantile of {cal['quantile_rmse']:.4g}"
              + (" (no noise: no DP guarantee, ε = inf)" if dp else ""))
    header = (noise_name, "noise std", f"q{cfg['quantile']:g} RMSE", "median RMSE") + (("ε",) if dp else ())
    print(" ".join(f"{h:>12}" for h in header))
    for level in result["levels"]:
        mark = " ← calibrated" if math.isclose(level["noise"], cal["noise"]) else ""
        cells = [f"{level['noise']:>12.4e}", f"{level['noise_std']:>12.4e}", f"{level['quantile_rmse']:>12.4e}",
                 f"{level['median_rmse']:>12.4e}"] + ([_epsilon_cell(level["epsilon"])] if dp else [])
        print(" ".join(cells) + mark)
    if dp:
        t = cfg["training"]
        print(f"DP-SGD: clip {t['clip']:g}, batch {t['batch']}, sample rate {t['sample_rate']:g}, {t['steps']} steps, "
              f"δ = {t['delta']:g} ({t['accountant']} accountant): z = {cal['noise']:.4g} spends ε = {cal['epsilon']:.4g}")
    print(f"calibrated: {cal['defense']} (quantile RMSE {cal['quantile_rmse']:.4g}"
          f"{'' if cal['exact'] else ', estimated (Hutchinson)'})")
    if result["checks"]:
        print("check at the calibrated noise, the most exposed samples (RMSE per element, normalised space):")
        header = ("sample", "label", "predicted", "re-predicted", "this draw", "attack from x", "attack")
        print(" ".join(f"{h:>13}" for h in header))
        for c in result["checks"]:
            print(" ".join([f"{c['index']:>13d}", f"{c['label']:>13d}"] + [
                f"{c[k]:>13.4e}" for k in ("predicted_rmse", "repredicted_rmse", "draw_predicted_rmse", "local_rmse",
                                           "global_rmse")]))
        print(f"(predicted: the expectation from the one unit-noise pass; re-predicted: afresh at this noise; this draw: the "
              f"prediction for the noise the attacks invert; attack from x: converged, the optimum predicted; attack: "
              f"{cfg['check']['iterations']} iterations × {cfg['check']['restarts']} random start(s))")


def _epsilon_cell(epsilon) -> str:
    return f"{epsilon:>12.4g}" if epsilon is not None else f"{'(no ε)':>12}"


def save_plot(result: dict, path) -> None:
    """Predicted RMSE (the quantile, the median) against the noise std σ, or against ε for DP, with the target,
    the calibrated level and the check's attacks."""
    plt = pyplot()
    cfg, cal = result["config"], result["calibrated"]
    dp = cfg["defense"] == "dp"
    curve = [c for c in result["curve"] if not dp or (c["epsilon"] is not None and math.isfinite(c["epsilon"]))]
    x = [c["epsilon"] if dp else c["noise_std"] for c in curve]
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    ax.loglog(x, [c["quantile_rmse"] for c in curve], "-", color="C0", label=f"{cfg['quantile']:g} quantile")
    ax.loglog(x, [c["median_rmse"] for c in curve], "--", color="C1", label="median")
    ax.axhline(cfg["target_rmse"], color="k", lw=0.8, ls=":", label=f"target {cfg['target_rmse']:g}")
    at = cal["epsilon"] if dp else cal["noise_std"]
    if at is not None and 0 < at < math.inf:
        ax.axvline(at, color="C3", lw=0.8, label=f"calibrated ({'ε' if dp else 'σ'} = {at:.3g})")
        for c in result["checks"]:
            ax.loglog([at], [c["local_rmse"]], "o", color="C2", ms=5)
            ax.loglog([at], [c["global_rmse"]], "x", color="C4", ms=6)
        if result["checks"]:
            ax.plot([], [], "o", color="C2", label="attack from x (most exposed)")
            ax.plot([], [], "x", color="C4", label="attack, random starts")
    ax.set_xlabel(f"ε of (ε, δ = {cfg['training']['delta']:g})-DP" if dp else "Gaussian noise std σ")
    ax.set_ylabel("predicted attack RMSE (normalised space)")
    ax.set_title(f"{cfg['objective']} attack on {cfg['samples']} {cfg['dataset']} samples, {cfg['model']}"
                 + (f", DP-SGD clip {cfg['training']['clip']:g}" if dp else ", Gaussian noise"), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
