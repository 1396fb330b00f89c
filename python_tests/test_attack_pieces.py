"""The attack's separable pieces (reference kernels) against autograd / torch.optim in float64."""
import pytest
import torch

from i2f_fast.reference import attack_step_ref, grad_match_ref, tv_ref
from i2f_fast.testing import assert_close


def _autograd_match(trial, target, kind, weights):
    t = trial.clone().requires_grad_(True)
    w = torch.ones_like(target) if weights is None else weights
    if kind == "l2":
        loss = (w * (t - target) ** 2).sum(dim=1)
    else:
        dot = (w * t * target).sum(dim=1)
        loss = 1 - dot / ((w * t * t).sum(dim=1).sqrt() * (w * target * target).sum().sqrt())
    (g,) = torch.autograd.grad(loss.sum(), t)
    return loss.detach(), g


@pytest.mark.parametrize("kind", ["cosine", "l2"])
@pytest.mark.parametrize("weighted", [False, True])
def test_grad_match_matches_autograd(kind, weighted):
    gen = torch.Generator().manual_seed(0)
    trial = torch.randn(5, 37, generator=gen, dtype=torch.float64)
    target = torch.randn(37, generator=gen, dtype=torch.float64)
    weights = torch.rand(37, generator=gen, dtype=torch.float64) if weighted else None
    if weighted:
        weights[:7] = 0  # a dropped layer
    loss, g = grad_match_ref(trial, target, kind, weights)
    ref_loss, ref_g = _autograd_match(trial, target, kind, weights)
    assert loss.shape == (5,) and g.shape == (5, 37)
    assert_close(loss, ref_loss)
    assert_close(g, ref_g)
    if weighted:
        assert (g[:, :7] == 0).all()


def test_grad_match_cosine_values_and_zero_trial():
    target = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    trial = torch.stack([target * 4, -target, torch.zeros(3, dtype=torch.float64)])
    loss, g = grad_match_ref(trial, target, "cosine")
    assert_close(loss, torch.tensor([0.0, 2.0, 1.0], dtype=torch.float64))
    assert torch.isfinite(g).all()
    assert_close(g[0], torch.zeros(3, dtype=torch.float64), scale=1e3)  # a minimum: zero gradient


def test_grad_match_rejects_bad_input():
    with pytest.raises(ValueError, match="kind"):
        grad_match_ref(torch.zeros(1, 3), torch.zeros(3), "l1")
    with pytest.raises(ValueError, match="trial must be"):
        grad_match_ref(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="weights"):
        grad_match_ref(torch.zeros(1, 3), torch.zeros(3), weights=torch.ones(4))


@pytest.mark.parametrize("shape", [(3, 2, 1, 5, 7), (2, 3, 6, 4), (1, 1, 1, 1, 6)])
def test_tv_matches_autograd(shape):
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    value, g = tv_ref(x.detach())

    def tv(t):
        dx = (t[..., :, 1:] - t[..., :, :-1]).abs()
        dy = (t[..., 1:, :] - t[..., :-1, :]).abs()
        dims = tuple(range(t.dim() - 4, t.dim()))
        total = dx.mean(dim=dims) if dx.numel() else 0
        return total + (dy.mean(dim=dims) if dy.numel() else 0)

    ref = tv(x)
    (ref_g,) = torch.autograd.grad(ref.sum(), x)
    assert value.shape == ref.shape
    assert_close(value, ref.detach())
    assert_close(g, ref_g)


def test_tv_rejects_other_ranks():
    with pytest.raises(ValueError, match="x must be"):
        tv_ref(torch.zeros(3, 4, 5))


@pytest.mark.parametrize("signed", [False, True])
def test_attack_step_matches_torch_adam(signed):
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randn(2, 1, 1, 4, 4, generator=gen, dtype=torch.float64)
    grads = [torch.randn(x0.shape, generator=gen, dtype=torch.float64) for _ in range(5)]
    leaf = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([leaf], lr=0.1)
    x, m, v = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0)
    lr = torch.tensor(0.1, dtype=torch.float64)
    for t, g in enumerate(grads, start=1):
        leaf.grad = g.sign() if signed else g.clone()
        opt.step()
        bc1, bc2 = torch.tensor(1 - 0.9**t, dtype=torch.float64), torch.tensor(1 - 0.999**t, dtype=torch.float64)
        attack_step_ref(x, g, m, v, lr, bc1, bc2, signed=signed)
    assert_close(x, leaf.detach())


def test_attack_step_projects_onto_the_box():
    x = torch.zeros(1, 1, 2, 3, 3, dtype=torch.float64)
    g = torch.tensor([-1.0, 1.0], dtype=torch.float64).view(1, 1, 2, 1, 1).expand_as(x).contiguous()
    lower = torch.tensor([-0.05, -0.5], dtype=torch.float64).view(2, 1, 1)
    upper = torch.tensor([0.05, 0.5], dtype=torch.float64).view(2, 1, 1)
    one = torch.tensor(1.0, dtype=torch.float64)
    attack_step_ref(x, g, torch.zeros_like(x), torch.zeros_like(x), torch.tensor(0.1, dtype=torch.float64),
                    one - 0.9, one - 0.999, signed=True, lower=lower, upper=upper)
    assert torch.allclose(x[0, 0, 0], torch.full((3, 3), 0.05, dtype=torch.float64))   # clipped at the upper bound
    assert torch.allclose(x[0, 0, 1], torch.full((3, 3), -0.1, dtype=torch.float64))   # inside: a full lr step
