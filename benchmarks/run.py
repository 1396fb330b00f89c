"""Run every benchmark and print one summary table (``make bench``).

Each bench's ``main()`` checks correctness first, times candidate vs baseline interleaved in this
process, prints its own table and appends to ``benchmarks/results/<bench>.csv``. The summary lists
what was compared, the ratio, the goal, pass/fail and the thread count.

Exit status: 0 when every bench ran, whether or not its goals were met (this is a report);
1 when a bench raised (a failed correctness assertion included).

Usage: ``python benchmarks/run.py [--quick] [--threads N] [--no-csv] [--only NAME ...]``.
"""
from __future__ import annotations

import importlib
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402

BENCHES = ("bench_cg_step", "bench_engine_kernels", "bench_products", "bench_engine", "bench_i2f", "bench_eigen",
           "bench_batched", "bench_prediction", "bench_attack", "bench_fused_attack")
TAKES_THREADS = {"bench_cg_step", "bench_engine_kernels", "bench_i2f", "bench_eigen", "bench_batched", "bench_prediction",
                 "bench_attack", "bench_fused_attack"}
# bench_products and bench_engine run 1 and 2 threads themselves


def main(argv=None) -> int:
    parser = common.add_threads_arg(common.standard_args(__doc__.splitlines()[0]))
    parser.add_argument("--only", nargs="+", choices=BENCHES, help="run only these benches")
    args = parser.parse_args(argv)
    print(f"machine: {common.machine_name()}; torch {torch.__version__}; "
          f"default threads {torch.get_num_threads()}; command: {common.command_line()}")
    rows: list[tuple[str, common.Row]] = []
    errors: list[str] = []
    for name in args.only or BENCHES:
        print(f"\n##### {name}")
        start = time.perf_counter()
        try:
            module = importlib.import_module(name)
            kwargs = dict(quick=args.quick, write_csv=not args.no_csv)
            if name in TAKES_THREADS:
                kwargs["threads"] = args.threads
            rows += [(name, r) for r in module.main(**kwargs)]
        except Exception:  # noqa: BLE001 — report and go on with the other benches
            traceback.print_exc()
            errors.append(name)
        print(f"({name}: {time.perf_counter() - start:.1f} s)")

    summary = [common.Row(f"{b}: {r.name}", r.ratio, r.goal, r.passed, "", threads=r.threads) for b, r in rows]
    common.print_table("Summary (ratio = baseline/candidate, except gram/G = product cost in gradients)", summary)
    goals = [r for _, r in rows if r.passed is not None]
    print(f"\n{sum(r.passed for r in goals)}/{len(goals)} goals met; "
          f"{len(rows) - len(goals)} informative rows; errors: {', '.join(errors) or 'none'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
