"""The attack's restarts through the structured engine: each restart's trial gradient and input
gradient ``Jᵀ_r w_r`` against dense float64 Jacobians (``torch.func.jacfwd``: N·D ≤ 192 columns), and the fallbacks."""
import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, jacfwd

from i2f_fast.attack import _Objective
from i2f_fast.reference import grad_match_ref, tv_ref
from i2f_fast.testing import assert_close

from engine_models import lenet


def restart_gradient(model, loss_fn, labels):
    """``x`` (one restart, ``(N, *S)``) → flat ``∇_θ loss_fn(model(x), labels)`` ``(P,)``."""
    params = {k: p.detach() for k, p in model.named_parameters()}

    def flat(x):
        g = grad(lambda p: loss_fn(functional_call(model, p, (x,)), labels))(params)
        return torch.cat([g[k].reshape(-1) for k in params])

    return flat


def dense_step(model, loss_fn, labels, xs, target, match, alpha_tv):
    """Per restart: matching loss and ``J_rᵀ w_r + α_TV ∇TV`` with ``J_r`` from ``jacfwd``."""
    flat = restart_gradient(model, loss_fn, labels)
    losses, grads = [], []
    for x in xs:
        loss, w = grad_match_ref(flat(x).unsqueeze(0), target, match)
        J = jacfwd(flat)(x).reshape(target.numel(), -1)  # (P, N·D)
        gx = (w[0] @ J).reshape(x.shape)
        if alpha_tv:
            gx = gx + alpha_tv * tv_ref(x.unsqueeze(0))[1][0]
        losses.append(loss[0])
        grads.append(gx)
    return torch.stack(losses), torch.stack(grads)


def _problem(samples, restarts, loss_fn=F.cross_entropy, seed=0):
    model = lenet()  # float64 sigmoid LeNet on 1×8×8, 4 classes
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(samples) % 4
    x_true = torch.randn(samples, 1, 8, 8, generator=gen, dtype=torch.float64)
    target = restart_gradient(model, loss_fn, labels)(x_true)
    xs = torch.randn(restarts, samples, 1, 8, 8, generator=gen, dtype=torch.float64)
    named = list(model.named_parameters())
    return model, named, labels, target, xs


@pytest.mark.parametrize("samples, match, alpha_tv", [(1, "cosine", 0.0), (2, "cosine", 0.1), (3, "l2", 0.0)])
def test_restarts_through_the_engine_match_dense_jacobians(samples, match, alpha_tv):
    model, named, labels, target, xs = _problem(samples, restarts=3)
    objective = _Objective(model, named, labels, F.cross_entropy, target, match, None, alpha_tv)
    loss, _, gx = objective.value_and_grad(xs)
    assert objective._engines[xs.shape] is not None  # the engine route ran
    want_loss, want_gx = dense_step(model, F.cross_entropy, labels, xs, target, match, alpha_tv)
    assert gx.shape == xs.shape
    assert_close(loss, want_loss)
    assert_close(gx, want_gx, scale=want_gx.abs().max().item())
    assert_close(objective.matching_loss(xs), want_loss)
    moved = xs.flip(0).contiguous()  # the engine moves to new candidates without re-tracing
    assert_close(objective.value_and_grad(moved)[2], dense_step(model, F.cross_entropy, labels, moved, target,
                                                                match, alpha_tv)[1], scale=want_gx.abs().max().item())


def scaled_cross_entropy(logits, labels):
    return 3.0 * F.cross_entropy(logits, labels, reduction="sum")


@pytest.mark.parametrize("samples, engine_used", [(1, True), (2, False)])
def test_a_custom_loss_runs_through_the_engine_only_with_one_sample_per_restart(samples, engine_used):
    model, named, labels, target, xs = _problem(samples, restarts=2, loss_fn=scaled_cross_entropy)
    objective = _Objective(model, named, labels, scaled_cross_entropy, target, "cosine", None, 0.0)
    loss, _, gx = objective.value_and_grad(xs)
    assert (objective._engines[xs.shape] is not None) == engine_used
    want_loss, want_gx = dense_step(model, scaled_cross_entropy, labels, xs, target, "cosine", 0.0)
    assert_close(loss, want_loss)
    assert_close(gx, want_gx, scale=want_gx.abs().max().item())


class SampleLoop(nn.Module):
    """A forward that loops over the samples in Python: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.net = lenet()

    def forward(self, x):
        return torch.cat([self.net(x[i : i + 1]) for i in range(x.shape[0])])


def test_an_untraceable_model_falls_back_to_torch_func_with_the_reason(caplog):
    model = SampleLoop()
    _, _, labels, target, xs = _problem(1, restarts=2)
    named = list(model.named_parameters())
    objective = _Objective(model, named, labels, F.cross_entropy, target, "cosine", None, 0.0)
    with caplog.at_level(logging.INFO, logger="i2f_fast"):
        loss, _, gx = objective.value_and_grad(xs)
    assert objective._engines[xs.shape] is None
    assert "structured engine not used" in caplog.text and "trace" in caplog.text
    want_loss, want_gx = dense_step(model, F.cross_entropy, labels, xs, target, "cosine", 0.0)
    assert_close(gx, want_gx, scale=want_gx.abs().max().item())


def test_a_diverged_restart_does_not_stop_the_others():
    model, named, labels, target, xs = _problem(1, restarts=2)
    xs[1].fill_(float("nan"))
    objective = _Objective(model, named, labels, F.cross_entropy, target, "cosine", None, 0.0)
    loss, _, gx = objective.value_and_grad(xs)
    assert objective._engines[xs.shape] is not None
    assert torch.isnan(objective.trial_gradients(xs)[1]).all()
    want_loss, want_gx = dense_step(model, F.cross_entropy, labels, xs[:1], target, "cosine", 0.0)
    assert_close(loss[0], want_loss[0])
    assert_close(gx[0], want_gx[0], scale=want_gx.abs().max().item())
