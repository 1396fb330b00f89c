"""The dataset audit's throughput: i2f_fast.audit.audit against the straightforward pure-PyTorch way,
and 2 ranks against 1 on the same work.

LeNet (the paper's, U(-0.5, 0.5) init) in float32, built-in digits, per-sample mode, Gaussian noise
σ² = 1e-4, exact expectation ``E‖Δ‖² = σ² Σ λ/(λ+ε)²`` with ε = 1e-8·λ_max per sample.

(a) ``audit(model, digits, "gaussian:1e-4")`` on a subset (16 digits; ``--quick`` 4) vs a loop over
    the samples of ``torch.func.jacfwd`` (J, P × D, float64), ``eigvalsh(JᵀJ)`` and the closed form.
    Both first agree to 1e-6 (relative) on every sample. Goal ≥ 5× (issue 13).
(b) The same audit on 2 ranks × 1 thread (gloo, ``torch.multiprocessing`` on a free port) vs 1 rank
    × 1 thread, timed inside the ranks from a barrier after start-up to the merged result, rounds
    interleaved. Goal ≥ 1.7×. It needs two otherwise idle cores: on a shared machine the second rank
    waits for a core and the ratio measures the contention, not the audit (rows marked NOISY).

``--full`` also times the whole audit, all 1,797 digits, with as many ranks as ``--ranks`` (default
2), once: the wall time the issue asks for (~1 s per sample per core; ~15 min on 2 quiet cores).

Run: ``python benchmarks/bench_audit.py [--quick] [--no-csv] [--full] [--ranks N]``.
"""
from __future__ import annotations

import copy
import os
import socket
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

import common  # noqa: E402
from i2f_fast.audit import audit  # noqa: E402
from i2f_fast.data import digits  # noqa: E402

VARIANCE = 1e-4
EPS_REL = 1e-8
GOAL_BASELINE = 5.0
GOAL_RANKS = 1.7
MAX_REL_ERROR = 1e-6


def baseline_rmse(model, images, labels) -> torch.Tensor:
    """The straightforward way, per sample: dense J by jacfwd (float64), eigvalsh(JᵀJ), σ² Σ λ/(λ+ε)²."""
    model64 = copy.deepcopy(model).double()
    out = []
    for n in range(images.shape[0]):
        J = common.dense_jacobian(model64, images[n : n + 1].double(), labels[n : n + 1])
        lam = torch.linalg.eigvalsh(J.T @ J)
        eps = EPS_REL * lam[-1]
        energy = VARIANCE * (lam.clamp_min(0) / (lam + eps) ** 2).sum()
        out.append((energy / J.shape[1]).sqrt())
    return torch.stack(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, samples: int, timing: str) -> None:
    """One rank: join the group, wait for the others, audit, and (rank 0) write the seconds to ``timing``."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(hours=2))
    model = common.lenet_problem(samples)[0]
    data = digits(samples)
    torch.distributed.barrier()
    start = time.perf_counter()
    audit(model, data, f"gaussian:{VARIANCE}", eps_rel=EPS_REL, progress=rank == 0 and samples > 100)
    seconds = time.perf_counter() - start
    if rank == 0:
        Path(timing).write_text(str(seconds))
    torch.distributed.destroy_process_group()


def ranks_seconds(world: int, samples: int) -> float:
    """Wall time of the audit of ``samples`` digits on ``world`` ranks × 1 thread (start-up excluded)."""
    with tempfile.TemporaryDirectory() as folder:
        timing = os.path.join(folder, "seconds")
        mp.start_processes(_rank, args=(world, _free_port(), samples, timing), nprocs=world, start_method="spawn")
        return float(Path(timing).read_text())


def main(quick: bool = False, write_csv: bool = True, threads: int = 1, full: bool = False, ranks: int = 2):
    samples = 4 if quick else 16
    rounds = 2 if quick else 3
    rows = []
    with common.threads(threads):
        model, x, y = common.lenet_problem(samples)
        data = digits(samples)

        def candidate():
            return audit(model, data, f"gaussian:{VARIANCE}", eps_rel=EPS_REL, progress=False).table

        def baseline():
            return baseline_rmse(model, x, y)

        # ---- correctness first
        ours = torch.tensor(candidate().column("rmse").to_pylist(), dtype=torch.float64)
        ref = baseline()
        error = ((ours - ref).abs() / ref).max().item()
        print(f"audit vs jacfwd + eigvalsh, {samples} digits: largest relative difference of the RMSE {error:.1e}")
        assert error <= MAX_REL_ERROR, f"audit differs from the dense reference by {error:.2e} > {MAX_REL_ERROR:g}"

        c = common.compare(candidate, baseline, rounds=rounds, warmup=1)
        rows.append(common.at_least(
            f"{samples} digits, Gaussian, exact: audit vs loop of jacfwd + eigvalsh", c, GOAL_BASELINE,
            f"audit {c.candidate_s / samples:.2f} s/sample, baseline {c.baseline_s / samples:.2f} s/sample; "
            f"max rel. difference {error:.1e}",
        ))

    # ---- 2 ranks vs 1 rank, interleaved (each round starts fresh processes; start-up is not timed)
    one, two = [], []
    work = 2 * samples
    for i in range(rounds):
        for world in ((1, 2) if i % 2 == 0 else (2, 1)):
            (one if world == 1 else two).append(ranks_seconds(world, work))
    one_s, two_s = sorted(one)[len(one) // 2], sorted(two)[len(two) // 2]
    spread = max(max(one) / min(one), max(two) / min(two))
    ratio = one_s / two_s
    rows.append(common.Row(
        f"{work} digits: 2 ranks x 1 thread vs 1 rank x 1 thread (gloo)", ratio, f">= {GOAL_RANKS:g}", ratio >= GOAL_RANKS,
        f"1 rank {one_s:.1f} s, 2 ranks {two_s:.1f} s (median of {rounds}); needs 2 idle cores"
        + (f"; NOISY (max/min round {spread:.1f})" if spread > 1.5 else ""),
        two_s, one_s, 1,
    ))

    if full:
        total = len(digits())
        seconds = ranks_seconds(ranks, total)
        rows.append(common.Row(
            f"all {total} digits on {ranks} ranks x 1 thread: wall time (s)", seconds, None, None,
            f"{total / seconds:.2f} samples/s", seconds, None, 1,
        ))
    return common.report("bench_audit", "Dataset audit throughput (LeNet, digits, Gaussian, exact)", rows, write_csv)


if __name__ == "__main__":
    parser = common.add_threads_arg(common.standard_args(__doc__.splitlines()[0]))
    parser.add_argument("--full", action="store_true", help="also time all 1,797 digits once")
    parser.add_argument("--ranks", type=int, default=2, help="ranks of the --full run (default 2)")
    args = parser.parse_args()
    main(quick=args.quick, write_csv=not args.no_csv, threads=args.threads, full=args.full, ranks=args.ranks)
