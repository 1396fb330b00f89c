"""Predicted risk under a defense (i2f_fast.audit.risk) against dense float64 linear algebra."""
import pytest
import torch
import torch.nn as nn
from torch.func import functional_call, grad, vmap

from i2f_fast import InversionInfluence, defenses
from i2f_fast.audit.risk import Defense, parse_defense, predicted_risk
from i2f_fast.testing import assert_close

from conftest import dense_jacobian, make_problem, per_sample_jacobians

EPS = 1e-3


def influence_matrix(J, eps):
    """M = (JᵀJ + εI)⁻¹Jᵀ, (D, P)."""
    return torch.linalg.solve(J.T @ J + eps * torch.eye(J.shape[1], dtype=J.dtype), J.T)


def sample_gradients(model, x, y):
    params = {k: p.detach() for k, p in model.named_parameters()}

    def one(xn, yn):
        g = grad(lambda p: nn.functional.cross_entropy(functional_call(model, p, (xn[None],)), yn[None]))(params)
        return torch.cat([g[k].reshape(-1) for k in params])

    return vmap(one)(x, y)


@pytest.fixture(scope="module")
def problem():
    model, x, y = make_problem("cnn", 3)
    return model, x, y, per_sample_jacobians(model, x, y), sample_gradients(model, x, y)


def test_gaussian_risk_is_the_exact_trace(problem):
    model, x, y, Js, _ = problem
    risk = predicted_risk(InversionInfluence(model, x, y, per_sample=True), "gaussian:1e-4", eps=EPS)
    for n, J in enumerate(Js):
        M = influence_matrix(J, EPS)
        assert_close(risk.rmse[n] ** 2, 1e-4 * (M**2).sum() / J.shape[1])
    assert risk.exact and risk.method == "spectral" and (risk.stderr == 0).all() and (risk.bias_rmse == 0).all()


@pytest.mark.parametrize("spec", ["prune:0.5", "topk:0.2"])
def test_sparsification_risk_is_one_solve_of_its_delta(problem, spec):
    model, x, y, Js, g = problem
    risk = predicted_risk(InversionInfluence(model, x, y, per_sample=True), spec, eps=EPS)
    apply = defenses.prune if spec.startswith("prune") else defenses.topk
    for n, J in enumerate(Js):
        delta = apply(g[n], float(spec.split(":")[1])).delta
        assert_close(risk.rmse[n], (influence_matrix(J, EPS) @ delta).norm() / J.shape[1] ** 0.5)
    assert (risk.noise_rmse == 0).all() and risk.exact


def test_dp_per_sample_is_clipping_bias_plus_noise_of_std_z_times_c(problem):
    model, x, y, Js, g = problem
    clip = 0.5 * g.norm(dim=1).min().item()  # every sample is clipped
    risk = predicted_risk(InversionInfluence(model, x, y, per_sample=True), f"dp:clip={clip},noise=0.3,batch=8", eps=EPS)
    for n, J in enumerate(Js):
        M = influence_matrix(J, EPS)
        bias = (clip / (g[n].norm() + 1e-6) - 1) * g[n]
        D = J.shape[1]
        assert_close(risk.bias_rmse[n] ** 2, (M @ bias).norm() ** 2 / D)
        assert_close(risk.noise_rmse[n] ** 2, (0.3 * clip) ** 2 * (M**2).sum() / D)
        assert_close(risk.rmse[n] ** 2, risk.bias_rmse[n] ** 2 + risk.noise_rmse[n] ** 2)


def test_dp_on_a_batch_uses_the_mean_clipped_gradient_and_std_z_c_over_b(problem):
    model, x, y, _, g = problem
    clip = g.norm(dim=1).median().item()  # some samples clipped, some not
    risk = predicted_risk(InversionInfluence(model, x, y), f"dp:clip={clip},noise=0.3,batch=3", eps=EPS)
    J = dense_jacobian(model, x, y)
    M = influence_matrix(J, EPS)
    factor = (clip / (g.norm(dim=1, keepdim=True) + 1e-6)).clamp(max=1)
    bias = ((factor - 1) * g).mean(0)
    D = J.shape[1]
    assert_close(risk.bias_rmse[0] ** 2, (M @ bias).norm() ** 2 / D)
    assert_close(risk.noise_rmse[0] ** 2, (0.3 * clip / 3) ** 2 * (M**2).sum() / D)


def test_cosine_attack_ignores_the_clipping_bias(problem):
    model, x, y, _, g = problem
    clip = 0.5 * g.norm(dim=1).min().item()
    inf = InversionInfluence(model, x, y, per_sample=True)
    risk = predicted_risk(inf, f"dp:clip={clip},noise=0", objective="cosine", eps=EPS)
    l2 = predicted_risk(inf, f"dp:clip={clip},noise=0", objective="l2", eps=EPS)
    assert (risk.rmse < 1e-6 * l2.rmse).all()


def test_quantisation_draws_agree_with_the_exact_diagonal_covariance(problem):
    model, x, y, Js, g = problem
    gen = torch.Generator().manual_seed(0)
    risk = predicted_risk(InversionInfluence(model, x, y, per_sample=True), "quantize:3", eps=EPS, draws=64, generator=gen)
    assert risk.method == "draws" and not risk.exact
    for n, J in enumerate(Js):
        m = g[n].abs().max()
        step = 2 * m / 7
        frac = torch.frac((g[n] + m) / step)
        exact = ((influence_matrix(J, EPS) ** 2) @ (step**2 * frac * (1 - frac))).sum() / J.shape[1]
        assert abs(risk.rmse[n] ** 2 - exact) < 5 * 2 * risk.rmse[n] * risk.stderr[n]
        assert risk.stderr[n] > 0


def test_no_defense_has_no_risk(problem):
    model, x, y, _, _ = problem
    risk = predicted_risk(InversionInfluence(model, x, y, per_sample=True), "none")
    assert (risk.rmse == 0).all() and risk.eps.shape == (3,) and (risk.eps > 0).all()


@pytest.mark.parametrize("spec, parsed", [
    ("none", Defense("none")),
    ("gaussian:1e-4", Defense("gaussian", var=1e-4)),
    (" DP:noise=1.1, clip=2 ,batch=32", Defense("dp", clip=2.0, noise_multiplier=1.1, batch=32)),
    ("prune:0.9", Defense("prune", ratio=0.9)),
    ("topk:0.1", Defense("topk", ratio=0.1)),
    ("quantize:4", Defense("quantize", bits=4)),
])
def test_parse_round_trips(spec, parsed):
    assert parse_defense(spec) == parsed
    assert parse_defense(parsed.spec) == parsed


@pytest.mark.parametrize("spec, words", [
    ("laplace:1", "unknown defense"),
    ("gaussian", "needs a value"),
    ("gaussian:-1", "gaussian variance"),
    ("gaussian:abc", "takes a number"),
    ("none:1", "takes no value"),
    ("prune:1.5", "prune ratio"),
    ("quantize:2.5", "integer number of bits"),
    ("quantize:0", "quantize bits"),
    ("dp:clip=1", "needs clip= and noise="),
    ("dp:clip=1,noise=1,clip=2", "once each"),
    ("dp:clip=0,noise=1", "dp clip"),
    ("dp:clip=1,noise=-1", "dp noise"),
    ("dp:clip=1,noise=1,batch=0", "dp batch"),
    ("dp:clip=1,noise=1,batch=2.5", "batch must be an integer"),
    ("dp:clip=1,noise=x", "must be a number"),
])
def test_bad_specs_name_the_argument(spec, words):
    with pytest.raises(ValueError, match="defense") as info:
        parse_defense(spec)
    assert words in str(info.value)


def test_non_string_spec_is_a_type_error():
    with pytest.raises(TypeError, match="defense"):
        parse_defense(0.1)


def test_noise_level_can_be_replaced_only_for_noisy_defenses():
    assert parse_defense("dp:clip=1,noise=1,batch=4").with_noise(2.0).noise_multiplier == 2.0
    assert parse_defense("gaussian:1").with_noise(0.5).var == 0.5
    with pytest.raises(ValueError, match="no noise level"):
        parse_defense("prune:0.5").with_noise(1.0)
