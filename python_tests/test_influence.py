"""I²F, its lower bound, eigenpairs and E‖I²F‖² against dense float64 linear algebra."""
import math

import pytest
import torch
import torch.nn as nn

import i2f_fast
from i2f_fast import InversionInfluence
from i2f_fast.testing import assert_close

from conftest import dense_jacobian, make_problem, per_sample_jacobians


def dense_i2f(J, delta, eps):
    """(JᵀJ + εI)⁻¹ Jᵀ δ for δ (..., P) → (..., D)."""
    A = J.T @ J + eps * torch.eye(J.shape[1], dtype=J.dtype)
    rhs = (delta.reshape(-1, J.shape[0]) @ J).T
    return torch.linalg.solve(A, rhs).T.reshape(*delta.shape[:-1], J.shape[1])


@pytest.mark.parametrize("name", ["cnn", "mlp"])
@pytest.mark.parametrize("method", ["cg", "cgls", "lsqr", "spectral"])
def test_i2f_matches_dense_solve(name, method):
    model, x, y = make_problem(name, 2)
    J = dense_jacobian(model, x, y)
    delta = 1e-2 * torch.randn(J.shape[0], dtype=x.dtype)
    res = i2f_fast.i2f(model, x, y, delta, eps=0.5, method=method, tol=1e-13)
    expected = dense_i2f(J, delta, 0.5)
    assert_close(res.shift.reshape(-1), expected, scale=expected.abs().max().item())
    assert_close(res.value, expected.norm())
    assert_close(res.jt_delta_norm, (delta @ J).norm())
    assert res.value.shape == () and res.shift.shape == x.shape and bool(res.converged)


def test_k_deltas_solved_together_match_one_by_one():
    model, x, y = make_problem("cnn", 1)
    inf = InversionInfluence(model, x, y)
    deltas = 1e-2 * torch.randn(5, inf.jacobian.num_params, dtype=x.dtype)
    batched = inf.i2f(deltas, 1.0)
    assert batched.value.shape == (5,) and batched.shift.shape == (5, *x.shape)
    for k in range(5):
        assert_close(batched.value[k], inf.i2f(deltas[k], 1.0).value)


def test_delta_as_parameter_list_like_the_papers_code():
    model, x, y = make_problem("cnn", 1)
    inf = InversionInfluence(model, x, y)
    delta = 1e-2 * torch.randn(inf.jacobian.num_params, dtype=x.dtype)
    as_list = [d.clone() for d in inf.jacobian.unflatten(delta)]
    assert_close(inf.i2f(as_list, 1.0).value, inf.i2f(delta, 1.0).value)


def test_per_sample_mode_solves_each_sample_with_its_own_jacobian():
    model, x, y = make_problem("cnn", 3)
    Js = per_sample_jacobians(model, x, y)
    P = Js[0].shape[0]
    deltas = 1e-2 * torch.randn(2, 3, P, dtype=x.dtype)
    inf = InversionInfluence(model, x, y, per_sample=True)
    res = inf.i2f(deltas, 1.0, tol=1e-13)
    lb = inf.lower_bound(deltas)
    lam = inf.max_eigenvalue()
    assert res.value.shape == (2, 3) and res.shift.shape == (2, *x.shape) and lam.shape == (3,)
    for n, J in enumerate(Js):
        expected = dense_i2f(J, deltas[:, n], 1.0)
        assert_close(res.value[:, n], expected.norm(dim=1))
        assert_close(res.shift[:, n].reshape(2, -1), expected, scale=expected.abs().max().item())
        lam_n = torch.linalg.eigvalsh(J.T @ J)[-1]
        assert_close(lam[n], lam_n)
        assert_close(lb.value[:, n], (deltas[:, n] @ J).norm(dim=1) / lam_n)
    shared = inf.i2f(deltas[0, 0], 1.0, tol=1e-13)  # one (P,) delta applied to every sample
    assert shared.value.shape == (3,)
    assert_close(shared.value[0], res.value[0, 0])


def test_lower_bound_and_max_eigenvalue_match_dense():
    model, x, y = make_problem("cnn", 2)
    J = dense_jacobian(model, x, y)
    delta = torch.randn(J.shape[0], dtype=x.dtype)
    lam = torch.linalg.eigvalsh(J.T @ J)[-1]
    assert_close(i2f_fast.max_eigenvalue(model, x, y), lam)
    assert_close(i2f_fast.max_eigenvalue(model, x, y, method="power"), lam, dtype=torch.float32)
    lb = i2f_fast.i2f_lower_bound(model, x, y, delta)
    assert_close(lb.value, (delta @ J).norm() / lam)
    assert_close(lb.lambda_max, lam)


def test_identities_bound_monotonicity():
    model, x, y = make_problem("cnn", 1)
    inf = InversionInfluence(model, x, y)
    delta = 1e-2 * torch.randn(inf.jacobian.num_params, dtype=x.dtype)
    lam = inf.max_eigenvalue()
    values = []
    for eps in (0.01, 0.1, 1.0, 10.0):
        res = inf.i2f(delta, eps)
        assert res.value >= res.jt_delta_norm / (lam + eps) * (1 - 1e-9)
        values.append(res.value.item())
    assert all(a > b for a, b in zip(values, values[1:])), "I²F must decrease in ε"


@pytest.mark.parametrize("eps", [0.0, 1.0])
def test_eigen_direction_gives_the_closed_form(eps):
    model, x, y = make_problem("cnn", 1)
    inf = InversionInfluence(model, x, y)
    pairs = inf.top_eigenpairs(3)
    J = dense_jacobian(model, x, y)
    exact = torch.linalg.eigvalsh(J.T @ J).flip(0)[:3]
    assert_close(pairs.eigenvalues, exact)
    assert pairs.eigenvectors.shape == (3, *x.shape) and pairs.param_directions.shape == (3, J.shape[0])
    c = 5.0  # the paper's scale of an eigen-direction perturbation
    for i in range(3):
        res = inf.i2f(c * pairs.param_directions[i], eps, tol=1e-12)
        lam = pairs.eigenvalues[i]
        assert_close(res.value, c * lam.sqrt() / (lam + eps))


def test_top_eigenpairs_per_sample_shapes_and_values():
    model, x, y = make_problem("cnn", 2)
    Js = per_sample_jacobians(model, x, y)
    pairs = InversionInfluence(model, x, y, per_sample=True).top_eigenpairs(2)
    assert pairs.eigenvalues.shape == (2, 2) and pairs.eigenvectors.shape == (2, 2, *x.shape[1:])
    assert pairs.param_directions.shape == (2, 2, Js[0].shape[0])
    for n, J in enumerate(Js):
        assert_close(pairs.eigenvalues[n], torch.linalg.eigvalsh(J.T @ J).flip(0)[:2])
        u = pairs.param_directions[n, 0]
        v = pairs.eigenvectors[n, 0].reshape(-1)
        assert_close(u, J @ v / (J @ v).norm())


@pytest.mark.parametrize("eps", [0.0, 0.5])
def test_expected_i2f_sq_exact(eps):
    model, x, y = make_problem("cnn", 1)
    J = dense_jacobian(model, x, y)
    lam = torch.linalg.eigvalsh(J.T @ J)
    sigma = 0.1
    if eps > 0:
        expected = sigma**2 * (lam / (lam + eps) ** 2).sum()
    else:  # P ≥ D here, so JᵀJ is invertible
        expected = sigma**2 * (1 / lam).sum()
    res = i2f_fast.expected_i2f_sq(model, x, y, sigma, eps)
    assert res.method == "spectral" and float(res.eps) == eps
    assert_close(res.value, expected)
    assert_close(res.rmse, (expected / x.numel()).sqrt())


def test_expected_i2f_sq_hutchinson_within_its_standard_error():
    model, x, y = make_problem("cnn", 1)
    inf = InversionInfluence(model, x, y, generator=torch.Generator().manual_seed(0))
    exact = inf.expected_i2f_sq(0.1, 0.5)
    est = inf.expected_i2f_sq(0.1, 0.5, method="hutchinson", num_probes=200)
    assert est.method == "hutchinson" and est.stderr > 0
    assert abs(est.value - exact.value) <= 4 * est.stderr


def test_expected_i2f_sq_matches_monte_carlo_over_gaussian_deltas():
    model, x, y = make_problem("mlp", 1)
    inf = InversionInfluence(model, x, y)
    sigma = 0.05
    deltas = sigma * torch.randn(4000, inf.jacobian.num_params, dtype=x.dtype)
    mc = (inf.i2f(deltas, 1.0).value ** 2)
    exact = inf.expected_i2f_sq(sigma, 1.0).value
    assert abs(mc.mean() - exact) <= 4 * mc.std() / math.sqrt(len(mc))


class TestBadInput:
    def setup_method(self):
        self.model, self.x, self.y = make_problem("cnn", 1)
        self.inf = InversionInfluence(self.model, self.x, self.y)
        self.P = self.inf.jacobian.num_params

    def test_delta_wrong_length(self):
        with pytest.raises(ValueError, match=f"P={self.P}"):
            self.inf.i2f(torch.zeros(self.P - 1, dtype=torch.float64))

    def test_delta_wrong_rank(self):
        with pytest.raises(ValueError, match=r"\(P,\) or \(K, P\)"):
            self.inf.i2f(torch.zeros(2, 2, self.P, dtype=torch.float64))

    def test_delta_with_nan(self):
        d = torch.zeros(self.P, dtype=torch.float64)
        d[3] = float("nan")
        with pytest.raises(ValueError, match="delta contains NaN"):
            self.inf.i2f(d)

    def test_negative_eps(self):
        with pytest.raises(ValueError, match="eps must be"):
            self.inf.i2f(torch.zeros(self.P, dtype=torch.float64), eps=-0.1)

    def test_unknown_method(self):
        with pytest.raises(ValueError, match="method must be one of"):
            self.inf.i2f(torch.zeros(self.P, dtype=torch.float64), method="gd")

    def test_per_sample_delta_shape(self):
        model, x, y = make_problem("cnn", 3)
        inf = InversionInfluence(model, x, y, per_sample=True)
        with pytest.raises(ValueError, match="per-sample delta"):
            inf.i2f(torch.zeros(2, self.P, dtype=torch.float64))

    def test_nonfinite_products_are_reported_not_returned(self):
        model = nn.Sequential(nn.Linear(6, 3)).float().eval()
        x, y = torch.randn(1, 6), torch.tensor([1])
        blow_up = lambda out, target: 1e30 * nn.functional.cross_entropy(out, target)  # noqa: E731
        inf = InversionInfluence(model, x, y, loss_fn=blow_up)
        with pytest.raises(FloatingPointError, match="not finite"):
            inf.i2f(1e10 * torch.ones(inf.jacobian.num_params), eps=1.0, method="cg")

    def test_lower_bound_with_a_flat_loss_is_reported(self):
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.Linear(4, 4)).double().eval()
        nn.init.zeros_(model[1].weight)
        model[1].requires_grad_(False)  # the trainable layer never sees x: J = 0, λ_max = 0
        x, y = torch.randn(1, 1, 8, 8, dtype=torch.float64), torch.tensor([1])
        inf = InversionInfluence(model, x, y)
        with pytest.raises(FloatingPointError, match="λ_max"):
            inf.lower_bound(torch.ones(inf.jacobian.num_params, dtype=torch.float64))

    def test_warns_when_not_converged(self):
        with pytest.warns(RuntimeWarning, match="did not converge"):
            self.inf.i2f(torch.randn(self.P, dtype=torch.float64), eps=1e-6, method="cg", max_iter=2)
