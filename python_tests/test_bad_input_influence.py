"""Bad input to i2f_fast.influence (InversionInfluence and the functional API): a clean error naming
the argument, never a silent result; the caller's model and tensors are never modified."""
import pytest
import torch
import torch.nn as nn

import i2f_fast
from bad_input import assert_unchanged, bn_model, check_clean_error, snapshot
from conftest import make_problem
from i2f_fast import InversionInfluence

MODEL, X, Y = make_problem("cnn", 2)
INF = InversionInfluence(MODEL, X, Y)
PS = InversionInfluence(MODEL, X, Y, per_sample=True)
P = INF.jacobian.num_params
DELTA = torch.randn(P, dtype=torch.float64)
WEIGHTS = [p.detach() for p in MODEL.parameters()]
transposed = [WEIGHTS[0].reshape(3, 9).T.reshape(9, 3)] + [w.clone() for w in WEIGHTS[1:]]  # right count, wrong shape


def i2f(**kw):
    args = dict(model=MODEL, x=X, y=Y, delta=DELTA)
    args.update(kw)
    return lambda: i2f_fast.i2f(args.pop("model"), args.pop("x"), args.pop("y"), args.pop("delta"), **args)


CASES = [
    # model, x, y
    pytest.param(i2f(model="lenet"), "model", id="model-not-module"),
    pytest.param(i2f(model=nn.Sequential(nn.Flatten(), nn.Linear(64, 4)).double().requires_grad_(False)), "model", id="model-frozen"),
    pytest.param(i2f(model=make_problem("cnn", 1, torch.float16)[0]), "model", id="model-half"),
    pytest.param(i2f(x=X.long()), "x", id="x-int"),
    pytest.param(i2f(x=X.half()), "x", id="x-half"),
    pytest.param(i2f(x=X.bfloat16()), "x", id="x-bfloat16"),
    pytest.param(i2f(x=X.float()), "x", id="x-float32-model-float64"),
    pytest.param(i2f(x=X.clone().fill_(float("nan"))), "x", id="x-nan"),
    pytest.param(i2f(x=X.clone().fill_(float("inf"))), "x", id="x-inf"),
    pytest.param(i2f(x=X[0, 0, 0]), "x", id="x-no-batch-dim"),
    pytest.param(i2f(x=torch.randn(2, 3, 8, 8, dtype=torch.float64)), "x", id="x-wrong-channels"),
    pytest.param(i2f(x=torch.randn(2, 1, 5, 5, dtype=torch.float64)), "x", id="x-wrong-size"),
    pytest.param(i2f(x=[[1.0]]), "x", id="x-list"),
    pytest.param(i2f(y=Y.double()), "y", id="y-float"),
    pytest.param(i2f(y=torch.tensor([0.7, 1.0])), "y", id="y-fraction"),
    pytest.param(i2f(y=Y[:1]), "y", id="y-count"),
    pytest.param(i2f(y=torch.tensor([0, 4])), "y", id="y-out-of-range"),
    pytest.param(i2f(y=torch.tensor([-1, 0])), "y", id="y-negative"),
    pytest.param(i2f(y=torch.tensor([True, False])), "y", id="y-bool"),
    pytest.param(i2f(y="cat"), "y", id="y-string"),
    pytest.param(i2f(per_sample="no"), "per_sample", id="per_sample-string"),
    pytest.param(i2f(per_sample=1), "per_sample", id="per_sample-int"),
    pytest.param(i2f(strategy="fast"), "strategy", id="strategy-unknown"),
    pytest.param(i2f(loss_fn="mse"), "loss_fn", id="loss_fn-not-callable"),
    pytest.param(i2f(model=bn_model(), x=torch.randn(2, 1, 6, 6, dtype=torch.float64), delta=torch.zeros(sum(
        p.numel() for p in bn_model().parameters()), dtype=torch.float64), per_sample=True), "BatchNorm", id="per_sample-train-batchnorm"),
    # delta
    pytest.param(lambda: INF.i2f(transposed), "delta[0]", id="delta-transposed-weight"),
    pytest.param(lambda: INF.lower_bound(transposed), "delta[0]", id="delta-transposed-weight-lower-bound"),
    pytest.param(lambda: INF.i2f(WEIGHTS[:-1]), "delta", id="delta-list-count"),
    pytest.param(lambda: INF.i2f([w.tolist() for w in WEIGHTS]), "delta[0]", id="delta-list-of-lists"),
    pytest.param(lambda: INF.i2f([w.long() for w in WEIGHTS]), "delta[0]", id="delta-list-int"),
    pytest.param(lambda: INF.i2f(DELTA[:-1]), "delta", id="delta-short"),
    pytest.param(lambda: INF.i2f(DELTA.reshape(1, 1, P)), "delta", id="delta-extra-dims"),
    pytest.param(lambda: INF.i2f(DELTA.long()), "delta", id="delta-int"),
    pytest.param(lambda: INF.i2f(DELTA.half()), "delta", id="delta-half"),
    pytest.param(lambda: INF.i2f(torch.full((P,), float("nan"), dtype=torch.float64)), "delta", id="delta-nan"),
    pytest.param(lambda: INF.i2f(torch.full((P,), float("inf"), dtype=torch.float64)), "delta", id="delta-inf"),
    pytest.param(lambda: INF.i2f("noise"), "delta", id="delta-string"),
    pytest.param(lambda: INF.i2f(None), "delta", id="delta-none"),
    pytest.param(lambda: PS.i2f(torch.zeros(3, P, dtype=torch.float64)), "delta", id="per-sample-delta-wrong-N"),
    pytest.param(lambda: PS.i2f(torch.zeros(2, 3, P, dtype=torch.float64)), "delta", id="per-sample-delta-K-wrong-N"),
    # eps, method
    pytest.param(lambda: INF.i2f(DELTA, -1.0), "eps", id="eps-negative"),
    pytest.param(lambda: INF.i2f(DELTA, float("nan")), "eps", id="eps-nan"),
    pytest.param(lambda: INF.i2f(DELTA, float("inf")), "eps", id="eps-inf"),
    pytest.param(lambda: INF.i2f(DELTA, "1"), "eps", id="eps-string"),
    pytest.param(lambda: INF.i2f(DELTA, True), "eps", id="eps-bool"),
    pytest.param(lambda: INF.i2f(DELTA, method="lu"), "method", id="method-unknown"),
    pytest.param(lambda: INF.lower_bound(DELTA, method="qr"), "method", id="lower-bound-method-unknown"),
    pytest.param(lambda: INF.max_eigenvalue(method="qr"), "method", id="max-eigenvalue-method-unknown"),
    pytest.param(lambda: INF.top_eigenpairs(0), "k", id="top-eigenpairs-k-0"),
    pytest.param(lambda: INF.top_eigenpairs(10_000), "k", id="top-eigenpairs-k-too-large"),
    pytest.param(lambda: INF.expected_i2f_sq(-1.0), "sigma", id="sigma-negative"),
    pytest.param(lambda: INF.expected_i2f_sq(float("nan")), "sigma", id="sigma-nan"),
    pytest.param(lambda: INF.expected_i2f_sq(1.0, -1.0), "eps", id="expected-eps-negative"),
    pytest.param(lambda: INF.expected_i2f_sq(1.0, method="hutchinson", num_probes=1), "num_probes", id="num_probes-1"),
    pytest.param(lambda: INF.expected_i2f_sq(1.0, method="exact"), "method", id="expected-method-unknown"),
    pytest.param(lambda: INF.i2f(DELTA, eps=1.0, eps_rel=1e-6), "eps_rel", id="eps-and-eps_rel"),
    pytest.param(lambda: INF.i2f(DELTA, eps_rel=0.0), "eps_rel", id="eps_rel-zero"),
    pytest.param(lambda: INF.i2f(DELTA, eps_rel="small"), "eps_rel", id="eps_rel-string"),
    pytest.param(lambda: INF.i2f(DELTA, objective="l1"), "objective", id="objective-unknown"),
    pytest.param(lambda: INF.i2f(DELTA, layer_weights=[1.0]), "layer_weights", id="layer_weights-count"),
    pytest.param(lambda: INF.i2f(DELTA, layer_weights=[1.0] * 5 + [-1.0]), "layer_weights", id="layer_weights-negative"),
    pytest.param(lambda: INF.i2f(DELTA, layer_weights=[0.0] * 6), "layer_weights", id="layer_weights-all-zero"),
    pytest.param(lambda: INF.i2f(DELTA, tol=-1.0), "tol", id="tol-negative"),
    pytest.param(lambda: INF.i2f(DELTA, max_iter=0), "max_iter", id="max_iter-0"),
    pytest.param(lambda: INF.top_eigenpairs(1.5), "k", id="top-eigenpairs-k-float"),
    pytest.param(lambda: INF.top_eigenpairs(True), "k", id="top-eigenpairs-k-bool"),
    pytest.param(lambda: INF.expected_i2f_sq("a"), "sigma", id="sigma-string"),
    pytest.param(lambda: INF.expected_i2f_sq(float("inf")), "sigma", id="sigma-inf"),
    pytest.param(lambda: INF.expected_i2f_sq(1.0, method="hutchinson", num_probes=2.5), "num_probes", id="num_probes-float"),
    pytest.param(lambda: INF.i2f(DELTA, tol="a"), "tol", id="tol-string"),
    pytest.param(lambda: INF.i2f(DELTA, max_iter=2.5), "max_iter", id="max_iter-float"),
    pytest.param(lambda: InversionInfluence(MODEL, X, Y, generator="g").max_eigenvalue(), "generator", id="generator-string"),
]


@pytest.mark.parametrize("call, argument", CASES)
def test_bad_input_gets_a_clean_error_naming_the_argument(call, argument):
    check_clean_error(call, argument)


@pytest.mark.parametrize("per_sample", [False, True])
def test_the_callers_model_and_tensors_are_not_modified(per_sample):
    model = bn_model() if not per_sample else bn_model().eval()
    x, y = torch.randn(3, 1, 6, 6, dtype=torch.float64).requires_grad_(True), torch.tensor([0, 1, 2])
    delta = [torch.randn_like(p) for p in model.parameters()]
    before = snapshot(model, x, y, *delta)
    inf = InversionInfluence(model, x, y, per_sample=per_sample)
    inf.i2f(delta)
    inf.lower_bound(delta)
    inf.top_eigenpairs(2)
    assert_unchanged(before, model, x, y, *delta)
