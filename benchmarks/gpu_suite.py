"""The GPU suite: build, test and benchmark i2f_fast on one CUDA card in one command (< 10 minutes).

Steps, each in its own process so that the freshly built extension is the one loaded:

1. ``build``: ``pip install --no-build-isolation --no-deps -e .`` with ``I2F_FAST_CUDA=1`` (a CUDA
   compile error fails the suite) for the visible card's architecture only;
2. ``tests``: the whole test suite on the GPU (``pytest python_tests``; CUDA, Triton and reference
   backends, the CUDA-graph tests included);
3. ``gpu-bench``: this file's measurements (``--measure``), every ratio in one process and one run:
   the card's device-to-device copy bandwidth; ``cg_step`` CUDA vs Triton vs reference at
   B·D = 2²⁴ (goal: ≥ 75 % of the copy bandwidth) and the vector work of one graph-replayed CG
   iteration at B·D = 2²⁰ (goal ≤ 10 µs); ``grad_match`` + ``attack_step`` at P = 10⁷ (goal ≥ 70 %
   of the copy bandwidth) and per backend; one LeNet attack iteration (batch 1) replayed as a CUDA
   graph vs the eager reference loop (goal ≥ 2×); JᵀJv of ``InversionJacobian`` vs a
   ``torch.func`` composition (informative); the structured engine's whole JᵀJv (LeNet, N = 1)
   replayed as one CUDA graph vs eager double-backward (goal ≥ 3×);
4. ``cpu-bench``: ``benchmarks/run.py --quick --no-csv`` (the CPU benchmarks on this host).

It prints one table with the card's name, then the steps' status and times. A step that would
start with less than its share of ``--budget-s`` left is skipped and reported as such.

Usage: ``python benchmarks/gpu_suite.py [--skip build tests gpu-bench cpu-bench] [--budget-s 570]
[--dry-run]`` or ``make gpu-suite`` (``SUITE_ARGS=...`` passes options).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("build", "tests", "gpu-bench", "cpu-bench")
# Seconds each step may take (its timeout), in order; the sum stays under 10 minutes.
STEP_LIMITS = {"build": 180, "tests": 240, "gpu-bench": 90, "cpu-bench": 60}
GOAL_CG_BANDWIDTH = 0.75
GOAL_CG_ITERATION_US = 10.0
GOAL_ATTACK_BANDWIDTH = 0.70
GOAL_GRAPH_SPEEDUP = 2.0
GOAL_ENGINE_GRAPH = 3.0  # issue 6: whole-product graph replay vs eager autograd, LeNet N = 1


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", nargs="+", choices=STEPS, default=[], help="steps to leave out")
    parser.add_argument("--budget-s", type=float, default=570.0, help="wall-clock budget of the whole suite")
    parser.add_argument("--dry-run", action="store_true", help="print the steps' commands and exit")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # step 3, in its own process
    args = parser.parse_args(argv)
    if args.budget_s <= 0:
        parser.error("--budget-s must be > 0")
    return args


def step_commands(python: str = sys.executable) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each step's command line and extra environment."""
    return {
        "build": ([python, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps", "-e", "."],
                  {"I2F_FAST_CUDA": "1", "MAX_JOBS": str(os.cpu_count() or 4)}),
        "tests": ([python, "-m", "pytest", "python_tests", "-q", "-x", "-p", "no:cacheprovider"], {}),
        "gpu-bench": ([python, str(Path(__file__).resolve()), "--measure"], {}),
        "cpu-bench": ([python, "benchmarks/run.py", "--quick", "--no-csv"], {}),
    }


def run_steps(args) -> int:
    commands = step_commands()
    start = time.monotonic()
    status = []
    for name in STEPS:
        cmd, env = commands[name]
        if name in args.skip:
            status.append((name, "skipped (--skip)", 0.0))
            continue
        if args.dry_run:
            print(" ".join(f"{k}={v}" for k, v in env.items()), " ".join(cmd))
            continue
        left = args.budget_s - (time.monotonic() - start)
        limit = min(STEP_LIMITS[name], left)
        if limit < 0.5 * STEP_LIMITS[name]:
            status.append((name, f"skipped (budget: {left:.0f} s left)", 0.0))
            continue
        print(f"\n##### {name}: {' '.join(cmd)}", flush=True)
        t0 = time.monotonic()
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, timeout=limit).returncode
            outcome = "ok" if rc == 0 else f"FAILED (exit {rc})"
        except subprocess.TimeoutExpired:
            rc, outcome = 124, f"TIMED OUT after {limit:.0f} s"
        status.append((name, outcome, time.monotonic() - t0))
        if name == "build" and rc != 0:
            print("the CUDA build failed: the other steps would test a stale extension")
            break
    if args.dry_run:
        return 0
    print(f"\n== GPU suite: {time.monotonic() - start:.0f} s in all ==")
    for name, outcome, seconds in status:
        print(f"{name:<10} {outcome:<32} {seconds:6.0f} s")
    return 0 if all(o.startswith(("ok", "skipped")) for _, o, _ in status) else 1


# ------------------------------------------------------------------------------ step 3: measure
def _cuda_time(fn, reps: int = 20, warmup: int = 3) -> float:
    """Median seconds per call of ``fn`` over ``reps`` CUDA-event-timed calls."""
    import statistics

    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def _interleaved(fns: dict, reps: int = 11) -> dict:
    """Median seconds per call of each function, timed in alternating rounds."""
    import statistics

    results = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            results[name].append(_cuda_time(fn, reps=3, warmup=1))
    return {name: statistics.median(ts) for name, ts in results.items()}


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write counted)."""
    import torch

    src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    return 2 * nbytes / _cuda_time(lambda: dst.copy_(src))


def measure() -> list[tuple[str, float, str, bool | None, str]]:
    """Every GPU comparison: rows ``(what, value, goal, passed, detail)``."""
    import torch
    import torch.nn.functional as F

    from i2f_fast import InversionJacobian, cg, invert, use_backend
    from i2f_fast.backend import unavailable_reason
    from i2f_fast.data import digits
    from i2f_fast.models import lenet
    from i2f_fast.ops import attack_step, cg_step, grad_match

    dev = torch.device("cuda")
    backends = [b for b in ("native", "triton", "reference") if unavailable_reason(b, dev) is None]
    rows = []
    bw = copy_bandwidth()
    rows.append(("device-to-device copy bandwidth (GB/s)", bw / 1e9, "-", None, "2^30 bytes, read + write"))

    # cg_step at B·D = 2^24: 10 array passes of 4-byte floats (bench_cg_step.ARRAY_PASSES)
    B, D = 16, 1 << 20
    g = torch.Generator(device=dev).manual_seed(0)
    x, r, p = (torch.randn(B, D, device=dev, generator=g) for _ in range(3))
    Ap = p * (0.5 + torch.rand(B, D, device=dev, generator=g))
    rr, active = (r * r).sum(1), torch.ones(B, dtype=torch.bool, device=dev)
    snapshot = [t.clone() for t in (x, r, p)]

    def cg_call(backend):
        def run():
            for t, s in zip((x, r, p), snapshot):
                t.copy_(s)
            with use_backend(backend):
                cg_step(x, r, p, Ap, rr, active)
        return run

    restore = _cuda_time(lambda: [t.copy_(s) for t, s in zip((x, r, p), snapshot)])
    times = _interleaved({b: cg_call(b) for b in backends})
    for b in backends:
        net = times[b] - restore
        frac = 10 * B * D * 4 / net / bw
        goal = b == "native"
        rows.append((f"cg_step {b}, B·D = 2^24, fraction of copy bandwidth", frac,
                     f">= {GOAL_CG_BANDWIDTH}" if goal else "-", frac >= GOAL_CG_BANDWIDTH if goal else None,
                     f"{net * 1e6:.0f} us (restore of x, r, p subtracted)"))

    # one CG iteration with graph replay at B·D = 2^20 (diagonal matvec: one more kernel)
    b2 = torch.randn(4, 1 << 18, device=dev, generator=g)
    diag = 1 + torch.rand(4, 1 << 18, device=dev, generator=g)
    iters = 400
    for graphed in (True, False):
        seconds = _cuda_time(lambda: cg(lambda v: diag * v, b2, tol=1e-30, max_iter=iters, check_every=10,
                                        cuda_graph=graphed), reps=3, warmup=1)
        per = seconds / iters * 1e6
        rows.append((f"CG iteration at B·D = 2^20, {'graph replay' if graphed else 'eager'} (us)", per,
                     f"<= {GOAL_CG_ITERATION_US}" if graphed else "-", per <= GOAL_CG_ITERATION_US if graphed else None,
                     "matvec = diagonal scaling, host check every 10 iterations"))

    # grad_match + attack_step at P = 10^7
    P = 10_000_000
    trial, target = torch.randn(1, P, device=dev, generator=g), torch.randn(P, device=dev, generator=g)
    xs, gx = torch.randn(1, P, device=dev, generator=g), torch.randn(1, P, device=dev, generator=g)
    m, v = torch.zeros_like(xs), torch.zeros_like(xs)
    lower, upper = torch.full((P,), -2.0, device=dev), torch.full((P,), 2.0, device=dev)
    lr, bc1, bc2 = (torch.tensor(c, device=dev) for c in (0.1, 0.5, 0.01))

    def fused(backend):
        def run():
            with use_backend(backend):
                grad_match(trial, target, "cosine")
                attack_step(xs, gx, m, v, lr, bc1, bc2, signed=True, lower=lower, upper=upper)
        return run

    # bytes: grad_match reads trial, target twice, writes grad; attack_step reads x, g, m, v, lower,
    # upper and writes x, m, v
    traffic = (5 + 9) * P * 4
    times = _interleaved({b: fused(b) for b in backends})
    for b in backends:
        frac = traffic / times[b] / bw
        goal = b == "native"
        rows.append((f"grad_match + attack_step {b}, P = 10^7, fraction of copy bandwidth", frac,
                     f">= {GOAL_ATTACK_BANDWIDTH}" if goal else "-", frac >= GOAL_ATTACK_BANDWIDTH if goal else None,
                     f"{times[b] * 1e6:.0f} us; reference / this = {times.get('reference', float('nan')) / times[b]:.2f}"))

    # LeNet attack, batch 1: graph replay vs the eager reference loop
    batch = digits(n=1)
    model = lenet(generator=torch.Generator().manual_seed(0)).eval().to(dev)
    xi, y = batch.images.to(dev), batch.labels.to(dev)
    grads = torch.autograd.grad(F.cross_entropy(model(xi), y), list(model.parameters()))
    bounds = tuple(t.to(dev) for t in batch.pixel_bounds)
    init = torch.randn(1, *xi.shape, device=dev, generator=g)
    n = 300

    def attack(backend, graphed):
        return lambda: invert(model, grads, y, xi.shape, iterations=n, init=init, bounds=bounds, progress=False,
                              backend=backend, cuda_graph=graphed)

    t_graph = _cuda_time(attack("auto", True), reps=3, warmup=1)
    t_ref = _cuda_time(attack("reference", False), reps=3, warmup=1)
    t_eager = _cuda_time(attack("auto", False), reps=3, warmup=1)
    rows.append(("LeNet GS attack iteration: eager reference loop / graph replay", t_ref / t_graph,
                 f">= {GOAL_GRAPH_SPEEDUP}", t_ref / t_graph >= GOAL_GRAPH_SPEEDUP,
                 f"graph {t_graph / n * 1e6:.0f} us/it, eager fused {t_eager / n * 1e6:.0f} us/it, "
                 f"eager reference {t_ref / n * 1e6:.0f} us/it ({n} iterations, set-up included)"))

    # JᵀJ v: InversionJacobian vs torch.func (jvp of the parameter gradient, then its vjp)
    from torch.func import functional_call, jvp, vjp

    jac = InversionJacobian(model, xi, y)
    vec = torch.randn_like(xi)
    params = {k: p.detach() for k, p in model.named_parameters()}

    def flat_grad(xx):
        gp = torch.func.grad(lambda pp: F.cross_entropy(functional_call(model, pp, (xx,)), y))(params)
        return torch.cat([t.reshape(-1) for t in gp.values()])

    def func_gram():
        _, jv = jvp(flat_grad, (xi,), (vec,))
        return vjp(flat_grad, xi)[1](jv)[0]

    torch.testing.assert_close(jac.gram(vec), func_gram(), rtol=1e-3, atol=1e-5)
    times = _interleaved({"ours": lambda: jac.gram(vec), "func": func_gram})
    rows.append(("JᵀJv LeNet: torch.func composition / InversionJacobian.gram", times["func"] / times["ours"], "-",
                 None, f"{times['ours'] * 1e6:.0f} us vs {times['func'] * 1e6:.0f} us"))

    # The structured engine's whole product replayed as one CUDA graph vs eager double backward
    from i2f_fast.cuda_graphs import GraphedStep

    engine = InversionJacobian(model, xi, y, strategy="engine")
    autograd = InversionJacobian(model, xi, y, strategy="double_backward")
    out = torch.empty_like(vec)
    graphed = GraphedStep(lambda: out.copy_(engine.gram(vec)), "engine JᵀJv", vec.device)
    for _ in range(graphed.warmup + 1):
        graphed()
    torch.testing.assert_close(out, autograd.gram(vec), rtol=1e-3, atol=1e-5)
    times = _interleaved({"graph": graphed, "eager": lambda: autograd.gram(vec), "engine eager": lambda: engine.gram(vec)})
    speedup = times["eager"] / times["graph"]
    rows.append(("JᵀJv LeNet N=1: eager double-backward / engine graph replay", speedup, f">= {GOAL_ENGINE_GRAPH}",
                 speedup >= GOAL_ENGINE_GRAPH and graphed.graph is not None,
                 f"graph {times['graph'] * 1e6:.0f} us, engine eager {times['engine eager'] * 1e6:.0f} us, "
                 f"double-backward {times['eager'] * 1e6:.0f} us; "
                 f"{'captured' if graphed.graph is not None else 'NOT captured: ' + str(graphed.fallback_reason)}"))
    return rows


def print_measurements(rows) -> None:
    import torch

    print(f"\n== GPU suite measurements on {torch.cuda.get_device_name()} "
          f"(torch {torch.__version__}, CUDA {torch.version.cuda}) ==")
    width = max(len(r[0]) for r in rows)
    print(f"{'comparison'.ljust(width)}  {'value':>9}  {'goal':<8}  result  detail")
    for what, value, goal, passed, detail in rows:
        result = "info" if passed is None else ("PASS" if passed else "FAIL")
        print(f"{what.ljust(width)}  {value:9.3f}  {goal:<8}  {result:<6}  {detail}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.measure:
        import torch

        if not torch.cuda.is_available():
            print("gpu_suite --measure needs a CUDA device", file=sys.stderr)
            return 2
        print_measurements(measure())
        return 0
    return run_steps(args)


if __name__ == "__main__":
    sys.exit(main())
