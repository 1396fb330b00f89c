"""``i2f-fast validate``: the prediction against the attack's own optimum and the attack itself,
over Gaussian noise levels that span the linear regime and beyond.

Each sample gets one standard-normal direction ``z`` (P numbers), and noise level ``σ²`` the
perturbation ``δ = σ z``: along the levels only the size of ``δ`` changes, so the prediction
grows exactly like ``σ`` and any departure of the attack from it is the nonlinearity the
prediction leaves out. :func:`i2f_fast.validate.validate` runs the local attack (from ``x``, to
convergence) and the global attack (random starts) for every level and sample;
:func:`~i2f_fast.validate.linear_regime` says where the local attack leaves the prediction.
"""
from __future__ import annotations

import math

import torch

from ..validate import MIN_COSINE, RATIO_TOLERANCE, linear_regime, validate
from .problem import load_problem

COLUMNS = (
    "sample", "label", "variance", "eps", "predicted_rmse", "local_rmse", "local_ratio", "local_cosine",
    "local_iterations", "local_converged", "global_rmse", "global_ratio",
)


def run_validate(args, progress: bool = True) -> dict:
    """Run the validate job (everything in float64); returns the dict written to ``validate.json``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    problem = load_problem(args)
    model, x, y = problem.model, problem.x, problem.y
    variances = sorted(set(args.variances))
    gen = torch.Generator().manual_seed(args.seed)
    z = torch.randn(x.shape[0], problem.num_params, generator=gen, dtype=torch.float64)
    deltas = torch.stack([math.sqrt(v) * z for v in variances])  # (K, N, P)
    res = validate(
        model, x, y, deltas, args.objective, restarts=args.restarts, iterations=args.iterations,
        local_iterations=args.local_iterations, grad_tol=args.grad_tol, eps_rel=args.eps_rel,
        bounds=problem.batch.pixel_bounds if args.box else None, generator=gen, progress=progress,
    )
    regime = linear_regime(variances, res)
    rows = []
    for k, var in enumerate(variances):
        for n in range(x.shape[0]):
            rows.append(dict(
                sample=args.start + n, label=int(y[n]), variance=var, eps=res.eps[k, n].item(),
                predicted_rmse=res.predicted_rmse[k, n].item(), local_rmse=res.local_rmse[k, n].item(),
                local_ratio=res.local_ratio[k, n].item(), local_cosine=res.local_cosine[k, n].item(),
                local_iterations=int(res.local_iterations[k, n]), local_converged=bool(res.local_converged[k, n]),
                global_rmse=res.global_rmse[k, n].item(), global_ratio=res.global_ratio[k, n].item(),
            ))
    return dict(
        config=dict(
            dataset=args.dataset, model=args.model, samples=x.shape[0], start=args.start,
            input_dim=math.prod(x.shape[1:]), num_params=problem.num_params, variances=variances,
            objective=args.objective, attack=res.attack, restarts=args.restarts, iterations=args.iterations,
            local_iterations=args.local_iterations, grad_tol=args.grad_tol, eps_rel=args.eps_rel, box=res.bounds,
            method=res.method, seed=args.seed, dtype="float64",
        ),
        linear_regime=dict(
            ratio_tolerance=RATIO_TOLERANCE, min_cosine=MIN_COSINE, fraction_inside=regime.inside,
            last_inside=regime.last_inside, first_outside=regime.first_outside,
        ),
        seconds=res.seconds,
        rows=rows,
    )


def print_validate(result: dict) -> None:
    header = ("sample", "label", "σ²", "predicted", "local", "local/pred", "cosine", "L-BFGS it", "global", "global/pred")
    print(" ".join(f"{h:>10}" for h in header))
    for r in result["rows"]:
        its = f"{r['local_iterations']}{'' if r['local_converged'] else '+'}"
        cells = (
            f"{r['sample']:>10d}", f"{r['label']:>10d}", f"{r['variance']:>10.0e}", f"{r['predicted_rmse']:>10.3e}",
            f"{r['local_rmse']:>10.3e}", f"{r['local_ratio']:>10.4f}", f"{r['local_cosine']:>10.5f}", f"{its:>10}",
            f"{r['global_rmse']:>10.3e}", f"{r['global_ratio']:>10.3g}",
        )
        print(" ".join(cells))
    cfg, lr, sec = result["config"], result["linear_regime"], result["seconds"]
    print(f"(RMSE per element in the normalised space; predicted: ε = {cfg['eps_rel']:g}·λ_max, {cfg['method']}; "
          f"local: {cfg['attack']} objective by L-BFGS + strong Wolfe from x; global: {cfg['attack']} attack, "
          f"{cfg['iterations']} iterations × {cfg['restarts']} restart(s){', box' if cfg['box'] else ''}; "
          "+: hit the iteration cap)")
    within = f"local/predicted within ±{lr['ratio_tolerance']:.0%} and cosine ≥ {lr['min_cosine']}"
    if lr["first_outside"] is None:
        print(f"linear regime: every level up to σ² = {cfg['variances'][-1]:g} ({within} for every sample)")
    elif lr["last_inside"] is None:
        print(f"linear regime: not reached, already outside at the smallest σ² = {lr['first_outside']:g} ({within})")
    else:
        print(f"linear regime ends between σ² = {lr['last_inside']:g} and {lr['first_outside']:g} ({within} for "
              f"every sample up to {lr['last_inside']:g})")
    print(f"{cfg['model']} ({cfg['num_params']:,} parameters) on {cfg['samples']} {cfg['dataset']} samples "
          f"(D = {cfg['input_dim']}): prediction {sec['prediction']:.1f} s, local attacks {sec['local']:.1f} s, "
          f"global attacks {sec['global']:.1f} s")
