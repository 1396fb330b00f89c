"""Before/after helper for issue 14's restart target: (b) and (c) of ``bench_attack.py`` only, for
whichever ``i2f_fast`` is first on ``PYTHONPATH`` (run it once per library version, alternating).

Prints one line: ``warm <ratio> first <ratio>`` (8 restarts vectorised vs 8 sequential ``invert``
calls, 200 GS iterations each, set-up included; warm: interleaved in this process, median of
``--rounds``; first: the first call in fresh processes, median of ``--rounds``).

Run: ``PYTHONPATH=<tree> python benchmarks/compare_restarts.py [--rounds 5] [--threads 1]``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_attack  # noqa: E402
import common  # noqa: E402


def main(rounds: int, threads: int) -> None:
    with common.threads(threads):
        model, x, y, target, x0, kw = bench_attack._problem()
        vectorised, sequential = bench_attack._restart_runs(model, x, y, target, x0, kw, bench_attack.RESTART_ITERS)
        warm = common.compare(vectorised, sequential, rounds=rounds, warmup=1, min_round_s=0.0)
    first = {mode: [] for mode in bench_attack.FIRST_CALL_MODES}
    for i in range(rounds):
        for mode in bench_attack.FIRST_CALL_MODES if i % 2 == 0 else bench_attack.FIRST_CALL_MODES[::-1]:
            first[mode].append(bench_attack._first_call_in_fresh_process(mode, threads))
    vec_s, seq_s = (statistics.median(first[m]) for m in bench_attack.FIRST_CALL_MODES)
    print(f"warm {warm.ratio:.2f} (vectorised {warm.candidate_s:.2f} s, sequential {warm.baseline_s:.2f} s) "
          f"first {seq_s / vec_s:.2f} (vectorised {vec_s:.2f} s, sequential {seq_s:.2f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    main(args.rounds, args.threads)
