"""``i2f-fast compare``: I²F's prediction next to a real attack, per sample and defense strength.

For each of N samples (the paper's batch-of-one setting) and each defense strength, the sample's
clean gradient is defended, I²F and its lower bound are computed for the resulting δ (all N × S
systems in one per-sample batched solve), and the attack is run on the defended gradient. I²F is
an unnormalised distance ‖Δx‖ while the paper plots RMSE = ‖Δx‖/√D, so the table and the plot put
``I²F/√D`` (the RMSE I²F predicts) next to the attack's RMSE; the log-log correlations do not
depend on that constant.
"""
from __future__ import annotations

import math
import sys
import time

import torch
from scipy import stats

from .. import metrics
from ..attack import invert
from ..influence import InversionInfluence
from .problem import clean_gradient, defend, load_problem

COLUMNS = (
    "sample", "label", "strength", "delta_norm", "i2f", "i2f_lower_bound", "i2f_rmse", "attack_rmse",
    "attack_psnr", "matching_loss",
)


def _correlations(i2f, rmse) -> dict:
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
    if args.eps < 0:
        raise SystemExit("i2f-fast compare: --eps must be >= 0")
    problem = load_problem(args)
    model, x, y = problem.model, problem.x, problem.y
    N, S, D = x.shape[0], len(args.strengths), math.prod(x.shape[1:])
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    grads = [clean_gradient(model, x[n : n + 1], y[n : n + 1]) for n in range(N)]
    defended = [[defend(args.defense, s, grads[n], (model, x[n : n + 1], y[n : n + 1]), args, gen) for n in range(N)]
                for s in args.strengths]
    deltas = torch.stack([torch.stack([d.delta for d in row]) for row in defended])  # (S, N, P)
    influence = InversionInfluence(model, x, y, per_sample=True, generator=gen)
    i2f = influence.i2f(deltas, args.eps)
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
                bounds=problem.batch.pixel_bounds if args.attack == "gs" else None, generator=gen,
                progress=False,
            )
            attack_seconds += time.perf_counter() - t0
            original = x[n : n + 1]
            rows.append(dict(
                sample=n, label=int(y[n]), strength=strength, delta_norm=defended[si][n].stats["delta_norm"],
                i2f=i2f.value[si, n].item(), i2f_lower_bound=bound.value[si, n].item(),
                i2f_rmse=i2f.value[si, n].item() / math.sqrt(D),
                attack_rmse=metrics.rmse(res.x, original).item(),
                attack_psnr=metrics.psnr(res.x, original, problem.batch.mean, problem.batch.std).item(),
                matching_loss=res.loss,
            ))
            bar.set_postfix_str(f"strength {strength:g}, sample {n}: RMSE {rows[-1]['attack_rmse']:.3g}")
            bar.update()
    bar.close()
    return dict(
        config=dict(
            dataset=args.dataset, model=args.model, samples=N, start=args.start, input_dim=D,
            num_params=problem.num_params, defense=args.defense, strengths=list(args.strengths), attack=args.attack,
            optimizer=args.optimizer, iterations=args.iterations, restarts=args.restarts, eps=args.eps,
            seed=args.seed, dtype=args.dtype,
        ),
        correlation_log_i2f_vs_log_rmse=_correlations([r["i2f"] for r in rows], [r["attack_rmse"] for r in rows]),
        correlation_log_lower_bound_vs_log_rmse=_correlations(
            [r["i2f_lower_bound"] for r in rows], [r["attack_rmse"] for r in rows]
        ),
        i2f_seconds=i2f_seconds,
        attack_seconds=attack_seconds,
        rows=rows,
    )


def print_compare(result: dict) -> None:
    header = ("sample", "label", "strength", "‖δ‖", "I²F", "I²F_lb", "I²F/√D", "RMSE", "PSNR dB")
    print(" ".join(f"{h:>10}" for h in header))
    for r in result["rows"]:
        cells = (
            f"{r['sample']:>10d}", f"{r['label']:>10d}", f"{r['strength']:>10.3g}", f"{r['delta_norm']:>10.3e}",
            f"{r['i2f']:>10.3e}", f"{r['i2f_lower_bound']:>10.3e}", f"{r['i2f_rmse']:>10.3e}",
            f"{r['attack_rmse']:>10.3e}", f"{r['attack_psnr']:>10.2f}",
        )
        print(" ".join(cells))
    cfg = result["config"]
    for key, name in (("correlation_log_i2f_vs_log_rmse", "I²F"), ("correlation_log_lower_bound_vs_log_rmse", "I²F_lb")):
        c = result[key]
        if c["pearson"] is None:
            print(f"log {name} vs log RMSE: correlation undefined (n = {c['n']})")
        else:
            print(f"log {name} vs log RMSE over n = {c['n']}: Pearson {c['pearson']:.3f} (p = {c['pearson_p']:.2g}), "
                  f"Spearman {c['spearman']:.3f} (p = {c['spearman_p']:.2g})")
    print(f"{cfg['model']} ({cfg['num_params']:,} parameters), {cfg['samples']} {cfg['dataset']} samples × "
          f"{len(cfg['strengths'])} {cfg['defense']} strengths, {cfg['attack']} attack {cfg['iterations']} iterations "
          f"× {cfg['restarts']} restart(s), ε = {cfg['eps']:g}: I²F {result['i2f_seconds']:.1f} s, "
          f"attacks {result['attack_seconds']:.1f} s")
