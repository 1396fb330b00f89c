"""The structured JᵀJ engine against the dense float64 Jacobian and against autograd."""
import functools
import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, jacfwd, jacrev
from torch.nn.attention import SDPBackend, sdpa_kernel

from i2f_fast import InversionJacobian, models
from i2f_fast.engine import EngineUnsupported, StructuredJacobian
from i2f_fast.operators import flatten_tensors, unflatten_tensors
from i2f_fast.reference.dual_act import ACTIVATIONS
from i2f_fast.reference.grad_match import grad_match_ref
from i2f_fast.testing import assert_close

from engine_models import ENGINE_MODELS, engine_problem, mlp


def dense_jacobian(model, x, y, loss_fn=F.cross_entropy, jacobian=jacfwd):
    """Dense J = ∂(∇_θ L)/∂x, (P, D), by forward-over-reverse (D ≤ 200 columns here) or ``jacrev``."""
    params = {k: p.detach() for k, p in model.named_parameters()}

    def flat_grad(xx):
        g = torch.func.grad(lambda p: loss_fn(functional_call(model, p, (xx,)), y))(params)
        return torch.cat([g[k].reshape(-1) for k in params])

    with sdpa_kernel(SDPBackend.MATH):  # the flash attention kernel has no forward-mode derivative
        return jacobian(flat_grad)(x).reshape(-1, x.numel())


@functools.lru_cache(maxsize=None)
def problem_and_jacobian(name, n):
    model, x, y = engine_problem(name, n)
    return model, x, y, dense_jacobian(model, x, y)


def check_products(engine, J, x, k, per_sample=False):
    """Engine J v, Jᵀ u, JᵀJ v against dense Jacobians (one per sample in per-sample mode)."""
    shapes = engine.param_shapes
    v = torch.randn(k, *x.shape, dtype=x.dtype)
    Js = J if per_sample else [J]
    u = torch.randn(k, *((x.shape[0],) if per_sample else ()), Js[0].shape[0], dtype=x.dtype)
    jv = flatten_tensors(engine.jvp(v), 2 if per_sample else 1)
    jtu = engine.vjp(unflatten_tensors(u, shapes))
    gram = engine.gram(v)
    assert jv.shape == u.shape and jtu.shape == v.shape and gram.shape == v.shape
    for n, Jn in enumerate(Js):
        pick = (lambda t: t[:, n]) if per_sample else (lambda t: t)
        flat = lambda t: pick(t).reshape(k, -1)  # noqa: E731
        s = Jn.abs().max().item()
        assert_close(pick(jv), flat(v) @ Jn.T, scale=s)
        assert_close(flat(jtu), pick(u) @ Jn, scale=s)
        assert_close(flat(gram), flat(v) @ Jn.T @ Jn, scale=s * s)


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("name", list(ENGINE_MODELS))
def test_products_match_dense_jacobian(name, n, k):
    model, x, y, J = problem_and_jacobian(name, n)
    engine = StructuredJacobian(model, x, y, list(model.parameters()))
    check_products(engine, J, x, k)


@pytest.mark.parametrize("name", list(ENGINE_MODELS))
def test_per_sample_products_match_per_sample_jacobians(name):
    model, x, y = engine_problem(name, 3)
    Js = [dense_jacobian(model, x[n : n + 1], y[n : n + 1]) for n in range(3)]
    engine = StructuredJacobian(model, x, y, list(model.parameters()), per_sample=True)
    check_products(engine, Js, x, 2, per_sample=True)


class FunctionalActivations(nn.Module):
    """Activations called as functions (torch.*, F.*, tensor methods), with their extra arguments."""

    def __init__(self, act):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 6), nn.Linear(6, 3)
        self.act = act

    def forward(self, x):
        h = self.fc1(x)
        h = {"sigmoid": torch.sigmoid, "tanh": lambda t: t.tanh(), "relu": F.relu,
             "leaky_relu": lambda t: F.leaky_relu(t, 0.3), "elu": lambda t: F.elu(t, alpha=0.7),
             "gelu": F.gelu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"), "silu": F.silu,
             "softplus": lambda t: F.softplus(t, beta=2.0, threshold=1.5)}[self.act](h)
        return self.fc2(h)


ACTIVATION_MODULES = {
    "sigmoid": nn.Sigmoid(), "tanh": nn.Tanh(), "relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(0.2),
    "elu": nn.ELU(1.3), "gelu": nn.GELU(), "gelu_tanh": nn.GELU(approximate="tanh"), "silu": nn.SiLU(),
    "softplus": nn.Softplus(beta=1.5, threshold=2.0),
}


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_mlp_with_each_activation_as_module_and_as_function(act):
    x = 2 * torch.randn(3, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    for model in (mlp(ACTIVATION_MODULES[act]), FunctionalActivations(act).double()):
        engine = StructuredJacobian(model, x, y, list(model.parameters()))
        assert sum("ActivationRule" in s for s in engine.nodes_summary) >= 1, engine.nodes_summary
        check_products(engine, dense_jacobian(model, x, y), x, 2)


def test_cifar_resnet18_in_eval_mode_matches_autograd():
    model = models.resnet18(generator=torch.Generator().manual_seed(0)).double()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    y = torch.tensor([3])
    engine = InversionJacobian(model, x, y, strategy="engine", onednn=True)  # onednn: skip the kernel autotune
    autograd = InversionJacobian(model, x, y, strategy="double_backward", onednn=True)
    v = torch.randn(2, *x.shape, dtype=x.dtype)
    u = torch.randn(2, engine.num_params, dtype=x.dtype)
    for got, want in ((engine.jvp(v), autograd.jvp(v)), (engine.vjp(u), autograd.vjp(u)),
                      (engine.gram(v), autograd.gram(v))):
        assert_close(got, want, scale=want.abs().max().item())
    assert_close(engine.gradient, autograd.gradient, scale=autograd.gradient.abs().max().item())


def test_attack_direction_is_the_transpose_product_of_the_matching_gradient():
    """The attack's step ∇_x dist(∇_θ L(x'), g) equals Jᵀ w with w = ∂dist/∂g' (the engine's Jᵀ sweep)."""
    model, x, y = engine_problem("lenet", 1)
    params = list(model.parameters())
    target = torch.randn(sum(p.numel() for p in params), dtype=x.dtype)
    engine = StructuredJacobian(model, x, y, params)
    trial = flatten_tensors(engine.gradient)
    _, w = grad_match_ref(trial.unsqueeze(0), target, "cosine")
    step = engine.vjp(unflatten_tensors(w, [p.shape for p in params]))[0]

    xx = x.clone().requires_grad_(True)
    grads = torch.autograd.grad(F.cross_entropy(model(xx), y), params, create_graph=True)
    dist = 1 - F.cosine_similarity(flatten_tensors(grads), target, dim=0)
    (want,) = torch.autograd.grad(dist, xx)
    assert_close(step, want, scale=want.abs().max().item())


def test_shared_weights_are_summed_before_the_gram_contraction():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.head(torch.tanh(self.fc(torch.tanh(self.fc(x)))))

    torch.manual_seed(0)
    model = Tied().double()
    x, y = torch.randn(2, 4, dtype=torch.float64), torch.tensor([0, 1])
    engine = StructuredJacobian(model, x, y, list(model.parameters()))
    assert engine.shared == {0, 1}
    check_products(engine, dense_jacobian(model, x, y), x, 3)


def test_mse_and_custom_losses():
    model = mlp(nn.Tanh())
    x = torch.randn(3, 5, dtype=torch.float64)
    target = torch.randn(3, 3, dtype=torch.float64)

    def smooth_l1(out, t):
        return F.smooth_l1_loss(out, t, beta=0.5)

    for loss_fn in (F.mse_loss, smooth_l1):
        engine = StructuredJacobian(model, x, target, list(model.parameters()), loss_fn)
        assert engine.loss_node.kind == ("mse" if loss_fn is F.mse_loss else "generic")
        check_products(engine, dense_jacobian(model, x, target, loss_fn, jacrev), x, 2)  # jacfwd fails on these losses


def test_float32_products_are_as_accurate_as_autograd_in_float32():
    model, x, y, J = problem_and_jacobian("lenet", 3)
    v = torch.randn(2, *x.shape, dtype=torch.float64)
    want = (v.reshape(2, -1) @ J.T @ J).reshape(v.shape)
    model32 = engine_problem("lenet", 3, torch.float32)[0]
    errors = {}
    for strategy in ("engine", "double_backward"):
        op = InversionJacobian(model32, x.float(), y, strategy=strategy)
        errors[strategy] = (op.gram(v.float()).double() - want).abs().max().item()
    assert errors["engine"] <= 2 * errors["double_backward"] + 1e-7 * want.abs().max().item(), errors


def test_auto_strategy_uses_the_engine_and_matches_double_backward():
    model, x, y = engine_problem("relu_cnn", 2)
    auto = InversionJacobian(model, x, y)
    assert auto.engine is not None and auto.engine_unsupported is None
    reference = InversionJacobian(model, x, y, strategy="double_backward")
    v = torch.randn(x.shape, dtype=x.dtype)
    assert_close(auto.gram(v), reference.gram(v), scale=reference.gram(v).abs().max().item())
    assert_close(auto.loss, reference.loss)


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:  # control flow on the data: fx cannot trace it
            x = -x
        return self.fc(x)


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = self.fc(x)
        return h.mul_(2)


class ClassToken(nn.Module):
    def __init__(self):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, 4))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1)
        return self.fc(t.mean(1))


@pytest.mark.parametrize("model, x, reason", [
    (DataDependent(), torch.randn(2, 4), "cannot trace"),
    (InPlace(), torch.randn(2, 4), "in-place"),
    (ClassToken(), torch.randn(2, 3, 4), "trainable parameters outside a layer"),
    (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).train(), torch.randn(2, 4), "batch statistics"),
    (nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2)).train(), torch.randn(2, 4), "Dropout"),
])
def test_unsupported_models_fall_back_with_the_reason(model, x, reason, caplog):
    model = model.double()
    x = x.double()
    y = torch.tensor([0, 1])
    with pytest.raises(EngineUnsupported, match=reason):
        StructuredJacobian(model, x, y, list(model.parameters()))
    with pytest.raises(ValueError, match=reason):
        InversionJacobian(model, x, y, strategy="engine")
    with caplog.at_level(logging.INFO, logger="i2f_fast"):
        op = InversionJacobian(model, x, y)
    assert op.engine is None and reason in op.engine_unsupported
    assert any(reason in r.getMessage() for r in caplog.records)
    if not model.training:
        v = torch.randn(x.shape, dtype=x.dtype)
        assert_close(op.gram(v), InversionJacobian(model, x, y, strategy="double_backward").gram(v))


def test_batchnorm_in_training_mode_is_not_run_by_the_engine():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double().train()
    x = torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(EngineUnsupported):
        StructuredJacobian(model, x, torch.tensor([0, 1, 0]), list(model.parameters()))
    assert model[1].num_batches_tracked.item() == 0, "the refusal must come before any forward"


def test_set_primal_moves_the_linearisation_point_without_retracing():
    model, x, y = engine_problem("relu_cnn", 2)
    engine = StructuredJacobian(model, x, y, list(model.parameters()))
    nodes = engine.nodes
    x2 = torch.randn(x.shape, dtype=x.dtype)
    engine.set_primal(x2)
    assert engine.nodes is nodes
    fresh = StructuredJacobian(model, x2, y, list(model.parameters()))
    v = torch.randn(2, *x.shape, dtype=x.dtype)
    assert_close(engine.gram(v), fresh.gram(v))
    assert_close(engine.loss, fresh.loss)
    with pytest.raises(ValueError, match="traced shape"):
        engine.set_primal(x2[:1])


class TorchvisionStyleBlock(nn.Module):
    """A torchvision-style residual block: in-place ReLU modules and ``out += identity``."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        out = self.relu(out)
        return self.fc(torch.flatten(out, 1))


def test_in_place_relu_modules_and_augmented_add_are_exact():
    model = TorchvisionStyleBlock().double()
    for bn in (model.bn1, model.bn2):
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.5, 1.5)
    model.eval()
    x, y = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.tensor([0, 1])
    engine = StructuredJacobian(model, x, y, list(model.parameters()))
    assert not any("GenericRule" in s for s in engine.nodes_summary), engine.nodes_summary
    check_products(engine, dense_jacobian(model, x, y), x, 2)
