"""The calibrated prediction: objectives, layer weights, relative damping and the solver routes,
against dense float64 linear algebra on the attack's own linearised optimality condition."""
import math

import pytest
import torch

import i2f_fast
from i2f_fast import InversionInfluence, influence, solvers
from i2f_fast.testing import assert_close

from conftest import dense_jacobian, make_problem, per_sample_jacobians


def element_weights(inf, layer_weights):
    sizes = [math.prod(s) for s in inf.jacobian.param_shapes]
    return torch.tensor(layer_weights, dtype=torch.float64).repeat_interleave(torch.tensor(sizes))


def dense_system(J, g, objective, w):
    """(A, Π W^½) of the linearised attack: A = Π W^½ J (PREDICTION.md §1–2)."""
    sqrt_w = w.sqrt()
    P = J.shape[0]
    proj = torch.eye(P, dtype=J.dtype)
    if objective == "cosine":
        unit = sqrt_w * g / (sqrt_w * g).norm()
        proj = proj - torch.outer(unit, unit)
    return proj @ (sqrt_w[:, None] * J), proj * sqrt_w


def dense_shift(J, g, delta, objective, w, eps_rel):
    A, target = dense_system(J, g, objective, w)
    M = A.T @ A
    eps = eps_rel * torch.linalg.eigvalsh(M)[-1]
    return torch.linalg.solve(M + eps * torch.eye(M.shape[0], dtype=M.dtype), A.T @ (target @ delta)), eps


@pytest.mark.parametrize("objective", ["l2", "cosine"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("method", ["spectral", "lsqr", "cg", "cgls"])
def test_every_route_solves_the_attacks_linearised_system(objective, weighted, method):
    model, x, y = make_problem("cnn", 1)
    J = dense_jacobian(model, x, y)
    inf = InversionInfluence(model, x, y)
    layer_weights = [0.5, 2.0, 1.0, 0.0, 0.7, 1.3] if weighted else None
    w = element_weights(inf, layer_weights) if weighted else torch.ones(J.shape[0], dtype=torch.float64)
    delta = 1e-2 * torch.randn(J.shape[0], dtype=torch.float64)
    expected, eps = dense_shift(J, inf.jacobian.gradient, delta, objective, w, 1e-3)
    res = inf.i2f(delta, eps_rel=1e-3, objective=objective, layer_weights=layer_weights, method=method, tol=1e-12)
    assert res.method == method and res.objective == objective and bool(res.converged)
    assert_close(res.eps, eps)
    assert_close(res.shift.reshape(-1), expected, scale=expected.abs().max().item())
    assert_close(res.rmse, expected.norm() / math.sqrt(x.numel()))


def test_cosine_prediction_ignores_a_rescaling_of_the_gradient_and_l2_does_not():
    model, x, y = make_problem("mlp", 1)
    inf = InversionInfluence(model, x, y)
    g = inf.jacobian.gradient
    cosine = inf.i2f(0.3 * g, eps_rel=1e-6, objective="cosine")
    l2 = inf.i2f(0.3 * g, eps_rel=1e-6, objective="l2")
    assert cosine.value < 1e-10 * l2.value


def test_per_sample_relative_damping_uses_each_samples_lambda_max():
    model, x, y = make_problem("cnn", 3)
    Js = per_sample_jacobians(model, x, y)
    inf = InversionInfluence(model, x, y, per_sample=True)
    deltas = 1e-2 * torch.randn(2, 3, Js[0].shape[0], dtype=torch.float64)
    for method in ("spectral", "lsqr"):
        res = inf.i2f(deltas, eps_rel=1e-4, method=method, tol=1e-12)
        assert res.value.shape == (2, 3) and res.eps.shape == (2, 3)
        for n, J in enumerate(Js):
            g = inf.jacobian.gradient[n]
            expected, eps = dense_shift(J, g, deltas[:, n].T, "l2", torch.ones(J.shape[0], dtype=torch.float64), 1e-4)
            assert_close(res.eps[:, n], eps.expand(2))
            assert_close(res.shift[:, n].reshape(2, -1), expected.T, scale=expected.abs().max().item())


@pytest.mark.parametrize("method", ["spectral", "lsqr", "cg"])
def test_per_sample_cosine_with_layer_weights_uses_each_samples_gradient(method):
    model, x, y = make_problem("cnn", 3)
    Js = per_sample_jacobians(model, x, y)
    inf = InversionInfluence(model, x, y, per_sample=True)
    layer_weights = [0.5, 2.0, 1.0, 0.3, 0.7, 1.3]
    w = element_weights(inf, layer_weights)
    deltas = 1e-2 * torch.randn(2, 3, Js[0].shape[0], dtype=torch.float64)
    res = inf.i2f(deltas, eps_rel=1e-4, objective="cosine", layer_weights=layer_weights, method=method, tol=1e-12)
    for n, J in enumerate(Js):
        expected, eps = dense_shift(J, inf.jacobian.gradient[n], deltas[:, n].T, "cosine", w, 1e-4)
        assert_close(res.eps[:, n], eps.expand(2))
        assert_close(res.shift[:, n].reshape(2, -1), expected.T, scale=expected.abs().max().item())


def test_default_damping_is_the_calibrated_relative_one():
    model, x, y = make_problem("cnn", 1)
    inf = InversionInfluence(model, x, y)
    delta = 1e-2 * torch.randn(inf.jacobian.num_params, dtype=torch.float64)
    res = inf.i2f(delta, tol=1e-12)
    assert_close(res.eps, influence.DEFAULT_EPS_REL * inf.spectrum().eigenvalues[0, -1])
    assert_close(res.value, inf.i2f(delta, eps_rel=influence.DEFAULT_EPS_REL).value)


def test_zero_damping_is_the_pseudo_inverse():
    model, x, y = make_problem("cnn", 1)
    J = dense_jacobian(model, x, y)
    delta = 1e-2 * torch.randn(J.shape[0], dtype=torch.float64)
    res = i2f_fast.i2f(model, x, y, delta, eps=0.0, method="spectral")
    expected = torch.linalg.pinv(J) @ delta
    assert_close(res.shift.reshape(-1), expected, scale=expected.abs().max().item())


def test_spectral_route_of_a_float32_model_runs_in_float64_on_a_copy():
    model, x, y = make_problem("cnn", 1)
    J = dense_jacobian(model, x, y)
    model32, x32 = model.float(), x.float()
    inf = InversionInfluence(model32, x32, y)
    delta = 1e-2 * torch.randn(J.shape[0], dtype=torch.float64)
    res = inf.i2f(delta.float(), eps_rel=1e-10, method="spectral")
    assert next(model32.parameters()).dtype == torch.float32 and res.value.dtype == torch.float32
    expected, _ = dense_shift(J.float().double(), inf.jacobian.gradient.double(), delta.float().double(), "l2",
                              torch.ones(J.shape[0], dtype=torch.float64), 1e-10)
    # float32 model weights, float64 arithmetic: agrees with the float64 model to float32 rounding of the weights
    assert (res.shift.double().reshape(-1) - expected).norm() <= 1e-3 * expected.norm()


def test_spectrum_is_cached_across_damping_values_and_deltas(monkeypatch):
    model, x, y = make_problem("cnn", 2)
    inf = InversionInfluence(model, x, y, per_sample=True)
    first = inf.spectrum()
    calls = []
    monkeypatch.setattr(solvers, "dense_spectrum", lambda *a, **k: calls.append(1))
    delta = torch.randn(inf.jacobian.num_params, dtype=torch.float64)
    for eps_rel in (1e-2, 1e-6, 1e-10):
        inf.i2f(delta, eps_rel=eps_rel, method="spectral")
    inf.expected_i2f_sq(0.1, eps_rel=1e-6)
    assert inf.spectrum() is first and not calls


def test_auto_picks_cg_for_large_damping_spectral_for_small_damping_and_lsqr_for_large_inputs(monkeypatch):
    model, x, y = make_problem("cnn", 1)
    P = sum(p.numel() for p in model.parameters())
    delta = 1e-2 * torch.randn(P, dtype=torch.float64)
    assert i2f_fast.i2f(model, x, y, delta).method == "lsqr"  # one solve: assembling D columns does not pay
    deltas = 1e-2 * torch.randn(influence.SPECTRAL_MIN_SOLVES, P, dtype=torch.float64)
    assert i2f_fast.i2f(model, x, y, deltas).method == "spectral"
    assert i2f_fast.i2f(model, x, y, delta, eps=1.0).method == "cg"  # the paper's damping: CG is fast there
    assert i2f_fast.i2f(model, x, y, delta, eps_rel=influence.ITERATIVE_EPS_REL).method == "cg"
    inf = InversionInfluence(model, x, y)
    inf.spectrum()
    assert inf.i2f(delta, eps=1.0).method == "spectral"  # a cached spectrum makes every damping cheap
    monkeypatch.setattr(influence, "SPECTRAL_MAX_DIM", x.numel() - 1)
    assert i2f_fast.i2f(model, x, y, deltas, tol=1e-10).method == "lsqr"


def test_spectral_route_too_large_for_memory_is_refused_with_the_estimate(monkeypatch):
    model, x, y = make_problem("cnn", 1)
    inf = InversionInfluence(model, x, y)
    monkeypatch.setattr(solvers, "available_memory", lambda device: 1000)
    monkeypatch.setattr(influence, "available_memory", lambda device: 1000)
    delta = torch.randn(inf.jacobian.num_params, dtype=torch.float64)
    with pytest.raises(MemoryError, match=r"GiB .* only 0\.00 GiB"):
        inf.i2f(delta, method="spectral")
    assert inf.i2f(delta.expand(8, -1), tol=1e-10).method == "lsqr"  # auto falls back


@pytest.mark.parametrize("objective", ["l2", "cosine"])
@pytest.mark.parametrize("weighted", [False, True])
def test_expected_square_matches_dense_trace(objective, weighted):
    model, x, y = make_problem("cnn", 1)
    J = dense_jacobian(model, x, y)
    inf = InversionInfluence(model, x, y, generator=torch.Generator().manual_seed(1))
    layer_weights = [0.5, 2.0, 1.0, 0.3, 0.7, 1.3] if weighted else None
    w = element_weights(inf, layer_weights) if weighted else torch.ones(J.shape[0], dtype=torch.float64)
    A, target = dense_system(J, inf.jacobian.gradient, objective, w)
    M = A.T @ A
    eps = 1e-3 * torch.linalg.eigvalsh(M)[-1]
    B = torch.linalg.solve(M + eps * torch.eye(M.shape[0], dtype=M.dtype), A.T @ target)
    expected = 0.02**2 * (B * B).sum()
    exact = inf.expected_i2f_sq(0.02, eps_rel=1e-3, objective=objective, layer_weights=layer_weights)
    assert exact.method == "spectral"
    assert_close(exact.value, expected)
    est = inf.expected_i2f_sq(0.02, eps_rel=1e-3, objective=objective, layer_weights=layer_weights,
                              method="hutchinson", num_probes=300, tol=1e-10)
    assert est.method == "hutchinson" and abs(est.value - expected) <= 4 * est.stderr


@pytest.mark.parametrize("method", ["cg", "lsqr", "spectral"])
def test_float32_at_huge_damping_keeps_its_tiny_value(method):
    model, x, y = make_problem("cnn", 1, torch.float32)
    inf = InversionInfluence(model, x, y)
    delta = 1e-2 * torch.randn(inf.jacobian.num_params)
    res = inf.i2f(delta, eps=1e25, method=method)
    # (JᵀJ + εI)⁻¹Jᵀδ → Jᵀδ/ε: about 1e-27, far below where a float32 sum of squares underflows
    assert res.value.item() == pytest.approx(res.jt_delta_norm.item() / 1e25, rel=1e-4) and res.value > 0


class TestBadInput:
    def setup_method(self):
        self.model, self.x, self.y = make_problem("cnn", 1)
        self.inf = InversionInfluence(self.model, self.x, self.y)
        self.delta = torch.zeros(self.inf.jacobian.num_params, dtype=torch.float64)
        self.L = len(self.inf.jacobian.param_shapes)

    def test_eps_and_eps_rel_together(self):
        with pytest.raises(ValueError, match="eps and eps_rel are exclusive"):
            self.inf.i2f(self.delta, 1.0, eps_rel=1e-6)

    @pytest.mark.parametrize("eps_rel, error", [(0.0, ValueError), (-1e-6, ValueError), (float("nan"), ValueError),
                                                (float("inf"), ValueError), (True, TypeError), ("1e-6", TypeError)])
    def test_eps_rel_not_positive(self, eps_rel, error):
        with pytest.raises(error, match="eps_rel must be"):
            self.inf.i2f(self.delta, eps_rel=eps_rel)

    def test_unknown_objective(self):
        with pytest.raises(ValueError, match="objective must be one of"):
            self.inf.i2f(self.delta, objective="l1")
        with pytest.raises(ValueError, match="objective must be one of"):
            self.inf.expected_i2f_sq(0.1, objective="cos")

    @pytest.mark.parametrize("bad, message", [
        ("count", "one per parameter tensor"),
        ("negative", r"layer_weights\[5\] must be >= 0"),
        ("zeros", "no layer with a positive weight"),
        ("nan", r"layer_weights\[0\] must be a finite number"),
        ("text", "one per parameter tensor"),
    ])
    def test_layer_weights(self, bad, message):
        weights = dict(count=[1.0] * (self.L + 1), negative=[1.0] * (self.L - 1) + [-1.0], zeros=[0.0] * self.L,
                       nan=[float("nan")] * self.L, text="heavy")[bad]
        with pytest.raises(ValueError, match=message):
            self.inf.i2f(self.delta, layer_weights=weights)

    def test_cosine_of_a_zero_weighted_gradient(self):
        model, x, y = make_problem("mlp", 1)
        for p in model.parameters():
            torch.nn.init.zeros_(p)  # only the last bias has a gradient: (softmax − one-hot)
        with pytest.raises(ValueError, match="objective='cosine' is undefined"):
            i2f_fast.i2f(model, x, y, torch.zeros(sum(p.numel() for p in model.parameters()), dtype=torch.float64),
                         eps=1.0, objective="cosine", layer_weights=[1.0, 1.0, 1.0, 0.0])

    def test_unknown_expected_method_and_probes(self):
        with pytest.raises(ValueError, match="method must be"):
            self.inf.expected_i2f_sq(0.1, method="exact")
        with pytest.raises(ValueError, match="num_probes must be"):
            self.inf.expected_i2f_sq(0.1, method="hutchinson", num_probes=1)
        with pytest.raises(TypeError, match="num_probes must be"):
            self.inf.expected_i2f_sq(0.1, method="hutchinson", num_probes=2.5)
        with pytest.raises(ValueError, match="sigma must be"):
            self.inf.expected_i2f_sq(-0.1)
