"""Cost of one JᵀJ v product relative to one gradient evaluation G, per product strategy.

Model: the paper's LeNet (17,038 parameters, sigmoid, U(-0.5, 0.5) init) on one 1×28×28 digits
sample. G = forward + backward w.r.t. the parameters (``torch.autograd.grad(loss, params)``) with
PyTorch's default settings. The product is ``InversionJacobian(...).gram(v)`` on a graph built
once (construction, including any kernel autotuning, not timed).

Rows, each at 1 and 2 threads:
  * ``gram/G`` with the library defaults (strategy ``auto``, CPU convolution kernels as the
    library picks them) against G with PyTorch's defaults: goal <= 2.5;
  * ``gram/G`` for every strategy (informative) and ``func/double_backward`` = time of the ``func``
    product over the ``double_backward`` one (> 1: double_backward is faster for one tangent);
  * the cost per tangent of one batched product on ``k = 16`` tangents, per strategy (documents
    why ``auto`` sends batched tangents to the ``func`` closures);
  * the same ``gram/G`` ratios with oneDNN forced on and forced off for BOTH G
    (``torch.backends.mkldnn.flags(enabled=...)``) and the product (``InversionJacobian(...,
    onednn=...)`` where the library has that option, else the same flags context around
    construction and product), and the speed-ups ``oneDNN on / off`` of G and of the product
    (> 1: disabling oneDNN is faster).

Run: ``python benchmarks/bench_products.py [--quick] [--no-csv]``.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import common  # noqa: E402
from i2f_fast import InversionJacobian  # noqa: E402
from i2f_fast.operators import DEFAULT_STRATEGY as DEFAULT  # noqa: E402
from i2f_fast.operators import STRATEGIES  # noqa: E402

GOAL_GRAM_OVER_G = 2.5
BATCH = 16


def onednn(enabled: bool):
    return torch.backends.mkldnn.flags(enabled=enabled)


def reference_gram(model, x, y, v):
    """JᵀJ v by two fresh double-backward passes (independent of the library)."""
    params = list(model.parameters())
    xg = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(xg), y)
    gx = torch.autograd.grad(loss, xg, create_graph=True)[0]
    jv = torch.autograd.grad((gx * v).sum(), params)  # J v (θ-space)
    xg = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(xg), y)
    gp = torch.autograd.grad(loss, params, create_graph=True)
    return torch.autograd.grad(sum((g * u).sum() for g, u in zip(gp, jv)), xg)[0]  # Jᵀ(J v)


def build(model, x, y, strategy, kernels):
    """``InversionJacobian`` with ``kernels`` = None (library default), True / False (oneDNN on / off)."""
    with contextlib.nullcontext() if kernels is None else onednn(kernels):
        return InversionJacobian(model, x, y, strategy=strategy, onednn=kernels)


def main(quick: bool = False, write_csv: bool = True) -> list[common.Row]:
    rounds = 5 if quick else 11
    min_round_s = 0.005 if quick else 0.02
    model, x, y = common.lenet_problem(1)
    params = list(model.parameters())
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    vk = torch.randn(BATCH, *x.shape, generator=torch.Generator().manual_seed(2))

    def gradient():
        loss = F.cross_entropy(model(x), y)
        return torch.autograd.grad(loss, params)

    def in_ctx(kernels, fn):
        if kernels is None:
            return fn

        def run():
            with onednn(kernels):
                return fn()
        return run

    ref = reference_gram(model, x, y, v)
    rows: list[common.Row] = []
    tags = {None: "library default", True: "oneDNN on", False: "oneDNN off"}
    with common.threads(1):  # restores the caller's thread count at the end
        for threads in (1, 2):
            torch.set_num_threads(threads)
            # ---- correctness first: every strategy and kernel choice against the reference
            ops = {}
            for kernels in (None, True, False):
                for s in STRATEGIES:
                    ops[s, kernels] = J = build(model, x, y, s, kernels)
                    out = in_ctx(kernels, lambda: J.gram(v))()
                    err = ((out - ref).norm() / ref.norm()).item()
                    assert err < 1e-4, f"gram({s}, {tags[kernels]}) differs from the reference: rel. err {err:.2e}"
            picked = getattr(ops[DEFAULT, None], "onednn", None)
            print(f"[{threads} thread(s)] correctness: gram of every strategy, every kernel choice, matches a "
                  f"fresh double-backward JᵀJv (rel. err < 1e-4); P = {ops[DEFAULT, None].num_params}; "
                  f"library kernel choice: {'n/a' if picked is None else ('oneDNN' if picked else 'native')}")

            def gram_fn(s, kernels):
                J = ops[s, kernels]
                return in_ctx(kernels, lambda: J.gram(v))

            kw = dict(rounds=rounds, min_round_s=min_round_s)
            for kernels in (None, True, False):
                tag = tags[kernels]
                G = in_ctx(kernels, gradient)
                for s in STRATEGIES:
                    c = common.compare(gram_fn(s, kernels), G, **kw)  # ratio = G / gram
                    cost = 1 / c.ratio
                    is_goal = s == DEFAULT and kernels is None
                    rows.append(common.Row(
                        f"gram/G {s} [{tag}]", cost,
                        f"<= {GOAL_GRAM_OVER_G:g}" if is_goal else None,
                        bool(cost <= GOAL_GRAM_OVER_G) if is_goal else None,
                        f"gram {common.fmt_time(c.candidate_s)}, G {common.fmt_time(c.baseline_s)}"
                        + common.noise_note(c),
                        c.candidate_s, c.baseline_s, c.threads,
                    ))
                c = common.compare(gram_fn("double_backward", kernels), gram_fn("func", kernels), **kw)
                rows.append(common.Row(
                    f"func/double_backward gram time [{tag}]", c.ratio, None, None,
                    f"{'double_backward' if c.ratio > 1 else 'func'} is faster; db {common.fmt_time(c.candidate_s)}, "
                    f"func {common.fmt_time(c.baseline_s)}" + common.noise_note(c),
                    c.candidate_s, c.baseline_s, c.threads,
                ))
            # batched products: cost per tangent of one product on BATCH tangents (library kernels)
            G = in_ctx(None, gradient)
            for s in STRATEGIES:
                J = ops[s, None]
                c = common.compare(lambda J=J: J.gram(vk), G, **kw)
                cost = 1 / c.ratio / BATCH
                rows.append(common.Row(
                    f"gram/G per tangent, k={BATCH} batched, {s}", cost, None, None,
                    f"batched gram {common.fmt_time(c.candidate_s)}, G {common.fmt_time(c.baseline_s)}"
                    + common.noise_note(c),
                    c.candidate_s, c.baseline_s, c.threads,
                ))
            # oneDNN off (candidate) vs on (baseline), for G and for the default-strategy product
            c = common.compare(in_ctx(False, gradient), in_ctx(True, gradient), **kw)
            rows.append(common.Row(
                "G speed-up oneDNN off vs on", c.ratio, None, None,
                f"off {common.fmt_time(c.candidate_s)}, on {common.fmt_time(c.baseline_s)}" + common.noise_note(c),
                c.candidate_s, c.baseline_s, c.threads,
            ))
            c = common.compare(gram_fn(DEFAULT, False), gram_fn(DEFAULT, True), **kw)
            rows.append(common.Row(
                f"gram ({DEFAULT}) speed-up oneDNN off vs on", c.ratio, None, None,
                f"off {common.fmt_time(c.candidate_s)}, on {common.fmt_time(c.baseline_s)}" + common.noise_note(c),
                c.candidate_s, c.baseline_s, c.threads,
            ))
    return common.report("bench_products", "JᵀJv product cost vs one gradient G (LeNet, 1 sample)", rows, write_csv)


if __name__ == "__main__":
    args = common.standard_args(__doc__.splitlines()[0]).parse_args()
    main(quick=args.quick, write_csv=not args.no_csv)
