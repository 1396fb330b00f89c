"""Gradient-inversion attack: cost of one iteration, and vectorised restarts vs a loop (LeNet, float32).

(a) One GS iteration of ``i2f_fast.invert`` (R = 1; ``invert`` with ``ITERS`` iterations, set-up and
    the final matching-loss evaluation included, divided by ``ITERS``) vs its irreducible work in
    plain autograd: forward, create-graph backward to the parameters, and the backward of
    ``⟨∇_θL, w⟩`` to x (``ITERS`` times, a fixed ``w``), with the same CPU convolution kernels as
    the attack's autotuned choice. Figure of merit: candidate / baseline time, goal <= 1.3. An
    informative row repeats it against the irreducible work with PyTorch's default kernels.
(b) ``invert(restarts=8)`` vs 8 sequential ``invert(restarts=1)`` calls from the same starting
    points, same iterations. Goal >= 4.

Before timing: (a) the attack's input gradient ``Jᵀw`` (trial gradients → ``grad_match_ref`` →
vjp) equals autograd's double backward to rtol 1e-4; (b) the vectorised restarts end where the
sequential runs end (rtol 1e-9, checked in float64: in float32 signed Adam amplifies rounding
differences where a gradient entry is near zero).

Run: ``python benchmarks/bench_attack.py [--quick] [--threads N] [--no-csv]``.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import common  # noqa: E402
from i2f_fast import conv_kernels, invert  # noqa: E402
from i2f_fast.attack import PRESETS, _Objective  # noqa: E402
from i2f_fast.data import digits  # noqa: E402
from i2f_fast.reference.grad_match import grad_match_ref  # noqa: E402

ITERS = 50
RESTARTS = 8
GOAL_STEP = 1.3
GOAL_RESTARTS = 4.0


def main(quick: bool = False, write_csv: bool = True, threads: int = 1) -> list[common.Row]:
    rounds = 5 if quick else 11
    min_round_s = 0.005 if quick else 0.02
    iters = 10 if quick else ITERS
    rows = []
    with common.threads(threads):
        model, x, y = common.lenet_problem(1)
        params = list(model.parameters())
        bounds = digits(n=1).pixel_bounds
        target = [g.detach() for g in torch.autograd.grad(F.cross_entropy(model(x), y), params)]
        target_flat = torch.cat([g.reshape(-1) for g in target])
        gen = torch.Generator().manual_seed(0)
        x0 = torch.randn(RESTARTS, *x.shape, generator=gen)
        kw = dict(attack="gs", bounds=bounds, progress=False, history_every=iters)

        # ---- (a) correctness of the composed input gradient, then one iteration vs its irreducible work
        named = list(model.named_parameters())
        objective = _Objective(model, named, y, F.cross_entropy, target_flat, "cosine", None, 0.0)
        gx_one = objective.value_and_grad(x0[:1])[2]  # one restart: plain autograd
        gx_two = objective.value_and_grad(x0[:1].expand(2, *x.shape).clone())[2]  # two: torch.func, vmapped
        leaf = x0[0].clone().requires_grad_(True)
        trial = torch.autograd.grad(F.cross_entropy(model(leaf), y), params, create_graph=True)
        trial_flat = torch.cat([g.reshape(-1) for g in trial])
        w = grad_match_ref(trial_flat.detach().unsqueeze(0), target_flat, "cosine")[1][0]
        (gx_ref,) = torch.autograd.grad(trial_flat @ w, leaf)
        err = max(((g - gx_ref).norm() / gx_ref.norm()).item() for g in (gx_one[0], gx_two[0], gx_two[1]))
        print(f"(a) attack input gradient (R = 1 and R = 2 paths) vs autograd double backward: max rel. diff {err:.1e}")
        assert err < 1e-4, f"attack gradient differs from autograd: {err:.2e}"
        w_list = [t.reshape(p.shape) for t, p in zip(w.split([p.numel() for p in params]), params)]

        def attack_iterations():
            return invert(model, target, y, x.shape, iterations=iters, init=x0[:1], **kw).loss

        def irreducible():
            for _ in range(iters):
                xi = x0[0].clone().requires_grad_(True)
                g = torch.autograd.grad(F.cross_entropy(model(xi), y), params, create_graph=True)
                torch.autograd.grad(g, xi, w_list)

        attack_iterations()  # autotunes the attack's convolution kernels
        onednn = next(v for k, v in conv_kernels.CHOICES.items() if k[0] == "invert") if conv_kernels.CHOICES else True

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

        # ---- (b) R restarts together vs R sequential runs
        model64, target64, x64 = copy.deepcopy(model).double(), [t.double() for t in target], x0.double()
        # the same kernels on both sides: signed Adam amplifies last-bit differences between kernels
        kw64 = dict(kw, bounds=tuple(b.double() for b in bounds), onednn=True)
        together = invert(model64, target64, y, x.shape, iterations=iters, restarts=RESTARTS, init=x64, **kw64)
        alone = [invert(model64, target64, y, x.shape, iterations=iters, init=x64[r : r + 1], **kw64)
                 for r in range(RESTARTS)]
        diff = max(((together.restarts[r] - a.x).norm() / a.x.norm()).item() for r, a in enumerate(alone))
        print(f"(b) {RESTARTS} restarts together vs sequential (float64): max rel. diff of the final iterates {diff:.1e}")
        assert diff < 1e-9, f"vectorised restarts differ from sequential runs: {diff:.2e}"

        def vectorised():
            return invert(model, target, y, x.shape, iterations=iters, restarts=RESTARTS, init=x0, **kw).loss

        def sequential():
            return [invert(model, target, y, x.shape, iterations=iters, init=x0[r : r + 1], **kw).loss
                    for r in range(RESTARTS)]

        c = common.compare(vectorised, sequential, rounds=rounds, min_round_s=min_round_s)
        rows.append(common.at_least(
            f"R={RESTARTS} restarts vectorised vs {RESTARTS} sequential invert calls", c, GOAL_RESTARTS,
            f"vectorised {common.fmt_time(c.candidate_s)}, sequential {common.fmt_time(c.baseline_s)} "
            f"({iters} GS iterations each)",
        ))
    return common.report("bench_attack", "Gradient-inversion attack (LeNet, one digit, GS)", rows, write_csv)


if __name__ == "__main__":
    parser = common.add_threads_arg(common.standard_args(__doc__.splitlines()[0]))
    args = parser.parse_args()
    main(quick=args.quick, write_csv=not args.no_csv, threads=args.threads)
