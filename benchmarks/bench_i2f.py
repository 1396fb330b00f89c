"""I²F at ε = 1 on one sample: i2f_fast vs the paper's ``compute_exact_bound``, LeNet and an MLP.

Candidate: ``InversionInfluence(model, x, y).i2f(delta, 1.0)`` — construction (the forward and
first-order graph) is inside the timed call, it is part of the cost.
Baseline: ``paper_baselines.compute_exact_bound`` — a faithful re-implementation of the published
solver (fixed-step GD in x-space, b₀ ~ N(0, I), lr 0.01, ≤ 2000 iterations, stop at
‖grad‖ < 9e-5, three fresh forward + double-backward products per iteration, one of them only for
logging with a ``.item()`` per parameter tensor).

δ ~ N(0, 1e-4·I) in parameter space. Accuracy is measured against a float64 reference: for LeNet a
dense solve ``(JᵀJ + I) b = Jᵀδ`` with J built by ``torch.func.jacfwd`` in float64 (independent of
the library's operators); for the 784-512-256-10 tanh MLP (J has 4·10⁸ entries) float64 CG to 1e-13
on cached double-backward products. Goals, at equal or better accuracy (relative error of ‖b‖):
ratio >= 300 for LeNet and >= 1000 for the MLP (the structured engine's targets).

The baseline takes seconds per call, so it gets fewer timed rounds (3 by default, spread over the
candidate's 11 rounds, still interleaved); its correctness run doubles as its warm-up.

Run: ``python benchmarks/bench_i2f.py [--quick] [--threads N] [--no-csv]``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
import paper_baselines  # noqa: E402
from i2f_fast import InversionInfluence  # noqa: E402
from i2f_fast.operators import unflatten_tensors  # noqa: E402

EPS = 1.0
SIGMA = 1e-2  # δ ~ N(0, σ² I), σ² = 1e-4


def _mlp_problem(n: int = 1, dtype: torch.dtype = torch.float32):
    """784-512-256-10 tanh MLP (Xavier init, seeded) on ``n`` digits samples (1×28×28)."""
    from i2f_fast.models import mlp

    _, x, y = common.lenet_problem(n, dtype)
    model = mlp(tuple(x.shape[1:]), 10, (512, 256), "tanh", init="xavier", generator=torch.Generator().manual_seed(0))
    return model.eval().to(dtype), x, y


def _dense_reference(model64, x64, y, d64):
    """``b = (JᵀJ + εI)⁻¹ Jᵀδ`` by a dense solve on J from ``jacfwd`` (independent of the library)."""
    J = common.dense_jacobian(model64, x64, y)  # (P, D)
    A = J.T @ J + EPS * torch.eye(J.shape[1], dtype=torch.float64)
    return torch.linalg.solve(A, J.T @ d64)


def _autograd_reference(model64, x64, y, d64):
    """The same ``b`` by float64 CG to 1e-13 on cached double-backward products (J too large to form)."""
    return InversionInfluence(model64, x64, y, strategy="double_backward").i2f(d64, EPS, tol=1e-13).shift.reshape(-1)


PROBLEMS = {  # name → (problem builder, float64 reference, goal)
    "LeNet": (common.lenet_problem, _dense_reference, 300.0),
    "MLP 784-512-256-10": (_mlp_problem, _autograd_reference, 1000.0),
}


def _bench(name, build, reference, goal, rounds, baseline_rounds) -> common.Row:
    model, x, y = build(1)
    P = sum(p.numel() for p in model.parameters())
    delta = SIGMA * torch.randn(P, generator=torch.Generator().manual_seed(2))
    noise = unflatten_tensors(delta, [p.shape for p in model.parameters()])

    m64, x64, _ = build(1, torch.float64)
    d64 = delta.double()
    b_ref = reference(m64, x64, y, d64)
    ref = b_ref.norm().item()
    cg64 = InversionInfluence(m64, x64, y).i2f(d64, EPS, tol=1e-13)
    err64 = abs(cg64.value.item() - ref) / ref
    assert err64 < 1e-10, f"{name}: float64 CG and the reference disagree: {err64:.2e}"

    # ---- correctness of both methods (float32) against the reference
    ours = InversionInfluence(model, x, y)
    calls = [0]
    gram = ours.jacobian.gram

    def counting_gram(v):
        calls[0] += 1
        return gram(v)

    ours.jacobian.gram = counting_gram
    res = ours.i2f(delta, EPS)
    err_ours = abs(res.value.item() - ref) / ref
    shift_err = ((res.shift.reshape(-1).double() - b_ref).norm() / b_ref.norm()).item()
    assert err_ours < 1e-4, f"{name}: i2f_fast I²F is off the float64 reference by {err_ours:.2e}"

    def baseline():
        img = x.clone()
        return paper_baselines.compute_exact_bound(
            model, img, y, noise, EPS, generator=torch.Generator().manual_seed(3)
        )

    b_gd, gd_iters = baseline()  # correctness run; also the baseline's warm-up
    err_gd = abs(b_gd.norm().item() - ref) / ref
    gd_shift_err = ((b_gd.reshape(-1).double() - b_ref).norm() / b_ref.norm()).item()
    print(f"[{name}] float64 reference ‖b‖ = {ref:.10g} ({reference.__name__.strip('_').replace('_', ' ')}; "
          f"float64 CG agrees to {err64:.1e})")
    print(f"[{name}] i2f_fast  : ‖b‖ rel. err {err_ours:.2e}, ‖b − b_ref‖/‖b_ref‖ {shift_err:.2e}, "
          f"{int(res.iterations)} CG iterations, {calls[0]} JᵀJv products (incl. residual check), "
          f"product engine: {'structured' if ours.jacobian.engine is not None else 'autograd'}")
    print(f"[{name}] paper GD  : ‖b‖ rel. err {err_gd:.2e}, ‖b − b_ref‖/‖b_ref‖ {gd_shift_err:.2e}, "
          f"{gd_iters} iterations (3 products each)")
    assert gd_iters < 2000, f"{name}: the paper's GD did not reach its stopping rule"
    assert err_gd < 5e-2, f"{name}: the paper's GD is off the reference by {err_gd:.2e}"

    def candidate():
        return InversionInfluence(model, x, y).i2f(delta, EPS).value

    c = common.compare(candidate, baseline, rounds=rounds, baseline_rounds=baseline_rounds, baseline_warmup=0)
    print(f"[{name}] timing: {c.describe()}")
    return common.at_least(
        f"I²F eps=1 {name}: InversionInfluence+i2f vs paper GD (compute_exact_bound)", c, goal,
        f"ours {common.fmt_time(c.candidate_s)} ({int(res.iterations)} CG it, err {err_ours:.1e}); "
        f"GD {common.fmt_time(c.baseline_s)} ({gd_iters} it, err {err_gd:.1e}); baseline {c.baseline_rounds} rounds",
        extra_ok=err_ours <= err_gd,
    )


def main(quick: bool = False, write_csv: bool = True, threads: int = 1) -> list[common.Row]:
    rounds, baseline_rounds = (5, 1) if quick else (11, 3)
    with common.threads(threads):
        rows = [_bench(name, *spec, rounds, baseline_rounds) for name, spec in PROBLEMS.items()]
    return common.report("bench_i2f", "I²F (eps=1, one sample) vs the paper's GD solver", rows, write_csv)


if __name__ == "__main__":
    parser = common.add_threads_arg(common.standard_args(__doc__.splitlines()[0]))
    args = parser.parse_args()
    main(quick=args.quick, write_csv=not args.no_csv, threads=args.threads)
