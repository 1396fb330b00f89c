"""The structured JᵀJ engine against cached double-backward (issue 6 targets), 1 and 2 threads.

Candidate: ``InversionJacobian(..., strategy="engine").gram`` (the library default where the
engine applies). Baseline: ``InversionJacobian(..., strategy="double_backward").gram``, whose
first-order graph is built once and reused (the fastest pure-autograd single product). Each uses
its own autotuned CPU convolution kernels. G = one gradient evaluation
(``torch.autograd.grad(loss, params)``, PyTorch defaults). Every product is checked against the
baseline before timing.

Rows:
  * MLP 784-512-256-10 (tanh, N = 1): speed-up >= 3.5 and cost <= 0.8 G;
  * MLP 300-200-120-7 (tanh, N = 1): speed-up (informative: fixed per-op cost dominates);
  * LeNet 1×28×28 (the paper's, sigmoid, N = 1): speed-up >= 1.2;
  * CIFAR ResNet18 in eval mode (N = 1): speed-up >= 1 (no slower);
  * LeNet, k = 16 tangents in one product: cost per tangent <= 0.7 G;
  * LeNet per-sample mode, N = 16: time / one batched product of the 16 samples <= 2.

Run: ``python benchmarks/bench_engine.py [--quick] [--no-csv]``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import common  # noqa: E402
from i2f_fast import InversionJacobian, models  # noqa: E402

TANGENTS = 16
SAMPLES = 16


def _mlp(widths, classes):
    model = models.mlp((widths[0],), classes, widths[1:], "tanh", init="xavier",
                       generator=torch.Generator().manual_seed(0)).eval()
    x = torch.randn(1, widths[0], generator=torch.Generator().manual_seed(1))
    return model, x, torch.tensor([3])


def _resnet18():
    model = models.resnet18(generator=torch.Generator().manual_seed(0)).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return model, x, torch.tensor([3])


def _gradient(model, x, y):
    params = list(model.parameters())
    return lambda: torch.autograd.grad(F.cross_entropy(model(x), y), params)


def _checked(candidate, baseline, v, what):
    got, want = candidate.gram(v), baseline.gram(v)
    err = ((got - want).norm() / want.norm()).item()
    assert err < 1e-4, f"{what}: engine JᵀJv differs from double-backward by {err:.2e}"


def main(quick: bool = False, write_csv: bool = True) -> list[common.Row]:
    kw = dict(rounds=5 if quick else 11, min_round_s=0.005 if quick else 0.02)
    problems = {
        "MLP 784-512-256-10": _mlp((784, 512, 256), 10),
        "MLP 300-200-120-7": _mlp((300, 200, 120), 7),
        "LeNet 1x28x28": common.lenet_problem(1),
        "ResNet18 3x32x32": _resnet18(),
    }
    goals = {"MLP 784-512-256-10": 3.5, "LeNet 1x28x28": 1.2, "ResNet18 3x32x32": 1.0}
    rows: list[common.Row] = []
    with common.threads(1):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for name, (model, x, y) in problems.items():
                engine = InversionJacobian(model, x, y, strategy="engine")
                baseline = InversionJacobian(model, x, y, strategy="double_backward")
                v = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
                _checked(engine, baseline, v, name)
                c = common.compare(lambda: engine.gram(v), lambda: baseline.gram(v), **kw)
                rows.append(common.at_least(f"{name}: double-backward / engine JᵀJv", c, goals.get(name),
                                            f"engine {common.fmt_time(c.candidate_s)}, "
                                            f"double-backward {common.fmt_time(c.baseline_s)}"))
                if name == "MLP 784-512-256-10":
                    g = common.compare(lambda: engine.gram(v), _gradient(model, x, y), **kw)
                    cost = 1 / g.ratio
                    rows.append(common.Row(f"{name}: engine JᵀJv cost in G", cost, "<= 0.8", bool(cost <= 0.8),
                                           f"G {common.fmt_time(g.baseline_s)}" + common.noise_note(g),
                                           g.candidate_s, g.baseline_s, g.threads))

            model, x, y = problems["LeNet 1x28x28"]
            engine = InversionJacobian(model, x, y, strategy="engine")
            vk = torch.randn(TANGENTS, *x.shape, generator=torch.Generator().manual_seed(3))
            g = common.compare(lambda: engine.gram(vk), _gradient(model, x, y), **kw)
            cost = 1 / g.ratio / TANGENTS
            rows.append(common.Row(f"LeNet k={TANGENTS}: engine JᵀJv cost per tangent in G", cost, "<= 0.7",
                                   bool(cost <= 0.7), f"product {common.fmt_time(g.candidate_s)}, "
                                   f"G {common.fmt_time(g.baseline_s)}" + common.noise_note(g),
                                   g.candidate_s, g.baseline_s, g.threads))

            model, xs, ys = common.lenet_problem(SAMPLES)
            per_sample = InversionJacobian(model, xs, ys, strategy="engine", per_sample=True)
            batched = InversionJacobian(model, xs, ys, strategy="engine")
            vs = torch.randn(xs.shape, generator=torch.Generator().manual_seed(4))
            c = common.compare(lambda: per_sample.gram(vs), lambda: batched.gram(vs), **kw)
            ratio = 1 / c.ratio
            rows.append(common.Row(f"LeNet N={SAMPLES}: per-sample / batched engine JᵀJv time", ratio, "<= 2",
                                   bool(ratio <= 2), f"per-sample {common.fmt_time(c.candidate_s)}, batched "
                                   f"{common.fmt_time(c.baseline_s)}" + common.noise_note(c),
                                   c.candidate_s, c.baseline_s, c.threads))
    return common.report("bench_engine", "Structured JᵀJ engine vs cached double-backward", rows, write_csv)


if __name__ == "__main__":
    args = common.standard_args(__doc__.splitlines()[0]).parse_args()
    main(quick=args.quick, write_csv=not args.no_csv)
