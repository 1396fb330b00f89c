"""Drop-in helpers with the paper's names, arguments and return types."""
import numpy as np
import torch

from i2f_fast.compat import I2F_lb, compute_exact_bound, max_eigen_val
from i2f_fast.testing import assert_close

from conftest import dense_jacobian, make_problem


def setup_problem():
    model, x, y = make_problem("cnn", 1)
    J = dense_jacobian(model, x, y)
    noise = [1e-2 * torch.randn_like(p) for p in model.parameters()]  # the paper passes a list
    flat = torch.cat([n.reshape(-1) for n in noise])
    return model, x, y, J, noise, flat


def test_I2F_lb_returns_a_tensor_like_the_original():
    model, x, y, J, noise, flat = setup_problem()
    out = I2F_lb(model, x, y, noise, device="cpu")
    assert isinstance(out, torch.Tensor) and out.shape == (1,)
    lam = torch.linalg.eigvalsh(J.T @ J)[-1]
    assert_close(out[0], (flat @ J).norm() / lam)


def test_max_eigen_val_returns_a_numpy_array_of_one_eigenvalue():
    model, x, y, J, _, _ = setup_problem()
    out = max_eigen_val(model, x, y, "cpu")
    assert isinstance(out, np.ndarray) and out.shape == (1,) and out.dtype == np.float64
    np.testing.assert_allclose(out[0], torch.linalg.eigvalsh(J.T @ J)[-1].item(), rtol=1e-9)


def test_compute_exact_bound_returns_the_input_shaped_solution_and_leaves_img_alone():
    model, x, y, J, noise, flat = setup_problem()
    img = x.clone()
    b = compute_exact_bound(None, model, img, y, noise, dict(device="cpu", dtype=torch.float64), regu=1.0)
    assert b.shape == x.shape and not img.requires_grad
    A = J.T @ J + torch.eye(J.shape[1], dtype=J.dtype)
    expected = torch.linalg.solve(A, flat @ J)
    torch.testing.assert_close(b.reshape(-1), expected, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(torch.norm(b), expected.norm(), rtol=1e-8, atol=0)
