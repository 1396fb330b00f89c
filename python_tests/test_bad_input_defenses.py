"""Bad input to i2f_fast.defenses: a clean error naming the argument, never a silent (or non-finite)
result; the caller's gradient, model and batch are never modified."""
import pytest
import torch

from bad_input import assert_unchanged, bn_model, check_clean_error, snapshot
from conftest import make_problem
from i2f_fast import InversionInfluence, defenses

MODEL, X, Y = make_problem("cnn", 2)
P = sum(p.numel() for p in MODEL.parameters())
G = torch.randn(P, dtype=torch.float64)
LIST = [torch.randn_like(p) for p in MODEL.parameters()]
TRANSPOSED = [t.T.contiguous() if t.dim() == 2 else t for t in LIST]

CASES = [
    pytest.param(lambda: defenses.gaussian(G, -1.0), "var", id="gaussian-var-negative"),
    pytest.param(lambda: defenses.gaussian(G, float("nan")), "var", id="gaussian-var-nan"),
    pytest.param(lambda: defenses.gaussian(G, "1e-3"), "var", id="gaussian-var-string"),
    pytest.param(lambda: defenses.gaussian(G, True), "var", id="gaussian-var-bool"),
    pytest.param(lambda: defenses.gaussian(G.float(), 1e300), "strength", id="gaussian-var-overflows-float32"),
    pytest.param(lambda: defenses.gaussian(G.long(), 1.0), "grads", id="grads-int"),
    pytest.param(lambda: defenses.gaussian(G.half(), 1.0), "grads", id="grads-half"),
    pytest.param(lambda: defenses.gaussian(G.reshape(1, P), 1.0), "grads", id="grads-2d"),
    pytest.param(lambda: defenses.gaussian(torch.full((P,), float("nan")), 1.0), "grads", id="grads-nan"),
    pytest.param(lambda: defenses.gaussian([LIST[0], "x"], 1.0), "grads", id="grads-list-with-string"),
    pytest.param(lambda: defenses.gaussian([LIST[0], LIST[1].float()], 1.0), "grads[1]", id="grads-list-mixed-dtype"),
    pytest.param(lambda: defenses.gaussian([], 1.0), "grads", id="grads-empty-list"),
    pytest.param(lambda: defenses.gaussian("g", 1.0), "grads", id="grads-string"),
    pytest.param(lambda: defenses.gaussian(G, 1.0, generator=1), "generator", id="generator-int"),
    pytest.param(lambda: defenses.laplace(G, -1.0), "scale", id="laplace-scale-negative"),
    pytest.param(lambda: defenses.laplace(G, float("inf")), "scale", id="laplace-scale-inf"),
    pytest.param(lambda: defenses.laplace(G.float(), 1e38), "strength", id="laplace-scale-overflows-float32"),
    pytest.param(lambda: defenses.prune(G, 1.5), "ratio", id="prune-ratio-above-1"),
    pytest.param(lambda: defenses.topk(G, -0.1), "ratio", id="topk-ratio-negative"),
    pytest.param(lambda: defenses.quantize(G, 0), "bits", id="quantize-bits-0"),
    pytest.param(lambda: defenses.quantize(G, 33), "bits", id="quantize-bits-33"),
    pytest.param(lambda: defenses.quantize(G, 2.5), "bits", id="quantize-bits-float"),
    pytest.param(lambda: defenses.dp(G, MODEL, X, Y, 0.0, 1.0), "clip_norm", id="dp-clip-zero"),
    pytest.param(lambda: defenses.dp(G, MODEL, X, Y, 1.0, -1.0), "noise_multiplier", id="dp-noise-negative"),
    pytest.param(lambda: defenses.dp(G[1:], MODEL, X, Y, 1.0, 1.0), "grads", id="dp-grads-length"),
    pytest.param(lambda: defenses.dp(TRANSPOSED, MODEL, X, Y, 1.0, 1.0), "grads[4]", id="dp-grads-transposed"),
    pytest.param(lambda: defenses.dp(G, MODEL, X.reshape(2, 64), Y, 1.0, 1.0), "x", id="dp-x-flat"),
    pytest.param(lambda: defenses.dp(G, MODEL, X.float(), Y, 1.0, 1.0), "x", id="dp-x-dtype"),
    pytest.param(lambda: defenses.dp(G, MODEL, X, Y.float(), 1.0, 1.0), "y", id="dp-y-float"),
    pytest.param(lambda: defenses.dp(G, MODEL, X, Y[:1], 1.0, 1.0), "y", id="dp-y-count"),
    pytest.param(lambda: defenses.dp(G, "model", X, Y, 1.0, 1.0), "model", id="dp-model-string"),
    pytest.param(lambda: defenses.dp(torch.zeros(sum(p.numel() for p in bn_model().parameters()), dtype=torch.float64),
                                     bn_model(), torch.randn(2, 1, 6, 6, dtype=torch.float64), Y, 1.0, 1.0),
                 "BatchNorm", id="dp-train-batchnorm"),
    pytest.param(lambda: defenses.eigen_direction(G, MODEL, X, Y, index=-1), "index", id="eigen-index-negative"),
    pytest.param(lambda: defenses.eigen_direction(G, MODEL, X, Y, index=0.5), "index", id="eigen-index-float"),
    pytest.param(lambda: defenses.eigen_direction(G, MODEL, X, Y, scale=-1.0), "scale", id="eigen-scale-negative"),
    pytest.param(lambda: defenses.eigen_direction(TRANSPOSED, MODEL, X, Y), "grads[4]", id="eigen-grads-transposed"),
    pytest.param(lambda: defenses.eigen_direction(G, MODEL, X, Y, influence="cached"), "influence", id="eigen-influence-string"),
    pytest.param(lambda: defenses.eigen_direction(G, MODEL, X, Y, influence=InversionInfluence(MODEL, X, Y, per_sample=True)),
                 "influence", id="eigen-influence-per-sample"),
    pytest.param(lambda: defenses.compose(G), "compose", id="compose-no-steps"),
    pytest.param(lambda: defenses.compose(G, "prune"), "steps[0]", id="compose-step-string"),
    pytest.param(lambda: defenses.apply_defense("noise", G, 1.0), "defense", id="apply-unknown"),
    pytest.param(lambda: defenses.apply_defense("gaussian", G), "strength", id="apply-missing-strength"),
    pytest.param(lambda: defenses.apply_defense("gaussian", G, "big"), "strength", id="apply-strength-string"),
    pytest.param(lambda: defenses.apply_defense("gaussian", G, float("nan")), "strength", id="apply-strength-nan"),
    pytest.param(lambda: defenses.apply_defense("dp", G, 1.0), "model", id="apply-dp-without-batch"),
]


@pytest.mark.parametrize("call, argument", CASES)
def test_bad_input_gets_a_clean_error_naming_the_argument(call, argument):
    check_clean_error(call, argument)


@pytest.mark.parametrize("seed", range(4))
def test_laplace_is_finite_even_when_the_uniform_draw_hits_its_end(seed, monkeypatch):
    """torch.rand returns exactly 0 with probability 2⁻²⁴ per float32 entry (several per ResNet18
    gradient); force it and check that no entry becomes infinite."""
    real = torch.rand

    def rand_with_ends(*args, **kwargs):
        u = real(*args, **kwargs)
        u[seed::4] = 0.0
        return u

    monkeypatch.setattr(torch, "rand", rand_with_ends)
    res = defenses.laplace(torch.zeros(64), 1.0, generator=torch.Generator().manual_seed(seed))
    assert torch.isfinite(res.grads).all() and torch.isfinite(res.delta).all()
    assert res.delta.abs().max() <= -torch.log(torch.tensor(torch.finfo(torch.float32).eps)) * (1 + 1e-6)


@pytest.mark.parametrize("name", sorted(defenses.DEFENSES))
def test_the_callers_gradient_model_and_batch_are_not_modified(name):
    model = bn_model().eval()
    x, y = torch.randn(2, 1, 6, 6, dtype=torch.float64), torch.tensor([0, 2])
    grads = [torch.randn_like(p) for p in model.parameters()]
    strength = {"quantize": 4, "prune": 0.5, "topk": 0.5}.get(name, 1e-3)
    before = snapshot(model, x, y, *grads)
    options = {"clip_norm": 1.0} if name == "dp" else {}
    res = defenses.apply_defense(name, grads, strength, model=model, x=x, y=y, generator=torch.Generator().manual_seed(0),
                                 **options)
    assert [g.shape for g in res.grads] == [g.shape for g in grads]
    assert_unchanged(before, model, x, y, *grads)
