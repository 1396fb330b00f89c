"""Bad input to i2f_fast.compat (the paper's helper names): a clean error naming the argument, never a
silent result; the caller's model, image and noise are never modified (the original converted the
model in place and set ``img.requires_grad``)."""
import pytest
import torch

from bad_input import assert_unchanged, bn_model, check_clean_error, snapshot
from conftest import make_problem
from i2f_fast.compat import I2F_lb, compute_exact_bound, max_eigen_val

MODEL, X, Y = make_problem("cnn", 1)
NOISE = [1e-2 * torch.randn_like(p) for p in MODEL.parameters()]
TRANSPOSED = [t.T.contiguous() if t.dim() == 2 else t for t in NOISE]
FLAT = torch.cat([n.reshape(-1) for n in NOISE])

CASES = [
    pytest.param(lambda: I2F_lb(MODEL, X, Y, TRANSPOSED), "noise[4]", id="lb-noise-transposed"),
    pytest.param(lambda: compute_exact_bound(None, MODEL, X, Y, TRANSPOSED), "noise[4]", id="bound-noise-transposed"),
    pytest.param(lambda: I2F_lb(MODEL, X, Y, NOISE[:-1]), "noise", id="lb-noise-count"),
    pytest.param(lambda: I2F_lb(MODEL, X, Y, FLAT[:-1]), "noise", id="lb-noise-length"),
    pytest.param(lambda: I2F_lb(MODEL, X, Y, [n.numpy() for n in NOISE]), "noise[0]", id="lb-noise-numpy"),
    pytest.param(lambda: I2F_lb(MODEL, X, Y, FLAT * float("nan")), "noise", id="lb-noise-nan"),
    pytest.param(lambda: I2F_lb(MODEL, X, 0.7, NOISE), "label", id="lb-label-fraction"),
    pytest.param(lambda: I2F_lb(MODEL, X, torch.tensor([1.0]), NOISE), "label", id="lb-label-float-tensor"),
    pytest.param(lambda: I2F_lb(MODEL, X, [0, 1], NOISE), "label", id="lb-label-count"),
    pytest.param(lambda: I2F_lb(MODEL, X, 9, NOISE), "label", id="lb-label-out-of-range"),
    pytest.param(lambda: I2F_lb(MODEL, X, True, NOISE), "label", id="lb-label-bool"),
    pytest.param(lambda: I2F_lb(MODEL, X.long(), Y, NOISE), "img", id="lb-img-int"),
    pytest.param(lambda: I2F_lb(MODEL, X * float("inf"), Y, NOISE), "img", id="lb-img-inf"),
    pytest.param(lambda: I2F_lb(MODEL, X[0], Y, NOISE), "img", id="lb-img-no-batch"),
    pytest.param(lambda: I2F_lb("net", X, Y, NOISE), "model", id="lb-model-string"),
    pytest.param(lambda: I2F_lb(MODEL, X, Y, NOISE, device="tpu0"), "device", id="lb-device-unknown"),
    pytest.param(lambda: max_eigen_val(MODEL, X, 0.5), "label", id="eig-label-fraction"),
    pytest.param(lambda: max_eigen_val(MODEL, X, Y, device=3.5), "device", id="eig-device-float"),
    pytest.param(lambda: compute_exact_bound(None, MODEL, X, Y, NOISE, regu=-1.0), "regu", id="bound-regu-negative"),
    pytest.param(lambda: compute_exact_bound(None, MODEL, X, Y, NOISE, regu="1"), "regu", id="bound-regu-string"),
    pytest.param(lambda: compute_exact_bound(None, MODEL, X, Y, NOISE, setup=("cpu", torch.float64)), "setup", id="bound-setup-tuple"),
    pytest.param(lambda: compute_exact_bound(None, MODEL, X, Y, NOISE, setup=dict(dtype=torch.float16)), "setup", id="bound-setup-half"),
]


@pytest.mark.parametrize("call, argument", CASES)
def test_bad_input_gets_a_clean_error_naming_the_argument(call, argument):
    check_clean_error(call, argument)


@pytest.mark.parametrize("setup", [None, dict(dtype=torch.float32), dict(dtype=torch.float64, device="cpu")])
def test_the_callers_model_image_and_noise_are_not_modified(setup):
    model = bn_model().eval()
    x, y = torch.randn(1, 1, 6, 6, dtype=torch.float64), torch.tensor([2])
    noise = [1e-2 * torch.randn_like(p) for p in model.parameters()]
    before = snapshot(model, x, y, *noise)
    shift = compute_exact_bound(None, model, x, y, noise, setup=setup)
    assert shift.dtype == (setup or {}).get("dtype", torch.float64)
    I2F_lb(model, x, y, noise), max_eigen_val(model, x, y)
    assert_unchanged(before, model, x, y, *noise)
