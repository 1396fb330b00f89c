"""The engine's per-sample gradients (per-sample mode) against torch.func in float64."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from i2f_fast.engine import StructuredJacobian
from i2f_fast.testing import assert_close

from engine_models import ENGINE_MODELS, engine_problem


def per_sample_gradients(model, x, y, loss_fn=F.cross_entropy):
    """``(N, *θ_i)`` per parameter: each sample's gradient of its own loss (a batch of one)."""
    params = {k: p.detach() for k, p in model.named_parameters()}

    def one(x_n, y_n):
        return grad(lambda p: loss_fn(functional_call(model, p, (x_n.unsqueeze(0),)), y_n.unsqueeze(0)))(params)

    return list(vmap(one)(x, y).values())


@pytest.mark.parametrize("name", list(ENGINE_MODELS))
def test_per_sample_gradients_match_torch_func(name):
    model, x, y = engine_problem(name, 3)
    engine = StructuredJacobian(model, x, y, list(model.parameters()), per_sample=True)
    expected = per_sample_gradients(model, x, y)
    assert len(engine.gradient) == len(expected)
    for got, want in zip(engine.gradient, expected):
        assert got.shape == want.shape
        assert_close(got, want, scale=want.abs().max().item())


def test_per_sample_gradients_follow_set_primal_and_sum_shared_weights():
    torch.manual_seed(0)
    layer = nn.Linear(4, 4).double()
    model = nn.Sequential(layer, nn.Tanh(), layer, nn.Sigmoid(), nn.Linear(4, 3).double()).eval()
    x, y = torch.randn(2, 4, dtype=torch.float64), torch.tensor([0, 2])
    engine = StructuredJacobian(model, x, y, list(model.parameters()), per_sample=True)
    moved = torch.randn_like(x)
    engine.set_primal(moved)
    for got, want in zip(engine.gradient, per_sample_gradients(model, moved, y)):
        assert_close(got, want, scale=want.abs().max().item())
