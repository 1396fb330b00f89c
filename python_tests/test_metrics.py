"""Reconstruction metrics against scikit-image on the same images."""
import numpy as np
import pytest
import torch
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from i2f_fast import metrics
from i2f_fast.data import digits, natural
from i2f_fast.models import lenet


def _pair(batch, sigma=0.3, seed=0):
    noise = torch.randn(batch.images.shape, generator=torch.Generator().manual_seed(seed))
    return (batch.images + sigma * noise).double(), batch.images.double()


def _pixels_np(t, batch):
    return metrics.to_pixels(t, batch.mean, batch.std).numpy()


@pytest.mark.parametrize("loader", [lambda: digits(n=3), lambda: natural(n=2)])
def test_pixel_metrics_agree_with_scikit_image(loader):
    batch = loader()
    rec, orig = _pair(batch)
    a, b = _pixels_np(rec, batch), _pixels_np(orig, batch)
    mean, std = batch.mean, batch.std
    psnr = metrics.psnr(rec, orig, mean, std)
    ssim = metrics.ssim(rec, orig, mean, std)
    mse_px = metrics.mse_pixels(rec, orig, mean, std)
    assert psnr.shape == ssim.shape == mse_px.shape == (len(batch),)
    for n in range(len(batch)):
        assert mse_px[n].item() == pytest.approx(mean_squared_error(b[n], a[n]), rel=1e-9)
        assert psnr[n].item() == pytest.approx(peak_signal_noise_ratio(b[n], a[n], data_range=1.0), rel=1e-9)
        ref = structural_similarity(b[n], a[n], data_range=1.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, channel_axis=0)
        assert ssim[n].item() == pytest.approx(ref, abs=1e-5)  # pytorch_msssim builds its window in float32
    assert metrics.psnr(rec, orig, mean, std, reduction="mean").item() == pytest.approx(psnr.mean().item())
    assert metrics.rmse_pixels(rec, orig, mean, std)[0].item() == pytest.approx(mse_px[0].sqrt().item())


def test_normalised_space_metrics_and_perfect_reconstruction():
    batch = digits(n=2)
    rec, orig = _pair(batch, sigma=0.5)
    diff = (rec - orig).numpy()
    expected = [np.mean(diff[n] ** 2) for n in range(2)]
    torch.testing.assert_close(metrics.mse(rec, orig), torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(metrics.rmse(rec, orig), torch.tensor(expected, dtype=torch.float64).sqrt())
    assert metrics.rmse(rec, orig)[0].item() == pytest.approx((rec - orig)[0].norm().item() / 28)
    assert torch.isinf(metrics.psnr(orig, orig, batch.mean, batch.std)).all()
    assert metrics.ssim(orig, orig, batch.mean, batch.std).sub(1).abs().max() < 1e-6


def test_pixel_metrics_clamp_to_the_valid_range():
    batch = digits(n=1)
    lo, hi = batch.pixel_bounds
    far = batch.images + 100 * (hi - lo)  # far outside: clamps to pixel value 1
    ones = batch.normalize(torch.ones_like(batch.images))
    torch.testing.assert_close(metrics.mse_pixels(far, batch.images, batch.mean, batch.std),
                               metrics.mse_pixels(ones, batch.images, batch.mean, batch.std))


def test_feature_mse_uses_the_logits():
    batch = digits(n=2)
    model = lenet(generator=torch.Generator().manual_seed(0)).eval()
    rec = batch.images.flip(0)
    with torch.no_grad():
        expected = (model(rec) - model(batch.images)).square().mean(dim=1)
    torch.testing.assert_close(metrics.feature_mse(model, rec, batch.images), expected)
    assert (metrics.feature_mse(model, batch.images, batch.images) == 0).all()


def test_lpips_missing_package_or_weights_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_lpips(name, *args, **kwargs):
        if name == "lpips":
            raise ImportError("No module named 'lpips'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lpips)
    monkeypatch.setattr(metrics, "_LPIPS_MODELS", {})
    batch = digits(n=1)
    with pytest.raises(metrics.LPIPSUnavailableError, match="pip install lpips"):
        metrics.lpips(batch.images, batch.images, batch.mean, batch.std)


def test_bad_input():
    x = torch.zeros(2, 1, 12, 12)
    with pytest.raises(ValueError, match="must match"):
        metrics.mse(x, torch.zeros(2, 1, 12, 11))
    with pytest.raises(ValueError, match="reconstruction must have 4 dimensions"):
        metrics.mse(x[0], x[0])
    with pytest.raises(ValueError, match="reduction"):
        metrics.mse(x, x, reduction="sum")
    with pytest.raises(ValueError, match="both mean and std"):
        metrics.psnr(x, x, mean=(0.5,))
    with pytest.raises(ValueError, match="one per channel"):
        metrics.psnr(x, x, mean=(0.5, 0.5), std=(1.0, 1.0))
    with pytest.raises(ValueError, match="win_size"):
        metrics.ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="net"):
        metrics.lpips(x, x, net="resnet")
