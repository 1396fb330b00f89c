"""The fused cg_step kernel (C++/OpenMP) vs the reference sequence of torch ops, float32, B·D = 2²⁰.

Each timed call restores x, r, p from a snapshot (three copies) and takes one step: a CG step
with a fixed Ap is not a stable map, so repeated in-place steps would overflow and freeze rows
(less work). Both sides pay the same restore; it is timed on its own in the same run and
subtracted: ``ratio = (reference − restore) / (native − restore)``. Goal: >= 2 for the
(16, 65536) shape; the other shapes, the gross ratio (restore included) and the effective
bandwidth of the native step (two passes: 10 array reads/writes of B·D floats) are informative.

Before timing, the native result must match the reference (rtol 1e-5).

Run: ``python benchmarks/bench_cg_step.py [--quick] [--threads N] [--no-csv]``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
from i2f_fast import use_backend  # noqa: E402
from i2f_fast.backend import unavailable_reason  # noqa: E402
from i2f_fast.ops import cg_step  # noqa: E402

SHAPES = ((16, 1 << 16), (1, 1 << 20), (1024, 1024))
GOAL_SHAPE = (16, 1 << 16)
GOAL = 2.0
ARRAY_PASSES = 10  # pass 1 reads p, Ap, r; pass 2 reads x, r, p, Ap and writes x, r, p


def _state(B, D):
    g = torch.Generator().manual_seed(0)
    x, r, p = (torch.randn(B, D, generator=g) for _ in range(3))
    Ap = p * (0.5 + torch.rand(B, D, generator=g))
    rr = (r * r).sum(1)
    return (x, r, p), Ap, rr, torch.ones(B, dtype=torch.bool)


def main(quick: bool = False, write_csv: bool = True, threads: int = 1) -> list[common.Row]:
    why = unavailable_reason("native", torch.device("cpu"))
    if why:
        raise RuntimeError(f"bench_cg_step needs the C++ extension: {why}")
    rounds = 5 if quick else 11
    min_round_s = 0.005 if quick else 0.02
    rows = []
    with common.threads(threads):
        for B, D in SHAPES:
            snapshot, Ap, rr, active = _state(B, D)
            work = tuple(t.clone() for t in snapshot)

            def restore():
                for w, s in zip(work, snapshot):
                    w.copy_(s)

            def step(backend):
                def run():
                    restore()
                    with use_backend(backend):
                        return cg_step(*work, Ap, rr, active)

                return run

            native, reference = step("native"), step("reference")
            out_n = native()
            got = [t.clone() for t in work] + [out_n[0]]
            out_r = reference()
            for a, b in zip(got, [*work, out_r[0]]):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

            c = common.compare(native, reference, rounds=rounds, min_round_s=min_round_s)
            copy = common.compare(restore, restore, rounds=rounds, min_round_s=min_round_s,
                                  label=f"restore of x, r, p ({B}, {D}), timed to be subtracted")
            restore_s = copy.candidate_s
            net_native, net_reference = c.candidate_s - restore_s, c.baseline_s - restore_s
            net = net_reference / net_native
            gb_s = ARRAY_PASSES * B * D * 4 / net_native / 1e9
            goal = GOAL if (B, D) == GOAL_SHAPE else None
            rows.append(common.Row(
                f"cg_step C++ vs reference, ({B}, {D}) float32, restore subtracted", net,
                None if goal is None else f">= {goal:g}", None if goal is None else bool(net >= goal),
                f"native {common.fmt_time(net_native)} ({gb_s:.1f} GB/s effective), reference "
                f"{common.fmt_time(net_reference)}, restore {common.fmt_time(restore_s)}" + common.noise_note(c),
                net_native, net_reference, c.threads,
            ))
            rows.append(common.at_least(
                f"cg_step C++ vs reference, ({B}, {D}) float32, gross (restore included)", c, None,
                "informative",
            ))
    return common.report("bench_cg_step", "Fused cg_step: C++/OpenMP vs reference torch ops (float32)", rows, write_csv)


if __name__ == "__main__":
    parser = common.add_threads_arg(common.standard_args(__doc__.splitlines()[0]))
    args = parser.parse_args()
    main(quick=args.quick, write_csv=not args.no_csv, threads=args.threads)
