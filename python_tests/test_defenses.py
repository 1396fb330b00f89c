"""Gradient defenses: shapes and forms, seeded determinism, reported statistics, DP clipping."""
import functools
import math

import pytest
import torch
import torch.nn.functional as F

from i2f_fast import InversionInfluence
from i2f_fast.defenses import (
    DEFENSES, apply_defense, compose, dp, eigen_direction, gaussian, laplace, prune, quantize, sign, topk,
)

from conftest import make_problem


def _grads(model, x, y):
    return [g.detach() for g in torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))]


@pytest.fixture
def problem():
    model, x, y = make_problem("cnn", 4)
    return model, x, y, _grads(model, x, y)


def _all_results(model, x, y, grads, seed):
    gen = lambda: torch.Generator().manual_seed(seed)  # noqa: E731
    return {
        "gaussian": gaussian(grads, 1e-3, generator=gen()),
        "laplace": laplace(grads, 1e-2, generator=gen()),
        "dp": dp(grads, model, x, y, clip_norm=0.5, noise_multiplier=0.3, generator=gen()),
        "prune": prune(grads, 0.5),
        "topk": topk(grads, 0.1),
        "quantize": quantize(grads, 4, generator=gen()),
        "sign": sign(grads),
        "eigen": eigen_direction(grads, model, x, y, index=1, scale=0.5, generator=gen()),
        "compose": compose(grads, functools.partial(prune, ratio=0.5), functools.partial(gaussian, var=1e-4),
                           generator=gen()),
    }


def test_every_defense_keeps_the_form_and_reports_consistent_stats(problem):
    model, x, y, grads = problem
    flat = torch.cat([g.reshape(-1) for g in grads])
    for name, res in _all_results(model, x, y, grads, 0).items():
        assert isinstance(res.grads, list) and [t.shape for t in res.grads] == [g.shape for g in grads], name
        defended = torch.cat([t.reshape(-1) for t in res.grads])
        torch.testing.assert_close(res.delta, defended - flat, msg=name)
        s = res.stats
        assert s["grad_norm"] == pytest.approx(flat.norm().item()), name
        assert s["delta_norm"] == pytest.approx(res.delta.norm().item()), name
        assert s["ratio"] == pytest.approx(s["delta_norm"] / s["grad_norm"]), name
        cos = (flat @ defended / (flat.norm() * defended.norm())).item()
        assert s["cosine"] == pytest.approx(cos, abs=1e-12), name
    flat_res = gaussian(flat, 1e-3, generator=torch.Generator().manual_seed(0))
    assert isinstance(flat_res.grads, torch.Tensor) and flat_res.grads.shape == flat.shape


def test_seeded_defenses_are_reproducible_and_seeds_differ(problem):
    model, x, y, grads = problem
    a, b, c = (_all_results(model, x, y, grads, s) for s in (0, 0, 1))
    for name in a:
        assert torch.equal(a[name].delta, b[name].delta), name
    for name in ("gaussian", "laplace", "dp", "quantize", "compose"):
        assert not torch.equal(a[name].delta, c[name].delta), name


def test_noise_distributions_have_the_stated_moments():
    g = torch.zeros(400_000, dtype=torch.float64)
    gen = torch.Generator().manual_seed(5)
    d = gaussian(g, 0.04, generator=gen).delta
    assert d.mean().abs() < 2e-3 and d.var().item() == pytest.approx(0.04, rel=0.01)
    d = laplace(g, 0.3, generator=gen).delta
    assert d.abs().mean().item() == pytest.approx(0.3, rel=0.01) and d.var().item() == pytest.approx(2 * 0.09, rel=0.02)


def test_dp_clips_each_sample_and_matches_opacus_semantics(problem):
    model, x, y, grads = problem
    N = x.shape[0]
    per_sample = torch.stack([torch.cat([g.reshape(-1) for g in _grads(model, x[n : n + 1], y[n : n + 1])])
                              for n in range(N)])
    C = 0.5 * per_sample.norm(dim=1).min().item()  # every sample gets clipped
    res = dp(grads, model, x, y, clip_norm=C, noise_multiplier=0.0)
    defended = torch.cat([t.reshape(-1) for t in res.grads])
    expected = (per_sample * (C / (per_sample.norm(dim=1, keepdim=True) + 1e-6))).sum(0) / N
    torch.testing.assert_close(defended, expected, rtol=1e-9, atol=1e-12)
    assert defended.norm() <= C * (1 + 1e-9)  # the clipping bound
    loose = dp(grads, model, x, y, clip_norm=1e6, noise_multiplier=0.0)  # no clipping: the clean mean gradient
    assert loose.stats["delta_norm"] < 1e-9 * loose.stats["grad_norm"]
    noisy = dp(grads, model, x, y, clip_norm=C, noise_multiplier=2.0, generator=torch.Generator().manual_seed(0))
    noise = torch.cat([t.reshape(-1) for t in noisy.grads]) - defended
    P = noise.numel()
    assert noise.norm().item() == pytest.approx(2.0 * C / N * math.sqrt(P), rel=0.1)


def test_prune_and_topk_keep_exact_counts(problem):
    *_, grads = problem
    flat = torch.cat([g.reshape(-1) for g in grads])
    P = flat.numel()
    res = prune(flat, 0.3)
    kept = res.grads != 0
    assert kept.sum() == P - round(0.3 * P)
    assert flat[kept].abs().min() >= flat[~kept].abs().max()
    torch.testing.assert_close(res.grads[kept], flat[kept])
    torch.testing.assert_close(topk(flat, 0.7).grads, prune(flat, 0.3).grads)
    assert (prune(flat, 1.0).grads == 0).all() and torch.equal(prune(flat, 0.0).grads, flat)


def test_prune_works_beyond_the_quantile_limit():
    P = 2**24 + 5  # torch.quantile refuses inputs above 2**24 elements
    g = torch.randn(P, generator=torch.Generator().manual_seed(0))
    res = prune(g, 0.9)
    assert int((res.grads != 0).sum()) == P - round(0.9 * P)


def test_quantize_is_unbiased_and_on_the_grid():
    g = torch.linspace(-1, 1, 11, dtype=torch.float64)
    res = quantize(g, 2, generator=torch.Generator().manual_seed(0))
    step = 2 / 3
    levels = (res.grads + 1) / step
    torch.testing.assert_close(levels, levels.round())
    assert (res.delta.abs() < step).all()
    draws = torch.stack([quantize(g, 2, generator=torch.Generator().manual_seed(s)).grads for s in range(3000)])
    assert (draws.mean(0) - g).abs().max() < 0.03


def test_sign_keeps_the_norm_and_the_signs():
    g = torch.tensor([3.0, -4.0, 0.0, 0.5], dtype=torch.float64)
    res = sign(g)
    assert res.grads.norm().item() == pytest.approx(g.norm().item())
    torch.testing.assert_close(res.grads.sign(), g.sign())
    assert res.grads[2] == 0


def test_eigen_direction_has_the_predicted_i2f(problem):
    model, x, y, grads = problem
    inf = InversionInfluence(model, x, y, generator=torch.Generator().manual_seed(0))
    res = eigen_direction(grads, model, x, y, index=0, scale=0.2, influence=inf)
    assert res.stats["delta_norm"] == pytest.approx(0.2)
    lam = inf.top_eigenpairs(1).eigenvalues[0].item()
    assert inf.i2f(res.delta, 1.0).value.item() == pytest.approx(0.2 * math.sqrt(lam) / (lam + 1), rel=1e-6)


def test_registry_and_bad_arguments(problem):
    model, x, y, grads = problem
    assert set(DEFENSES) >= {"none", "gaussian", "laplace", "dp", "prune", "topk", "quantize", "sign", "eigen"}
    assert apply_defense("none", grads).stats["delta_norm"] == 0
    res = apply_defense("dp", grads, 0.5, model=model, x=x, y=y, clip_norm=1.0, generator=torch.Generator())
    assert res.stats["delta_norm"] > 0
    assert (apply_defense("quantize", grads, 3.0, generator=torch.Generator()).grads[0] != 0).any()
    with pytest.raises(ValueError, match="defense must be one of"):
        apply_defense("magic", grads, 1.0)
    with pytest.raises(ValueError, match="needs a strength"):
        apply_defense("gaussian", grads)
    with pytest.raises(ValueError, match="needs the model"):
        apply_defense("dp", grads, 1.0)
    with pytest.raises(ValueError, match="var"):
        gaussian(grads, -1.0)
    with pytest.raises(ValueError, match="ratio"):
        prune(grads, 1.5)
    with pytest.raises(ValueError, match="bits"):
        quantize(grads, 0)
    with pytest.raises(ValueError, match="clip_norm"):
        dp(grads, model, x, y, clip_norm=0.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="grads must have shape"):
        dp(grads[0].reshape(-1), model, x, y, clip_norm=1.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="grads contains NaN"):
        gaussian(torch.tensor([float("nan")]), 1.0)
    with pytest.raises(TypeError, match="grads"):
        sign("g")
    with pytest.raises(ValueError, match="at least one"):
        compose(grads)
