"""``i2f-fast compare``: the predicted reconstruction error next to a real attack, per sample and
defense strength (the paper's claim: the prediction tracks the attack across strengths).

For each of N samples (the paper's batch-of-one setting) and each defense strength, the sample's
clean gradient is defended, the prediction (:meth:`InversionInfluence.i2f
<i2f_fast.influence.InversionInfluence.i2f>` with the attack's objective: L2 for DLG, the projected
cosine form for GS) and the paper's lower bound are computed for the resulting δ (all N × S
systems together), and the attack is run on the defended gradient. Predicted and achieved errors
are both RMSE per element in the normalised space (``‖Δx‖/√D``), plotted on y = x; the command
reports the log-log correlations and the median achieved/predicted ratio (1 when the attack lands
where predicted; above 1 when it stops short of the optimum or finds another one).
"""
from __future__ import annotations

import math
import statistics
import sys
import time

import torch
from scipy import stats

from .. import frontdoor, metrics
from ..attack import PRESETS, invert
from ..influence import DEFAULT_EPS_REL, InversionInfluence
from .output import damping_label
from .problem import defend, load_problem

COLUMNS = (
    "sample", "label", "strength", "delta_norm", "eps", "i2f", "i2f_lower_bound", "i2f_rmse", "attack_rmse",
    "ratio", "attack_psnr", "matching_loss",
)


def correlations(i2f, rmse) -> dict:
    """Pearson and Spearman correlations of log I²F with log RMSE (None when undefined)."""
    pairs = [(math.log(a), math.log(b)) for a, b in zip(i2f, rmse) if a > 0 and b > 0]
    out = dict(n=len(pairs), pearson=None, pearson_p=None, spearman=None, spearman_p=None)
    if len(pairs) >= 3 and len({a for a, _ in pairs}) > 1 and len({b for _, b in pairs}) > 1:
        xs, ys = zip(*pairs)
        pearson, spearman = stats.pearsonr(xs, ys), stats.spearmanr(xs, ys)
        out.update(pearson=float(pearson.statistic), pearson_p=float(pearson.pvalue),
                   spearman=float(spearman.statistic), spearman_p=float(spearman.pvalue))
    return out


def run_compare(args, progress: bool = True) -> dict:
    """Run the compare job; returns the dict written to ``compare.json``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.eps is not None and args.eps < 0:
        raise SystemExit("i2f-fast compare: --eps must be >= 0")
    problem = load_problem(args)
    model, x, y = problem.model, problem.x, problem.y
    N, S = x.shape[0], len(args.strengths)
    objective = PRESETS[args.attack].match  # "l2" (dlg) or "cosine" (gs): the prediction of that attack
    bounds = problem.batch.pixel_bounds if args.box else None
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    grads = [frontdoor.flat_gradient(model, x[n : n + 1], y[n : n + 1]) for n in range(N)]
    defended = [[defend(args.defense, s, grads[n], (model, x[n : n + 1], y[n : n + 1]), args, gen) for n in range(N)]
                for s in args.strengths]
    deltas = torch.stack([torch.stack([d.delta for d in row]) for row in defended])  # (S, N, P)
    influence = InversionInfluence(model, x, y, per_sample=True, generator=gen)
    i2f = influence.i2f(deltas, eps=args.eps, eps_rel=args.eps_rel, objective=objective)
    bound = influence.lower_bound(deltas)
    i2f_seconds = time.perf_counter() - start

    from tqdm.auto import tqdm

    bar = tqdm(total=S * N, desc=f"{args.attack} attacks", unit="attack", file=sys.stderr, leave=False, disable=not progress)
    rows = []
    attack_seconds = 0.0
    for si, strength in enumerate(args.strengths):
        for n in range(N):
            t0 = time.perf_counter()
            res = invert(
                model, defended[si][n].grads, y[n : n + 1], (1, *x.shape[1:]), attack=args.attack,
                iterations=args.iterations, restarts=args.restarts, tv=args.tv, lr=args.lr, optimizer=args.optimizer,
                bounds=bounds, generator=gen,
                progress=False,
            )
            attack_seconds += time.perf_counter() - t0
            original = x[n : n + 1]
            attack_rmse = metrics.rmse(res.x, original).item()
            rows.append(dict(
                sample=n, label=int(y[n]), strength=strength, delta_norm=defended[si][n].stats["delta_norm"],
                eps=i2f.eps[si, n].item(), i2f=i2f.value[si, n].item(), i2f_lower_bound=bound.value[si, n].item(),
                i2f_rmse=i2f.rmse[si, n].item(), attack_rmse=attack_rmse, ratio=attack_rmse / i2f.rmse[si, n].item(),
                attack_psnr=metrics.psnr(res.x, original, problem.batch.mean, problem.batch.std).item(),
                matching_loss=res.loss,
            ))
            bar.set_postfix_str(f"strength {strength:g}, sample {n}: RMSE {rows[-1]['attack_rmse']:.3g}")
            bar.update()
    bar.close()
    return dict(
        config=dict(
            dataset=args.dataset, model=args.model, samples=N, start=args.start, input_dim=math.prod(x.shape[1:]),
            num_params=problem.num_params, defense=args.defense, strengths=list(args.strengths), attack=args.attack,
            objective=objective, optimizer=args.optimizer, iterations=args.iterations, restarts=args.restarts,
            box=args.box, eps=args.eps, eps_rel=None if args.eps is not None else args.eps_rel or DEFAULT_EPS_REL,
            method=i2f.method, seed=args.seed, dtype=args.dtype,
        ),
        median_ratio=statistics.median(r["ratio"] for r in rows),
        correlation_log_i2f_vs_log_rmse=correlations([r["i2f"] for r in rows], [r["attack_rmse"] for r in rows]),
        correlation_log_lower_bound_vs_log_rmse=correlations(
            [r["i2f_lower_bound"] for r in rows], [r["attack_rmse"] for r in rows]
        ),
        i2f_seconds=i2f_seconds,
        attack_seconds=attack_seconds,
        rows=rows,
    )


def print_compare(result: dict) -> None:
    header = ("sample", "label", "strength", "‖δ‖", "I²F", "I²F_lb", "I²F/√D", "RMSE", "RMSE/pred", "PSNR dB")
    print(" ".join(f"{h:>10}" for h in header))
    for r in result["rows"]:
        cells = (
            f"{r['sample']:>10d}", f"{r['label']:>10d}", f"{r['strength']:>10.3g}", f"{r['delta_norm']:>10.3e}",
            f"{r['i2f']:>10.3e}", f"{r['i2f_lower_bound']:>10.3e}", f"{r['i2f_rmse']:>10.3e}",
            f"{r['attack_rmse']:>10.3e}", f"{r['ratio']:>10.3g}", f"{r['attack_psnr']:>10.2f}",
        )
        print(" ".join(cells))
    cfg = result["config"]
    damping = damping_label(cfg["eps"], cfg["eps_rel"])
    print(f"(I²F: the {cfg['objective']} prediction ‖Δx‖ with {damping} ({cfg['method']}), I²F/√D the RMSE it "
          "predicts; I²F_lb = ‖Jᵀδ‖/λ_max, the paper's lower bound; RMSE: the attack's, normalised space)")
    for key, name in (("correlation_log_i2f_vs_log_rmse", "I²F"), ("correlation_log_lower_bound_vs_log_rmse", "I²F_lb")):
        c = result[key]
        if c["pearson"] is None:
            print(f"log {name} vs log RMSE: correlation undefined (n = {c['n']})")
        else:
            print(f"log {name} vs log RMSE over n = {c['n']}: Pearson {c['pearson']:.3f} (p = {c['pearson_p']:.2g}), "
                  f"Spearman {c['spearman']:.3f} (p = {c['spearman_p']:.2g})")
    print(f"median attack/predicted RMSE: {result['median_ratio']:.3g} (1: the attack lands where predicted)")
    print(f"{cfg['model']} ({cfg['num_params']:,} parameters), {cfg['samples']} {cfg['dataset']} samples × "
          f"{len(cfg['strengths'])} {cfg['defense']} strengths, {cfg['attack']} attack {cfg['iterations']} iterations "
          f"× {cfg['restarts']} restart(s){', box' if cfg['box'] else ''}: I²F {result['i2f_seconds']:.1f} s, "
          f"attacks {result['attack_seconds']:.1f} s")
