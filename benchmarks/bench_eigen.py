"""λ_max for LeNet on one sample: i2f_fast vs the paper's ``max_eigen_val`` (ARPACK eigsh).

Candidate: ``InversionInfluence(model, x, y).max_eigenvalue()`` — construction included; Lanczos
on the x-space operator JᵀJ (D = 784) with products on a cached first-order graph.
Baseline: ``paper_baselines.max_eigen_val`` — ``scipy.sparse.linalg.eigsh(LinearOperator((P, P),
matvec=mv), k=1)`` with the defaults (which='LM', ncv=20, tol=0), no dtype (so scipy probes ``mv``
with float64 zeros), and every ``mv`` a numpy → torch → unflatten → two fresh forward + double
backward products → ``torch.cat`` flatten → numpy round trip on the θ-space operator (P = 17,038).

The non-zero spectra of the x-space and θ-space operators coincide, so the two eigenvalues must
agree; both are also compared with a float64 dense reference (``eigvalsh`` of JᵀJ from jacfwd).
Goal: ratio >= 5.

Run: ``python benchmarks/bench_eigen.py [--quick] [--threads N] [--no-csv]``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import common  # noqa: E402
import paper_baselines  # noqa: E402
from i2f_fast import InversionInfluence  # noqa: E402

GOAL = 5.0


def main(quick: bool = False, write_csv: bool = True, threads: int = 1) -> list[common.Row]:
    rounds = 5 if quick else 11
    with common.threads(threads):
        model, x, y = common.lenet_problem(1)

        m64, x64, _ = common.lenet_problem(1, torch.float64)
        J = common.dense_jacobian(m64, x64, y)
        lam_ref = torch.linalg.eigvalsh(J.T @ J)[-1].item()
        del J

        # a fixed numpy seed makes ARPACK's random start vector (and its matvec count) repeatable
        np.random.seed(0)
        lam_paper, mv_calls = paper_baselines.max_eigen_val(model, x, y)
        lam_paper = float(lam_paper[0])
        inf = InversionInfluence(model, x, y, generator=torch.Generator().manual_seed(0))
        calls = [0]
        gram = inf.jacobian.gram

        def counting_gram(v):
            calls[0] += 1
            return gram(v)

        inf.jacobian.gram = counting_gram
        lam_ours = inf.max_eigenvalue().item()
        rel = abs(lam_ours - lam_paper) / abs(lam_paper)
        err_ours = abs(lam_ours - lam_ref) / lam_ref
        err_paper = abs(lam_paper - lam_ref) / lam_ref
        print(f"λ_max: float64 dense reference {lam_ref:.8g}")
        print(f"       i2f_fast {lam_ours:.8g} (rel. err {err_ours:.1e}, {calls[0]} Lanczos matvecs)")
        print(f"       paper eigsh {lam_paper:.8g} (rel. err {err_paper:.1e}, {mv_calls} mv calls incl. the dtype probe)")
        print(f"       relative difference ours vs paper: {rel:.1e}")
        assert rel < 1e-4, f"λ_max of i2f_fast and of the paper's eigsh differ by {rel:.2e}"
        assert err_ours < 1e-4, f"i2f_fast λ_max off the float64 reference by {err_ours:.2e}"

        def candidate():
            return InversionInfluence(model, x, y, generator=torch.Generator().manual_seed(0)).max_eigenvalue()

        def baseline():
            return paper_baselines.max_eigen_val(model, x, y)[0]

        c = common.compare(candidate, baseline, rounds=rounds, baseline_warmup=0)
        print(f"timing: {c.describe()}")
        row = common.at_least(
            "lambda_max LeNet: InversionInfluence+max_eigenvalue vs paper eigsh", c, GOAL,
            f"ours {common.fmt_time(c.candidate_s)}, eigsh {common.fmt_time(c.baseline_s)}; "
            f"λ {lam_ours:.6g} vs {lam_paper:.6g} (rel. diff {rel:.1e}, ref {lam_ref:.6g})",
        )
    return common.report("bench_eigen", "lambda_max (LeNet, 1 sample) vs the paper's eigsh", [row], write_csv)


if __name__ == "__main__":
    parser = common.add_threads_arg(common.standard_args(__doc__.splitlines()[0]))
    args = parser.parse_args()
    main(quick=args.quick, write_csv=not args.no_csv, threads=args.threads)
