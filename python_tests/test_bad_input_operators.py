"""Bad input to i2f_fast.operators.InversionJacobian: a clean error naming the argument, never a silent
result or an error from inside F.linear / conv2d; the caller's model and tensors are never modified."""
import pytest
import torch
import torch.nn as nn

from bad_input import assert_unchanged, bn_model, check_clean_error, snapshot
from conftest import make_problem
from i2f_fast import InversionJacobian

MODEL, X, Y = make_problem("cnn", 2)
OP = InversionJacobian(MODEL, X, Y)
PS = InversionJacobian(MODEL, X, Y, per_sample=True)
P = OP.num_params
WEIGHTS = [torch.randn_like(p) for p in MODEL.parameters()]


def build(**kw):
    args = dict(model=MODEL, x=X, y=Y)
    args.update(kw)
    return lambda: InversionJacobian(args.pop("model"), args.pop("x"), args.pop("y"), **args)


CASES = [
    pytest.param(build(model=None), "model", id="model-none"),
    pytest.param(build(model=nn.Sequential(nn.Flatten(), nn.Linear(64, 4).bfloat16())), "model", id="model-bfloat16"),
    pytest.param(build(model=nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Linear(8, 4).double())), "model", id="model-mixed-dtypes"),
    pytest.param(build(x=X.half()), "x", id="x-half"),
    pytest.param(build(x=X.float()), "x", id="x-dtype-mismatch"),
    pytest.param(build(x=X.reshape(2, 64)), "x", id="x-flat-for-a-cnn"),
    pytest.param(build(x=torch.randn(2, 2, 8, 8, dtype=torch.float64)), "x", id="x-wrong-channels"),
    pytest.param(build(x=X.clone().index_fill_(0, torch.tensor([1]), float("nan"))), "x", id="x-nan"),
    pytest.param(build(y=Y.float()), "y", id="y-float"),
    pytest.param(build(y=Y.reshape(2, 1)), "y", id="y-2d"),
    pytest.param(build(y=torch.tensor([0, 9])), "y", id="y-out-of-range"),
    pytest.param(build(per_sample="yes"), "per_sample", id="per_sample-string"),
    pytest.param(build(per_sample=None), "per_sample", id="per_sample-none"),
    pytest.param(build(strategy="engine2"), "strategy", id="strategy-unknown"),
    pytest.param(build(onednn="yes"), "onednn", id="onednn-string"),
    pytest.param(build(loss_fn=3), "loss_fn", id="loss_fn-not-callable"),
    pytest.param(build(model=bn_model(), x=torch.randn(2, 1, 6, 6, dtype=torch.float64), per_sample=True), "BatchNorm",
                 id="per_sample-train-batchnorm"),
    pytest.param(build(model=bn_model(), x=torch.randn(2, 1, 6, 6, dtype=torch.float64), strategy="func"), "strategy",
                 id="func-train-batchnorm"),
    # tangents
    pytest.param(lambda: OP.jvp(torch.zeros(0, *X.shape, dtype=torch.float64)), "v", id="jvp-k-0"),
    pytest.param(lambda: OP.gram(torch.zeros(0, *X.shape, dtype=torch.float64)), "v", id="gram-k-0"),
    pytest.param(lambda: OP.jvp(X[0]), "v", id="jvp-one-sample"),
    pytest.param(lambda: OP.jvp(X.long()), "v", id="jvp-int"),
    pytest.param(lambda: OP.jvp(X.half()), "v", id="jvp-half"),
    pytest.param(lambda: OP.gram(X.tolist()), "v", id="gram-list"),
    pytest.param(lambda: OP.vjp(torch.zeros(0, P, dtype=torch.float64)), "u", id="vjp-k-0"),
    pytest.param(lambda: OP.vjp(torch.zeros(P + 1, dtype=torch.float64)), "u", id="vjp-wrong-P"),
    pytest.param(lambda: OP.vjp([w.T if w.dim() == 2 else w for w in WEIGHTS]), "u[4]", id="vjp-transposed-linear"),
    pytest.param(lambda: OP.vjp(WEIGHTS[:3]), "u", id="vjp-list-count"),
    pytest.param(lambda: OP.vjp([w.float() if i == 1 else w for i, w in enumerate(WEIGHTS)]), "u[1]", id="vjp-list-mixed-dtype"),
    pytest.param(lambda: OP.vjp({"w": WEIGHTS[0]}), "u", id="vjp-dict"),
    pytest.param(lambda: PS.vjp(torch.zeros(P, dtype=torch.float64)), "u", id="per-sample-vjp-missing-N"),
    pytest.param(lambda: OP.flatten([w.T if w.dim() == 2 else w for w in WEIGHTS]), "tensors[4]", id="flatten-transposed"),
]


@pytest.mark.parametrize("call, argument", CASES)
def test_bad_input_gets_a_clean_error_naming_the_argument(call, argument):
    check_clean_error(call, argument)


@pytest.mark.parametrize("strategy", ["auto", "double_backward"])
def test_the_callers_model_and_tensors_are_not_modified(strategy):
    model = bn_model()
    x, y = torch.randn(3, 1, 6, 6, dtype=torch.float64).requires_grad_(True), torch.tensor([0, 1, 2])
    v, u = torch.randn(2, *x.shape, dtype=torch.float64), torch.randn(2, sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    before = snapshot(model, x, y, v, u)
    op = InversionJacobian(model, x, y, strategy=strategy)
    op.jvp(v), op.vjp(u), op.gram(v), op.gram(v[0])
    assert_unchanged(before, model, x, y, v, u)
