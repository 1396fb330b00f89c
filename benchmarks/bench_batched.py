"""Batched I²F solves vs Python loops of single solves (LeNet, ε = 1, float32).

(a) K = 16 perturbations of one sample: ``inf.i2f(deltas)`` with ``deltas`` (16, P), one batched
    CG, vs 16 calls ``inf.i2f(deltas[k])`` on the same ``InversionInfluence`` (construction
    outside both). Goal >= 6.
(b) N = 16 samples, each its own system (the paper's batch-of-one setting):
    ``InversionInfluence(model, x16, y16, per_sample=True).i2f(delta)`` with ``delta`` (16, P),
    vs a loop building ``InversionInfluence(model, x[n:n+1], y[n:n+1])`` and calling
    ``.i2f(delta[n])`` for each sample (construction inside both). Goal >= 4.

Before timing, the batched and looped values must agree to rtol 1e-4.

An informative row repeats (a) with the batched candidate built with
``strategy="double_backward"`` (batched tangents through the k-replica autograd graph instead of the
vmapped ``torch.func`` closures that the default ``auto`` uses); the loop keeps the default.

Run: ``python benchmarks/bench_batched.py [--quick] [--threads N] [--no-csv]``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
from i2f_fast import InversionInfluence  # noqa: E402

EPS = 1.0
SIGMA = 1e-2
K = 16
N = 16
GOAL_K = 6.0
GOAL_N = 4.0
RTOL = 1e-4


def main(quick: bool = False, write_csv: bool = True, threads: int = 1) -> list[common.Row]:
    rounds = 5 if quick else 11
    min_round_s = 0.005 if quick else 0.02
    rows = []
    with common.threads(threads):
        model, x, y = common.lenet_problem(N)
        P = sum(p.numel() for p in model.parameters())
        gen = torch.Generator().manual_seed(4)

        # ---- (a) K deltas, one sample
        x1, y1 = x[:1], y[:1]
        deltas = SIGMA * torch.randn(K, P, generator=gen)
        inf = InversionInfluence(model, x1, y1)

        def batched_k():
            return inf.i2f(deltas, EPS).value

        def loop_k():
            return torch.stack([inf.i2f(deltas[k], EPS).value for k in range(K)])

        vb, vl = batched_k(), loop_k()
        err = ((vb - vl).abs() / vl.abs()).max().item()
        print(f"(a) K={K} deltas: batched vs looped I²F values agree to max rel. diff {err:.1e} (rtol {RTOL:g})")
        assert torch.allclose(vb, vl, rtol=RTOL, atol=0), f"batched and looped I²F differ: {err:.2e}"
        c = common.compare(batched_k, loop_k, rounds=rounds, min_round_s=min_round_s)
        rows.append(common.at_least(
            f"K={K} deltas: one batched i2f vs {K} i2f calls", c, GOAL_K,
            f"batched {common.fmt_time(c.candidate_s)}, loop {common.fmt_time(c.baseline_s)}; values rel. diff {err:.1e}",
        ))
        # informative: the same batched solve through the k-replica autograd graph
        inf_func = InversionInfluence(model, x1, y1, strategy="double_backward")

        def batched_k_func():
            return inf_func.i2f(deltas, EPS).value

        vf = batched_k_func()
        assert torch.allclose(vf, vl, rtol=RTOL, atol=0), "strategy='double_backward' batched I²F differs"
        c = common.compare(batched_k_func, loop_k, rounds=rounds, min_round_s=min_round_s)
        rows.append(common.at_least(
            f"K={K} deltas: batched i2f strategy=double_backward vs {K} default i2f calls", c, None,
            f"batched {common.fmt_time(c.candidate_s)}, loop {common.fmt_time(c.baseline_s)} (informative)",
        ))

        # ---- (b) N per-sample systems
        delta_n = SIGMA * torch.randn(N, P, generator=gen)

        def per_sample():
            return InversionInfluence(model, x, y, per_sample=True).i2f(delta_n, EPS).value

        def loop_n():
            return torch.stack([
                InversionInfluence(model, x[n : n + 1], y[n : n + 1]).i2f(delta_n[n], EPS).value for n in range(N)
            ])

        vb, vl = per_sample(), loop_n()
        err = ((vb - vl).abs() / vl.abs()).max().item()
        print(f"(b) N={N} samples: per-sample batched vs looped I²F values agree to max rel. diff {err:.1e} "
              f"(rtol {RTOL:g})")
        assert torch.allclose(vb, vl, rtol=RTOL, atol=0), f"per-sample and looped I²F differ: {err:.2e}"
        c = common.compare(per_sample, loop_n, rounds=rounds, min_round_s=min_round_s)
        rows.append(common.at_least(
            f"N={N} samples: per_sample=True i2f vs loop of {N} InversionInfluence+i2f", c, GOAL_N,
            f"batched {common.fmt_time(c.candidate_s)}, loop {common.fmt_time(c.baseline_s)}; values rel. diff {err:.1e}",
        ))

    return common.report("bench_batched", "Batched solves vs Python loops (LeNet, eps=1)", rows, write_csv)


if __name__ == "__main__":
    parser = common.add_threads_arg(common.standard_args(__doc__.splitlines()[0]))
    args = parser.parse_args()
    main(quick=args.quick, write_csv=not args.no_csv, threads=args.threads)
