"""Run every benchmark and print one summary table (``make bench``).

Each bench's ``main()`` checks correctness first, times candidate vs baseline interleaved in this
process, prints its own table and appends to ``benchmarks/results/<bench>.csv``. The summary lists
what was compared, the ratio, the goal, pass/fail and the thread count.

Exit status: 0 when every bench ran, whether or not its goals were met (this is a report);
1 when a bench raised (a failed correctness assertion included).

Usage: ``python benchmarks/run.py [--quick] [--threads N] [--no-csv] [--only NAME ...]``, or
``python benchmarks/run.py --table RUN.json`` to print the table of a pytest-benchmark run
(``pytest benchmarks --benchmark-only --benchmark-json=RUN.json``, what ``make bench`` does; see
``conftest.py``): the rows the benches reported, kept in every benchmark's ``extra_info``.
"""
from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402

BENCHES = ("bench_cg_step", "bench_engine_kernels", "bench_products", "bench_engine", "bench_i2f", "bench_eigen",
           "bench_batched", "bench_prediction", "bench_attack", "bench_fused_attack", "bench_audit")
TAKES_THREADS = {"bench_cg_step", "bench_engine_kernels", "bench_i2f", "bench_eigen", "bench_batched", "bench_prediction", "bench_audit",
                 "bench_attack", "bench_fused_attack"}
# bench_products and bench_engine run 1 and 2 threads themselves


def main(argv=None) -> int:
    parser = common.add_threads_arg(common.standard_args(__doc__.splitlines()[0]))
    parser.add_argument("--only", nargs="+", choices=BENCHES, help="run only these benches")
    parser.add_argument("--table", type=Path, help="print the table of a saved pytest-benchmark JSON run instead")
    args = parser.parse_args(argv)
    if args.table is not None:
        return print_saved_table(args.table)
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

    print_summary(rows, errors)
    return 1 if errors else 0


def print_summary(rows: list[tuple[str, common.Row]], errors: list[str]) -> None:
    """The one table of ``make bench``: every row of every bench, then the goals met."""
    summary = [common.Row(f"{b}: {r.name}", r.ratio, r.goal, r.passed, "", threads=r.threads) for b, r in rows]
    common.print_table("Summary (ratio = baseline/candidate, except gram/G = product cost in gradients)", summary)
    goals = [r for _, r in rows if r.passed is not None]
    print(f"\n{sum(r.passed for r in goals)}/{len(goals)} goals met; "
          f"{len(rows) - len(goals)} informative rows; errors: {', '.join(errors) or 'none'}")


def print_saved_table(path: Path) -> int:
    """Print the summary table of a pytest-benchmark JSON run (rows from ``extra_info["bench_rows"]``)."""
    run = json.loads(path.read_text())
    rows: dict[tuple[str, str], common.Row] = {}
    for entry in run.get("benchmarks", []):
        for r in entry.get("extra_info", {}).get("bench_rows", []):
            rows.setdefault((r["bench"], r["name"]), common.Row(r["name"], r["ratio"], r["goal"], r["passed"], r["detail"],
                                                               threads=r["threads"]))
    info = run.get("machine_info", {})
    print(f"{path}: {run.get('datetime', '?')}, {info.get('cpu', {}).get('brand_raw', info.get('processor', '?'))}, "
          f"commit {run.get('commit_info', {}).get('id', '?')[:12]}")
    print_summary([(bench, row) for (bench, _), row in rows.items()], [])
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
