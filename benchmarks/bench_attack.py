"""Gradient-inversion attack: cost of one iteration, and vectorised restarts vs a loop (LeNet, float32).

(a) One GS iteration of ``i2f_fast.invert`` (R = 1; ``invert`` with ``ITERS`` iterations, set-up and
    the final matching-loss evaluation included, divided by ``ITERS``) vs its irreducible work in
    plain autograd: forward, create-graph backward to the parameters, and the backward of
    ``⟨∇_θL, w⟩`` to x (``ITERS`` times, a fixed ``w``), with the same CPU convolution kernels as
    the attack's autotuned choice. Figure of merit: candidate / baseline time, goal <= 1.3. An
    informative row repeats it against the irreducible work with PyTorch's default kernels.
(b) ``invert(restarts=8)`` vs 8 sequential ``invert(restarts=1)`` calls from the same starting
    points, ``RESTART_ITERS`` = 200 iterations each, set-up included, warm (in this process, after
    a first call of each). Goal >= 3 (issue 14).
(c) The same pair as the first call in a fresh process (``python bench_attack.py --first-call
    MODE`` per round, the two modes alternating): the process's first ``invert`` call(s), set-up,
    torch.fx trace and the convolution-kernel timing included (the Python start and imports are
    not). Goal >= 3 (issue 14).
(d) Informative: one 8-restart step of the attack's objective (trial gradients, ``grad_match``,
    ``Jᵀw``) through the structured engine (per-sample mode, the route ``invert`` takes for R > 1
    on the CPU) vs through ``torch.func`` (``vjp`` of the ``vmap``-ed per-restart gradient, the
    route before), each under its autotuned convolution kernels.

Before timing: (a) the attack's input gradient ``Jᵀw`` (trial gradients → ``grad_match_ref`` →
vjp) equals autograd's double backward to rtol 1e-4, for R = 1 (autograd) and R = 2 (engine and
``torch.func`` routes); (b) the vectorised restarts end where the sequential runs end (rtol 1e-9,
checked in float64: in float32 signed Adam amplifies rounding differences where a gradient entry
is near zero).

Run: ``python benchmarks/bench_attack.py [--quick] [--threads N] [--no-csv]``.
"""
from __future__ import annotations

import copy
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import common  # noqa: E402
from i2f_fast import conv_kernels, invert  # noqa: E402
from i2f_fast.attack import _choose_onednn, _Objective  # noqa: E402
from i2f_fast.data import digits  # noqa: E402
from i2f_fast.reference.grad_match import grad_match_ref  # noqa: E402

ITERS = 50
RESTARTS = 8
RESTART_ITERS = 200
GOAL_STEP = 1.3
GOAL_RESTARTS = 3.0
FIRST_CALL_MODES = ("vectorised", "sequential")


def _problem():
    """LeNet, one digit, its shared gradient, RESTARTS starting points and invert's GS arguments."""
    model, x, y = common.lenet_problem(1)
    params = list(model.parameters())
    target = [g.detach() for g in torch.autograd.grad(F.cross_entropy(model(x), y), params)]
    x0 = torch.randn(RESTARTS, *x.shape, generator=torch.Generator().manual_seed(0))
    kw = dict(attack="gs", bounds=digits(n=1).pixel_bounds, progress=False)
    return model, x, y, target, x0, kw


def _restart_runs(model, x, y, target, x0, kw, iters):
    """``(vectorised, sequential)``: R restarts in one ``invert`` call, or R calls of one restart."""
    kw = dict(kw, iterations=iters, history_every=iters)

    def vectorised():
        return invert(model, target, y, x.shape, restarts=RESTARTS, init=x0, **kw).loss

    def sequential():
        return [invert(model, target, y, x.shape, init=x0[r : r + 1], **kw).loss for r in range(RESTARTS)]

    return vectorised, sequential


def first_call(mode: str, threads: int) -> float:
    """Seconds of this process's first ``invert`` work in ``mode`` (run in a fresh process)."""
    torch.set_num_threads(threads)
    model, x, y, target, x0, kw = _problem()
    run = dict(zip(FIRST_CALL_MODES, _restart_runs(model, x, y, target, x0, kw, RESTART_ITERS)))[mode]
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _first_call_in_fresh_process(mode: str, threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, __file__, "--first-call", mode, "--threads", str(threads)],
                         capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(quick: bool = False, write_csv: bool = True, threads: int = 1) -> list[common.Row]:
    rounds = 5 if quick else 11
    min_round_s = 0.005 if quick else 0.02
    iters = 10 if quick else ITERS
    restart_iters = 50 if quick else RESTART_ITERS
    rows = []
    with common.threads(threads):
        model, x, y, target, x0, kw = _problem()
        params = list(model.parameters())
        target_flat = torch.cat([g.reshape(-1) for g in target])

        # ---- (a) correctness of the composed input gradient, then one iteration vs its irreducible work
        named = list(model.named_parameters())
        objective = _Objective(model, named, y, F.cross_entropy, target_flat, "cosine", None, 0.0)
        func = _Objective(model, named, y, F.cross_entropy, target_flat, "cosine", None, 0.0)
        two = x0[:1].expand(2, *x.shape).clone()
        func._engines[two.shape] = None  # the torch.func route
        gx_one = objective.value_and_grad(x0[:1])[2]  # one restart: plain autograd
        gx_two = objective.value_and_grad(two)[2]  # two: the structured engine, per sample
        gx_func = func.value_and_grad(two)[2]
        assert objective._engines[two.shape] is not None, "the restarts did not take the engine route"
        leaf = x0[0].clone().requires_grad_(True)
        trial = torch.autograd.grad(F.cross_entropy(model(leaf), y), params, create_graph=True)
        trial_flat = torch.cat([g.reshape(-1) for g in trial])
        w = grad_match_ref(trial_flat.detach().unsqueeze(0), target_flat, "cosine")[1][0]
        (gx_ref,) = torch.autograd.grad(trial_flat @ w, leaf)
        err = max(((g - gx_ref).norm() / gx_ref.norm()).item()
                  for g in (gx_one[0], gx_two[0], gx_two[1], gx_func[0], gx_func[1]))
        print(f"(a) attack input gradient (R = 1, R = 2 engine and torch.func) vs autograd double backward: "
              f"max rel. diff {err:.1e}")
        assert err < 1e-4, f"attack gradient differs from autograd: {err:.2e}"
        w_list = [t.reshape(p.shape) for t, p in zip(w.split([p.numel() for p in params]), params)]

        def attack_iterations():
            return invert(model, target, y, x.shape, iterations=iters, init=x0[:1], history_every=iters, **kw).loss

        def irreducible():
            for _ in range(iters):
                xi = x0[0].clone().requires_grad_(True)
                g = torch.autograd.grad(F.cross_entropy(model(xi), y), params, create_graph=True)
                torch.autograd.grad(g, xi, w_list)

        attack_iterations()  # autotunes the attack's convolution kernels
        onednn = _choose_onednn(None, objective, x0[:1], [p.shape for p in params])

        def irreducible_same_kernels():
            with conv_kernels.kernels(onednn):
                irreducible()

        kernels = "oneDNN" if onednn else "native"
        for baseline, label, goal in (
            (irreducible_same_kernels, f"same conv kernels ({kernels})", GOAL_STEP),
            (irreducible, "PyTorch's default conv kernels", None),
        ):
            c = common.compare(baseline, attack_iterations, rounds=rounds, min_round_s=min_round_s,
                               label=f"irreducible work ({label}) as candidate vs {iters} attack iterations as baseline")
            # compare() reports baseline/candidate; here the candidate is the attack: cost = attack / irreducible
            cost = c.baseline_s / c.candidate_s
            rows.append(common.Row(
                f"one GS iteration / (forward + create-graph backward + backward to x), {label}", cost,
                None if goal is None else f"<= {goal:g}", None if goal is None else bool(cost <= goal),
                f"attack {common.fmt_time(c.baseline_s / iters)}/it, irreducible "
                f"{common.fmt_time(c.candidate_s / iters)}/it (invert with {iters} iterations incl. set-up)"
                + common.noise_note(c),
                c.baseline_s, c.candidate_s, c.threads,
            ))

        # ---- (b) R restarts together vs R sequential runs, warm
        model64, target64, x64 = copy.deepcopy(model).double(), [t.double() for t in target], x0.double()
        # the same kernels on both sides: signed Adam amplifies last-bit differences between kernels
        kw64 = dict(kw, bounds=tuple(b.double() for b in kw["bounds"]), onednn=True)
        together = invert(model64, target64, y, x.shape, iterations=ITERS, restarts=RESTARTS, init=x64, **kw64)
        alone = [invert(model64, target64, y, x.shape, iterations=ITERS, init=x64[r : r + 1], **kw64)
                 for r in range(RESTARTS)]
        diff = max(((together.restarts[r] - a.x).norm() / a.x.norm()).item() for r, a in enumerate(alone))
        print(f"(b) {RESTARTS} restarts together vs sequential (float64): max rel. diff of the final iterates {diff:.1e}")
        assert diff < 1e-9, f"vectorised restarts differ from sequential runs: {diff:.2e}"

        vectorised, sequential = _restart_runs(model, x, y, target, x0, kw, restart_iters)
        c = common.compare(vectorised, sequential, rounds=rounds, min_round_s=min_round_s)
        rows.append(common.at_least(
            f"R={RESTARTS} restarts vectorised vs {RESTARTS} sequential invert calls, warm", c, GOAL_RESTARTS,
            f"vectorised {common.fmt_time(c.candidate_s)}, sequential {common.fmt_time(c.baseline_s)} "
            f"({restart_iters} GS iterations each, set-up included)",
        ))

        # ---- (c) the same as the first call in a fresh process, the two modes alternating
        first: dict[str, list[float]] = {mode: [] for mode in FIRST_CALL_MODES}
        for i in range(3 if quick else 5):
            for mode in FIRST_CALL_MODES if i % 2 == 0 else FIRST_CALL_MODES[::-1]:
                first[mode].append(_first_call_in_fresh_process(mode, threads))
        vec_s, seq_s = (statistics.median(first[m]) for m in FIRST_CALL_MODES)
        ratio = seq_s / vec_s
        rows.append(common.Row(
            f"R={RESTARTS} restarts vectorised vs {RESTARTS} sequential invert calls, first call in a fresh process",
            ratio, f">= {GOAL_RESTARTS:g}", bool(ratio >= GOAL_RESTARTS),
            f"vectorised {common.fmt_time(vec_s)}, sequential {common.fmt_time(seq_s)} ({RESTART_ITERS} GS "
            f"iterations each; median of {len(first['vectorised'])} fresh processes per mode)",
            vec_s, seq_s, threads,
        ))

        # ---- (d) one 8-restart step: the structured engine vs torch.func
        func._engines[x0.shape] = None
        objective.value_and_grad(x0)
        assert objective._engines[x0.shape] is not None, "the restarts did not take the engine route"
        shapes = [p.shape for p in params]
        engine_kernels = _choose_onednn(None, objective, x0, shapes)  # invert's choice, timed in (b)
        func_kernels = conv_kernels.autotune(("bench_attack torch.func", tuple(x0.shape), threads),
                                             lambda: func.value_and_grad(x0))

        def engine_step():
            with conv_kernels.kernels(engine_kernels):
                return objective.value_and_grad(x0)

        def func_step():
            with conv_kernels.kernels(func_kernels):
                return func.value_and_grad(x0)

        c = common.compare(engine_step, func_step, rounds=rounds, min_round_s=min_round_s)
        rows.append(common.at_least(
            f"one R={RESTARTS} attack step: structured engine (per sample) vs torch.func (vjp of vmap)", c, None,
            f"engine {common.fmt_time(c.candidate_s)} ({'oneDNN' if engine_kernels else 'native'}), torch.func "
            f"{common.fmt_time(c.baseline_s)} ({'oneDNN' if func_kernels else 'native'})",
        ))
    return common.report("bench_attack", "Gradient-inversion attack (LeNet, one digit, GS)", rows, write_csv)


if __name__ == "__main__":
    parser = common.add_threads_arg(common.standard_args(__doc__.splitlines()[0]))
    parser.add_argument("--first-call", choices=FIRST_CALL_MODES, help="(internal) time one first call and print it")
    args = parser.parse_args()
    if args.first_call:
        print(first_call(args.first_call, args.threads))
    else:
        main(quick=args.quick, write_csv=not args.no_csv, threads=args.threads)
