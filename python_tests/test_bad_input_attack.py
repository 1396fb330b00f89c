"""Bad input to i2f_fast.attack (invert, infer_labels): a clean error naming the argument, never a silent
result; the caller's model and tensors are never modified."""
import pytest
import torch
import torch.nn.functional as F

from bad_input import assert_unchanged, bn_model, check_clean_error, snapshot
from conftest import make_problem
from i2f_fast.attack import infer_labels, invert

MODEL, X, Y = make_problem("cnn", 1)
PARAMS = list(MODEL.parameters())
GRADS = [g.detach() for g in torch.autograd.grad(F.cross_entropy(MODEL(X), Y), PARAMS)]
FLAT = torch.cat([g.reshape(-1) for g in GRADS])
SHAPE = tuple(X.shape)


def attack(**kw):
    args = dict(model=MODEL, target_grads=GRADS, labels=Y, shape=SHAPE, iterations=2, progress=False)
    args.update(kw)
    return lambda: invert(**args)


transposed = [g.T.contiguous() if g.dim() == 2 else g for g in GRADS]
CASES = [
    pytest.param(attack(model="lenet"), "model", id="model-string"),
    pytest.param(attack(model=bn_model(), target_grads=[torch.zeros_like(p) for p in bn_model().parameters()],
                        shape=(1, 1, 6, 6)), "model", id="model-train-batchnorm"),
    pytest.param(attack(target_grads=transposed), "target_grads[4]", id="target-transposed"),
    pytest.param(attack(target_grads=GRADS[:-1]), "target_grads", id="target-count"),
    pytest.param(attack(target_grads=FLAT[1:]), "target_grads", id="target-length"),
    pytest.param(attack(target_grads=FLAT.long()), "target_grads", id="target-int"),
    pytest.param(attack(target_grads=FLAT.half()), "target_grads", id="target-half"),
    pytest.param(attack(target_grads=FLAT.clone().fill_(float("nan"))), "target_grads", id="target-nan"),
    pytest.param(attack(target_grads=[g.numpy() for g in GRADS]), "target_grads[0]", id="target-numpy"),
    pytest.param(attack(target_grads=None), "target_grads", id="target-none"),
    pytest.param(attack(labels=torch.tensor([0.7])), "labels", id="labels-fraction"),
    pytest.param(attack(labels=torch.tensor([1.0])), "labels", id="labels-float"),
    pytest.param(attack(labels=0.7), "labels", id="labels-python-float"),
    pytest.param(attack(labels=torch.tensor([4])), "labels", id="labels-out-of-range"),
    pytest.param(attack(labels=torch.tensor([0, 1])), "labels", id="labels-count"),
    pytest.param(attack(labels="cat"), "labels", id="labels-string"),
    pytest.param(attack(shape=(1, 3, 8, 8)), "shape", id="shape-channels"),
    pytest.param(attack(shape=(1, 64)), "shape", id="shape-flat"),
    pytest.param(attack(shape=(0, 1, 8, 8)), "shape", id="shape-zero"),
    pytest.param(attack(shape=(1, 1, 8.0, 8)), "shape", id="shape-float"),
    pytest.param(attack(shape=(8,)), "shape", id="shape-no-batch"),
    pytest.param(attack(shape="1x1x8x8"), "shape", id="shape-string"),
    pytest.param(attack(attack="dlg2"), "attack", id="attack-unknown"),
    pytest.param(attack(init="uniform"), "init", id="init-unknown"),
    pytest.param(attack(init=torch.zeros(2, *SHAPE, dtype=torch.float64)), "init", id="init-restarts"),
    pytest.param(attack(init=torch.full((1, *SHAPE), float("nan"), dtype=torch.float64)), "init", id="init-nan"),
    pytest.param(attack(init=torch.zeros(1, *SHAPE, dtype=torch.int64)), "init", id="init-int"),
    pytest.param(attack(optimizer="sgd"), "optimizer", id="optimizer-unknown"),
    pytest.param(attack(iterations=0), "iterations", id="iterations-0"),
    pytest.param(attack(iterations=2.5), "iterations", id="iterations-float"),
    pytest.param(attack(iterations=True), "iterations", id="iterations-bool"),
    pytest.param(attack(restarts=0), "restarts", id="restarts-0"),
    pytest.param(attack(restarts="2"), "restarts", id="restarts-string"),
    pytest.param(attack(history_every=0), "history_every", id="history_every-0"),
    pytest.param(attack(tv=-1.0), "tv", id="tv-negative"),
    pytest.param(attack(tv=float("nan")), "tv", id="tv-nan"),
    pytest.param(attack(lr=0.0), "lr", id="lr-zero"),
    pytest.param(attack(lr=float("inf")), "lr", id="lr-inf"),
    pytest.param(attack(lr="0.1"), "lr", id="lr-string"),
    pytest.param(attack(signed="yes"), "signed", id="signed-string"),
    pytest.param(attack(decay="no"), "decay", id="decay-string"),
    pytest.param(attack(progress="no"), "progress", id="progress-string"),
    pytest.param(attack(onednn=1), "onednn", id="onednn-int"),
    pytest.param(attack(cuda_graph="auto"), "cuda_graph", id="cuda_graph-string"),
    pytest.param(attack(bounds=(0.0,)), "bounds", id="bounds-one"),
    pytest.param(attack(bounds=(1.0, 0.0)), "bounds", id="bounds-reversed"),
    pytest.param(attack(bounds=(float("nan"), 1.0)), "bounds[0]", id="bounds-nan"),
    pytest.param(attack(bounds=(torch.zeros(3, 1, 1), torch.ones(3, 1, 1))), "bounds", id="bounds-channels"),
    pytest.param(attack(bounds=(torch.zeros(2, 1, 1, 1, 1), torch.ones(1))), "bounds", id="bounds-enlarge-batch"),
    pytest.param(attack(bounds=("a", "b")), "bounds[0]", id="bounds-strings"),
    pytest.param(attack(layer_weights=[1.0, 1.0]), "layer_weights", id="layer_weights-count"),
    pytest.param(attack(layer_weights=[1.0, -1.0, 1.0, 1.0, 1.0, 1.0]), "layer_weights[1]", id="layer_weights-negative"),
    pytest.param(attack(layer_weights=[0.0] * 6), "layer_weights", id="layer_weights-all-zero"),
    pytest.param(attack(layer_weights="equal"), "layer_weights", id="layer_weights-string"),
    pytest.param(attack(layers=[7]), "layers[0]", id="layers-out-of-range"),
    pytest.param(attack(layers=[1.0]), "layers[0]", id="layers-float"),
    pytest.param(attack(layers=[]), "layers", id="layers-empty"),
    pytest.param(attack(loss_fn="ce"), "loss_fn", id="loss_fn-string"),
    pytest.param(attack(generator=0), "generator", id="generator-int"),
    pytest.param(attack(backend="gpu"), "backend", id="backend-unknown"),
    pytest.param(attack(optimizer="lbfgs", attack="gs"), "lbfgs", id="lbfgs-with-signed-steps"),
    pytest.param(attack(labels=None, label_strategy="magic"), "strategy", id="label_strategy-unknown"),
    pytest.param(lambda: infer_labels(MODEL, GRADS, 0), "num_samples", id="infer-num_samples-0"),
    pytest.param(lambda: infer_labels(MODEL, GRADS, 2, "idlg"), "iDLG", id="infer-idlg-batch"),
    pytest.param(lambda: infer_labels(MODEL, GRADS, 5), "num_samples", id="infer-more-than-classes"),
    pytest.param(lambda: infer_labels(MODEL, transposed, 1), "target_grads[4]", id="infer-transposed"),
    pytest.param(lambda: infer_labels(None, GRADS, 1), "model", id="infer-model-none"),
]
if not torch.cuda.is_available():
    CASES.append(pytest.param(attack(cuda_graph=True), "cuda_graph", id="cuda_graph-on-cpu"))


@pytest.mark.parametrize("call, argument", CASES)
def test_bad_input_gets_a_clean_error_naming_the_argument(call, argument):
    check_clean_error(call, argument)


def test_the_callers_model_and_tensors_are_not_modified():
    model = bn_model().eval()
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    grads = [g.detach() for g in torch.autograd.grad(F.cross_entropy(model(x), torch.tensor([1])), list(model.parameters()))]
    labels, init = torch.tensor([1]), torch.zeros(2, 1, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    bounds = (torch.full((1, 1, 1), -2.0), torch.full((1, 1, 1), 2.0))
    before = snapshot(model, labels, init, *grads, *bounds)
    invert(model, grads, labels, (1, 1, 6, 6), iterations=3, restarts=2, init=init, bounds=bounds, progress=False, tv=0.1)
    assert_unchanged(before, model, labels, init, *grads, *bounds)
