"""Shared benchmark runner: interleaved same-process timing, result rows, table and CSV output.

Policy (DESIGN.md §6): candidate and baseline run in the same process, alternating round by
round (the order inside a round alternates too), after a warm-up; every round repeats a function
enough times to last at least ``min_round_s``; the reported time is the median over rounds and
the figure of merit is the ratio ``baseline / candidate`` (> 1: the candidate is faster).
The thread count is recorded with every comparison.
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CSV_COLUMNS = (
    "date", "machine", "threads", "name", "candidate_s", "baseline_s", "ratio", "goal", "passed", "command",
)

# torch.backends.mkldnn.flags() warns about TF32 on Intel GPUs every time it is entered.
warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")


@dataclass
class Comparison:
    """Result of :func:`compare`; times are seconds per call (medians over rounds)."""

    candidate_s: float
    baseline_s: float
    ratio: float  # baseline_s / candidate_s
    rounds: int
    baseline_rounds: int
    candidate_reps: int
    baseline_reps: int
    threads: int
    candidate_samples: list[float] = field(repr=False, default_factory=list)
    baseline_samples: list[float] = field(repr=False, default_factory=list)

    @property
    def spread(self) -> float:
        """Largest (max / min) over the two sample sets: ~1 for a quiet machine."""
        def one(xs):
            return max(xs) / min(xs) if xs and min(xs) > 0 else float("nan")
        return max(one(self.candidate_samples), one(self.baseline_samples))

    @property
    def noisy(self) -> bool:
        """True when some round took over 1.5x another of the same function (machine contention)."""
        return self.spread > 1.5

    def describe(self) -> str:
        return (
            f"candidate {fmt_time(self.candidate_s)} ({self.rounds} rounds x {self.candidate_reps}), "
            f"baseline {fmt_time(self.baseline_s)} ({self.baseline_rounds} rounds x {self.baseline_reps}), "
            f"{self.threads} thread(s)"
        )


def noise_note(cmp: Comparison) -> str:
    """``"; NOISY (max/min 3.1)"`` when the rounds of ``cmp`` disagree a lot, else ``""``."""
    return f"; NOISY (max/min round {cmp.spread:.1f})" if cmp.noisy else ""


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.1f} us"


def _sync(device) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _time_round(fn: Callable[[], object], reps: int, device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / reps


def _reps_for(fn: Callable[[], object], min_round_s: float, device) -> tuple[int, float]:
    """Call ``fn`` once (a warm-up call, also timed) and pick repetitions to fill ``min_round_s``."""
    t = _time_round(fn, 1, device)
    return max(1, math.ceil(min_round_s / max(t, 1e-9))), t


def compare(
    candidate_fn: Callable[[], object],
    baseline_fn: Callable[[], object],
    rounds: int = 11,
    warmup: int = 2,
    *,
    baseline_rounds: int | None = None,
    baseline_warmup: int | None = None,
    min_round_s: float = 0.02,
    device=None,
    label: str | None = None,
) -> Comparison:
    """Time ``candidate_fn`` against ``baseline_fn``, interleaved in this process.

    Args:
        candidate_fn, baseline_fn: zero-argument callables doing the whole measured work.
        rounds: timed rounds of the candidate (the median is reported; >= 11 for the policy).
        warmup: untimed calls of each function before timing (the first one also sizes the rounds).
        baseline_rounds: fewer rounds for a slow baseline (default ``rounds``); they are spread
            evenly over the candidate's rounds, so the two are still interleaved.
        baseline_warmup: warm-up calls of the baseline (default ``warmup``); 0 is allowed when the
            caller has just run it (e.g. for a correctness check): a round is then one call.
        min_round_s: a round repeats a function until it lasts at least this long.
        device: synchronise this CUDA device around every round (None / CPU: nothing to do).
        label: what is compared, for a comparison that no report row names (pytest-benchmark's
            group name; see ``benchmarks/conftest.py``).

    Returns:
        :class:`Comparison` with medians and ``ratio = baseline_s / candidate_s``.
    """
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    baseline_rounds = rounds if baseline_rounds is None else max(1, min(baseline_rounds, rounds))
    baseline_warmup = warmup if baseline_warmup is None else baseline_warmup
    cand_reps, _ = _reps_for(candidate_fn, min_round_s, device)
    base_reps = _reps_for(baseline_fn, min_round_s, device)[0] if baseline_warmup > 0 else 1
    for i in range(1, max(warmup, baseline_warmup)):
        if i < warmup:
            _time_round(candidate_fn, cand_reps, device)
        if i < baseline_warmup:
            _time_round(baseline_fn, base_reps, device)
    # rounds (of the candidate's) in which the baseline also runs, evenly spread
    base_at = {round((i + 0.5) * rounds / baseline_rounds - 0.5) for i in range(baseline_rounds)}
    cand, base = [], []
    for i in range(rounds):
        order = ("c", "b") if i % 2 == 0 else ("b", "c")
        for who in order:
            if who == "c":
                cand.append(_time_round(candidate_fn, cand_reps, device))
            elif i in base_at:
                base.append(_time_round(baseline_fn, base_reps, device))
    c, b = statistics.median(cand), statistics.median(base)
    result = Comparison(c, b, b / c, len(cand), len(base), cand_reps, base_reps, torch.get_num_threads(), cand, base)
    if _RECORDER is not None:
        _RECORDER.comparisons.append(Recorded(candidate_fn, baseline_fn, result, device, Ambient.now(), label))
    return result


# ------------------------------------------------------------------------------ pytest-benchmark
@dataclass(frozen=True)
class Ambient:
    """The process state a timed function depends on besides its closure: torch threads, the
    oneDNN switch (``conv_kernels.kernels``), the i2f_fast backend (``use_backend``), grad mode."""

    threads: int
    mkldnn: bool
    backend: str
    grad: bool

    @classmethod
    def now(cls) -> "Ambient":
        from i2f_fast.backend import requested_backend

        return cls(torch.get_num_threads(), torch.backends.mkldnn.enabled, requested_backend(), torch.is_grad_enabled())

    @contextlib.contextmanager
    def restored(self):
        """Run the enclosed code in this state (as when the function was timed by :func:`compare`)."""
        from i2f_fast import use_backend

        with threads(self.threads), torch.backends.mkldnn.flags(enabled=self.mkldnn), use_backend(self.backend), \
                torch.set_grad_enabled(self.grad):
            yield


@dataclass
class Recorded:
    """One :func:`compare` call seen by :func:`recording`: the two functions, the interleaved result
    and the state they ran in."""

    candidate_fn: Callable[[], object]
    baseline_fn: Callable[[], object]
    comparison: Comparison
    device: object
    ambient: Ambient
    label: str | None = None


@dataclass
class Recording:
    """What a bench did inside :func:`recording`: its comparisons, in order, and the rows it reported."""

    comparisons: list = field(default_factory=list)
    rows: list = field(default_factory=list)


_RECORDER: Recording | None = None


@contextlib.contextmanager
def recording():
    """Record every :func:`compare` and :func:`report` call made inside (``benchmarks/conftest.py``:
    pytest-benchmark then times the same candidate and baseline functions, in the same state)."""
    global _RECORDER
    saved, _RECORDER = _RECORDER, Recording()
    try:
        yield _RECORDER
    finally:
        _RECORDER = saved


@dataclass
class Row:
    """One line of a benchmark report.

    ``ratio`` is the figure of merit named by ``name``; ``goal`` is a display string such as
    ``">= 150"`` or ``"<= 2.5"`` (None for an informative row); ``passed`` is True/False, or None
    for an informative row.
    """

    name: str
    ratio: float
    goal: str | None
    passed: bool | None
    detail: str = ""
    candidate_s: float | None = None
    baseline_s: float | None = None
    threads: int | None = None

    @property
    def status(self) -> str:
        return "info" if self.passed is None else ("PASS" if self.passed else "FAIL")


def at_least(name: str, cmp: Comparison, goal: float | None, detail: str = "", extra_ok: bool = True) -> Row:
    """Row for a speed-up ``cmp.ratio`` that should be ``>= goal`` (and ``extra_ok``)."""
    passed = None if goal is None else bool(cmp.ratio >= goal and extra_ok)
    return Row(
        name, cmp.ratio, None if goal is None else f">= {goal:g}", passed, detail + noise_note(cmp),
        cmp.candidate_s, cmp.baseline_s, cmp.threads,
    )


def machine_name() -> str:
    """CPU model from ``lscpu`` (falls back to platform.processor()), plus the core count."""
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        pass
    model = model or platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def command_line() -> str:
    return "python " + shlex.join(sys.argv)


def print_table(title: str, rows: list[Row]) -> None:
    """Print ``rows`` as a fixed-width table under ``title``."""
    headers = ("comparison", "ratio", "goal", "result", "threads", "detail")
    lines = [
        (r.name, f"{r.ratio:.2f}", r.goal or "-", r.status, "-" if r.threads is None else str(r.threads), r.detail)
        for r in rows
    ]
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(headers)]
    widths[-1] = len(headers[-1])  # the detail column is not padded
    print(f"\n== {title} ==")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for l in lines:
        print("  ".join(c.ljust(w) for c, w in zip(l, widths)).rstrip())


def write_csv(bench: str, rows: list[Row], command: str | None = None) -> Path:
    """Append ``rows`` to ``benchmarks/results/<bench>.csv`` (header written when the file is new)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{bench}.csv"
    new = not path.exists() or path.stat().st_size == 0
    date = datetime.datetime.now().isoformat(timespec="seconds")
    machine = machine_name()
    command = command or command_line()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(CSV_COLUMNS)
        for r in rows:
            writer.writerow([
                date, machine, "" if r.threads is None else r.threads, r.name,
                "" if r.candidate_s is None else f"{r.candidate_s:.6g}",
                "" if r.baseline_s is None else f"{r.baseline_s:.6g}",
                f"{r.ratio:.4g}", r.goal or "", r.status, command,
            ])
    return path


def report(bench: str, title: str, rows: list[Row], write: bool = True) -> list[Row]:
    """Print the table and append the CSV; returns ``rows``."""
    if _RECORDER is not None:
        _RECORDER.rows.extend(rows)
    print_table(title, rows)
    if write:
        path = write_csv(bench, rows)
        print(f"(appended to {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path})")
    return rows


def standard_args(description: str):
    """argparse parser with the flags every bench accepts: --quick, --no-csv."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="much shorter run (fewer rounds / repetitions)")
    parser.add_argument("--no-csv", action="store_true", help="do not append to benchmarks/results/*.csv")
    return parser


def add_threads_arg(parser, default: int = 1):
    parser.add_argument(
        "--threads", type=int, default=default,
        help=f"torch.set_num_threads for the timed runs (default {default}; see benchmarks/README.md)",
    )
    return parser


class threads:
    """Context manager: ``torch.set_num_threads(n)`` inside, the previous count restored after."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        self.saved = torch.get_num_threads()
        torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.saved)
        return False


def dense_jacobian(model, x, y) -> torch.Tensor:
    """Dense ``J = ∂(∇_θ L)/∂x`` as a ``(P, D)`` matrix by ``torch.func.jacfwd`` (forward over
    reverse; independent of i2f_fast's operators). Use float64 inputs for a reference."""
    from torch.func import functional_call, grad, jacfwd

    params = {n: p.detach() for n, p in model.named_parameters()}

    def flat_gradient(xx):
        g = grad(lambda p: F.cross_entropy(functional_call(model, p, (xx,)), y))(params)
        return torch.cat([g[n].reshape(-1) for n in params])

    return jacfwd(flat_gradient)(x.detach()).reshape(-1, x.numel())


def lenet_problem(n: int = 1, dtype: torch.dtype = torch.float32, seed: int = 0):
    """The paper's LeNet (U(-0.5, 0.5) init, seeded) in eval mode and ``n`` digits samples."""
    from i2f_fast.data import digits
    from i2f_fast.models import lenet

    model = lenet(generator=torch.Generator().manual_seed(seed)).eval().to(dtype)
    batch = digits(n)
    return model, batch.images.to(dtype), batch.labels
