"""The attack loop's fused ops (C++/OpenMP) vs the eager torch sequence, and the loop's overhead.

(a) ``grad_match`` + ``attack_step`` at P = 10⁶ (float32): the fused ops (``native`` backend) vs
    the same two steps as their reference torch sequences (``grad_match_ref``, ``attack_step_ref``):
    global cosine over a (1, P) trial gradient, then signed Adam + box on 10⁶ image values.
    Goal >= 1.5. An informative row repeats it for the l2 loss without sign or box.
(b) Per-iteration overhead of the fused attack loop outside the model's forward/backward (LeNet,
    28×28 digit, batch 1, GS, R = 1, the autotuned convolution kernels): one full iteration of the
    loop (trial gradients into the flat buffer, ``grad_match``, ``Jᵀw``, ``attack_step``) vs its
    non-model ops alone (``grad_match`` + ``attack_step`` on the same sizes). Ratio = iteration /
    overhead; the overhead share is 1/ratio, goal <= 5 % (ratio >= 20). An informative row gives
    the same share for the reference loop's sequences.

Before timing, the fused results must match the reference sequences (rtol 1e-5).

Run: ``python benchmarks/bench_fused_attack.py [--quick] [--threads N] [--no-csv]``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import common  # noqa: E402
from i2f_fast import use_backend  # noqa: E402
from i2f_fast.attack import _choose_onednn, _Objective  # noqa: E402
from i2f_fast.backend import unavailable_reason  # noqa: E402
from i2f_fast import conv_kernels  # noqa: E402
from i2f_fast.data import digits  # noqa: E402
from i2f_fast.ops import attack_step, grad_match  # noqa: E402

P = 1_000_000
GOAL_FUSED = 1.5
GOAL_OVERHEAD_RATIO = 20.0  # overhead share <= 5 %


class _Step:
    """One grad_match + attack_step on fixed tensors, on a given backend (Adam state persists: the
    signed step with a box is a stable map, so repeated calls do the same work)."""

    def __init__(self, trial, target, x, gx, kind, signed, box):
        self.trial, self.target, self.x, self.gx, self.kind, self.signed = trial, target, x, gx, kind, signed
        self.m, self.v = torch.zeros_like(x), torch.zeros_like(x)
        self.lr, self.bc1, self.bc2 = (torch.tensor(c) for c in (0.1, 1 - 0.9**5, 1 - 0.999**5))
        self.lower, self.upper = (torch.tensor(-2.0), torch.tensor(2.0)) if box else (None, None)

    def __call__(self, backend):
        with use_backend(backend):
            loss, w = grad_match(self.trial, self.target, self.kind)
            attack_step(self.x, self.gx, self.m, self.v, self.lr, self.bc1, self.bc2, signed=self.signed,
                        lower=self.lower, upper=self.upper)
        return loss, w


def _pair(kind, signed, box, shape_x, P_trial, gen):
    trial = torch.randn(1, P_trial, generator=gen)
    target = torch.randn(P_trial, generator=gen)
    x = torch.randn(shape_x, generator=gen)
    gx = torch.randn(shape_x, generator=gen)
    return [_Step(trial, target, x.clone(), gx, kind, signed, box) for _ in range(2)]


def _check(fused, reference):
    out_f, out_r = fused("native"), reference("reference")
    for a, b in zip((*out_f, fused.x, fused.m, fused.v), (*out_r, reference.x, reference.m, reference.v)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def main(quick: bool = False, write_csv: bool = True, threads: int = 1) -> list[common.Row]:
    why = unavailable_reason("native", torch.device("cpu"))
    if why:
        raise RuntimeError(f"bench_fused_attack needs the C++ extension: {why}")
    rounds = 5 if quick else 11
    min_round_s = 0.005 if quick else 0.02
    rows = []
    gen = torch.Generator().manual_seed(0)
    with common.threads(threads):
        # ---- (a) the two fused ops vs their torch sequences at P = 10⁶
        for kind, signed, box, goal in (("cosine", True, True, GOAL_FUSED), ("l2", False, False, None)):
            fused, reference = _pair(kind, signed, box, (1, 1, 1, 1000, 1000), P, gen)
            _check(fused, reference)
            c = common.compare(lambda: fused("native"), lambda: reference("reference"), rounds=rounds,
                               min_round_s=min_round_s)
            what = "signed Adam + box" if signed else "Adam"
            rows.append(common.at_least(
                f"grad_match ({kind}) + attack_step ({what}), P = 10^6 float32: fused C++ vs torch sequence", c, goal,
                f"fused {common.fmt_time(c.candidate_s)}, torch {common.fmt_time(c.baseline_s)}",
            ))

        # ---- (b) overhead of the fused loop per iteration outside forward/backward (LeNet, GS, R = 1)
        model, x, y = common.lenet_problem(1)
        params = list(model.named_parameters())
        target = torch.cat([g.reshape(-1) for g in torch.autograd.grad(
            F.cross_entropy(model(x), y), [p for _, p in params])])
        objective = _Objective(model, params, y, F.cross_entropy, target, "cosine", None, 0.0)
        xs = torch.randn(1, *x.shape, generator=gen)
        lower, upper = (b.expand(x.shape).contiguous() for b in digits(n=1).pixel_bounds)
        m, v = torch.zeros_like(xs), torch.zeros_like(xs)
        lr, bc1, bc2 = (torch.tensor(c) for c in (0.1, 1 - 0.9**5, 1 - 0.999**5))
        trial = objective.trial_gradients(xs)
        gx_fixed = torch.randn(xs.shape, generator=gen)

        def iteration():
            loss, _, gx = objective.value_and_grad(xs)
            attack_step(xs, gx, m, v, lr, bc1, bc2, signed=True, lower=lower, upper=upper)
            return loss

        def overhead(backend):
            def run():
                with use_backend(backend):
                    grad_match(trial, target, "cosine")
                    attack_step(xs, gx_fixed, m, v, lr, bc1, bc2, signed=True, lower=lower, upper=upper)
            return run

        onednn = _choose_onednn(None, objective, xs, [p.shape for _, p in params])
        with conv_kernels.kernels(onednn):
            for backend, goal in (("native", GOAL_OVERHEAD_RATIO), ("reference", None)):
                def full():
                    with use_backend(backend):
                        return iteration()

                c = common.compare(overhead(backend), full, rounds=rounds, min_round_s=min_round_s)
                rows.append(common.at_least(
                    f"attack iteration / its non-model ops (LeNet, GS, R = 1), {backend} kernels", c, goal,
                    f"overhead share {100 / c.ratio:.1f} % (goal <= {100 / GOAL_OVERHEAD_RATIO:.0f} % for native); "
                    f"iteration {common.fmt_time(c.baseline_s)}, non-model ops {common.fmt_time(c.candidate_s)}",
                ))
    return common.report("bench_fused_attack", "Fused attack ops (C++/OpenMP) vs torch sequences (float32)", rows,
                         write_csv)


if __name__ == "__main__":
    parser = common.add_threads_arg(common.standard_args(__doc__.splitlines()[0]))
    args = parser.parse_args()
    main(quick=args.quick, write_csv=not args.no_csv, threads=args.threads)
