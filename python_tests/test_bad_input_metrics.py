"""Bad input to i2f_fast.metrics: a clean error naming the argument, never a NaN or inf computed from
NaN / inf pixels; the images and the model are never modified."""
import pytest
import torch

from bad_input import assert_unchanged, bn_model, check_clean_error, snapshot
from i2f_fast import metrics

A = torch.rand(2, 1, 12, 12)
B = torch.rand(2, 1, 12, 12)
NAN, INF = A.clone(), A.clone()
NAN[0, 0, 3, 3] = float("nan")
INF[1, 0, 5, 5] = float("inf")
MEAN, STD = [0.5], [0.25]
IMAGE_METRICS = ["mse", "rmse", "mse_pixels", "rmse_pixels", "psnr", "ssim"]

CASES = []
for name in IMAGE_METRICS:
    fn = getattr(metrics, name)
    CASES += [
        pytest.param(lambda fn=fn: fn(NAN, B), "reconstruction", id=f"{name}-nan-pixel"),
        pytest.param(lambda fn=fn: fn(A, INF), "original", id=f"{name}-inf-pixel"),
        pytest.param(lambda fn=fn: fn(A.long(), B), "reconstruction", id=f"{name}-int"),
        pytest.param(lambda fn=fn: fn(A, B.half()), "original", id=f"{name}-half"),
        pytest.param(lambda fn=fn: fn(A[0], B[0]), "reconstruction", id=f"{name}-3d"),
        pytest.param(lambda fn=fn: fn(A, B[:1]), "reconstruction", id=f"{name}-shape-mismatch"),
        pytest.param(lambda fn=fn: fn(A, B, reduction="sum"), "reduction", id=f"{name}-reduction"),
        pytest.param(lambda fn=fn: fn(A.tolist(), B), "reconstruction", id=f"{name}-list"),
    ]
CASES += [
    pytest.param(lambda: metrics.psnr(A, B, MEAN, None), "std", id="psnr-mean-without-std"),
    pytest.param(lambda: metrics.psnr(A, B, [0.5, 0.5], [0.2, 0.2]), "mean", id="psnr-mean-length"),
    pytest.param(lambda: metrics.psnr(A, B, MEAN, [0.0]), "std[0]", id="psnr-std-zero"),
    pytest.param(lambda: metrics.psnr(A, B, [float("nan")], STD), "mean[0]", id="psnr-mean-nan"),
    pytest.param(lambda: metrics.psnr(A, B, "0.5", STD), "mean", id="psnr-mean-string"),
    pytest.param(lambda: metrics.ssim(A, B, win_size=4), "win_size", id="ssim-win-even"),
    pytest.param(lambda: metrics.ssim(A, B, win_size=13), "win_size", id="ssim-win-too-large"),
    pytest.param(lambda: metrics.ssim(A, B, win_size=7.0), "win_size", id="ssim-win-float"),
    pytest.param(lambda: metrics.to_pixels(A, MEAN, [0.2, 0.2]), "mean", id="to_pixels-std-length"),
    pytest.param(lambda: metrics.to_pixels(A.tolist(), MEAN, STD), "x", id="to_pixels-list"),
    pytest.param(lambda: metrics.to_pixels(A[0], MEAN, STD), "x", id="to_pixels-3d"),
    pytest.param(lambda: metrics.lpips(A, B, net="resnet"), "net", id="lpips-net"),
    pytest.param(lambda: metrics.lpips(NAN, B), "reconstruction", id="lpips-nan-pixel"),
    pytest.param(lambda: metrics.feature_mse("model", A, B), "model", id="feature_mse-model-string"),
    pytest.param(lambda: metrics.feature_mse(bn_model().float(), A, B), "original", id="feature_mse-wrong-input-size"),
    pytest.param(lambda: metrics.feature_mse(bn_model().float(), NAN[:, :, :6, :6], B[:, :, :6, :6]), "reconstruction",
                 id="feature_mse-nan"),
]


@pytest.mark.parametrize("call, argument", CASES)
def test_bad_input_gets_a_clean_error_naming_the_argument(call, argument):
    check_clean_error(call, argument)


def test_feature_mse_leaves_a_training_mode_model_as_it_was():
    model = bn_model().float()
    a, b = torch.rand(2, 1, 6, 6), torch.rand(2, 1, 6, 6)
    before = snapshot(model, a, b)
    assert metrics.feature_mse(model, a, b).shape == (2,)
    assert_unchanged(before, model, a, b)
