"""Which damping predicts the attack: the converged local attack against I²F at several ε.

For LeNet (the paper's, U(-0.5, 0.5) init) with two seeds, ``--samples`` built-in digits, Gaussian
gradient noise of variance ``--variance`` (the linear regime), and both objectives (L2 = DLG,
cosine = GS): the attack started at the true x and run to convergence
(:func:`i2f_fast.validate.validate`, float64, L-BFGS with a strong-Wolfe line search) gives the
shift a converged attacker makes; the prediction ``‖Δ‖`` is computed on one cached spectrum for
each damping ``ε = eps_rel·λ_max`` and for the paper's ``ε = 1``. Printed: per (model, objective,
damping) the median and the range of achieved / predicted over the samples, as a markdown table
(README.md, "Which damping"). An accuracy measurement, not a timing: it is not part of ``make bench``.

Run: ``python benchmarks/bench_damping.py [--samples 8] [--variance 1e-8]``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
from i2f_fast import InversionInfluence  # noqa: E402
from i2f_fast.validate import validate  # noqa: E402

EPS_REL = (1e-2, 1e-4, 1e-6, 1e-8, 1e-10)
SEEDS = (0, 11)


def main(samples: int = 8, variance: float = 1e-8) -> list[dict]:
    rows = []
    for seed in SEEDS:
        model, x, y = common.lenet_problem(samples, dtype=torch.float64, seed=seed)
        P = sum(p.numel() for p in model.parameters())
        delta = variance**0.5 * torch.randn(samples, P, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        inf = InversionInfluence(model, x, y, per_sample=True)
        for objective in ("l2", "cosine"):
            res = validate(model, x, y, delta, objective, restarts=1, iterations=1, method="spectral")
            achieved = res.local
            predictions = {f"{e:g}·λ_max": inf.i2f(delta, eps_rel=e, objective=objective, method="spectral").value
                           for e in EPS_REL}
            predictions["1 (paper)"] = inf.i2f(delta, eps=1.0, objective=objective, method="spectral").value
            for name, predicted in predictions.items():
                ratio = achieved / predicted
                rows.append(dict(seed=seed, objective=objective, eps=name, median=ratio.median().item(),
                                 low=ratio.min().item(), high=ratio.max().item(),
                                 cosine=res.local_cosine.min().item(), converged=int(res.local_converged.sum())))
                print(rows[-1], flush=True)
    print(f"\nachieved / predicted ‖Δ‖ (median [min, max] over {samples} digits), σ² = {variance:g}")
    print("| LeNet seed | objective | ε | achieved / predicted |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['objective']} | {r['eps']} | {r['median']:.3f} [{r['low']:.3f}, {r['high']:.3f}] |")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--variance", type=float, default=1e-8)
    args = parser.parse_args()
    main(args.samples, args.variance)
