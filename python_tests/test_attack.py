"""Gradient-inversion attacks: recovery through the paper's LeNet, restarts, labels, bad input."""
import pytest
import torch
import torch.nn.functional as F

from i2f_fast import invert
from i2f_fast.attack import infer_labels
from i2f_fast.data import digits
from i2f_fast.defenses import gaussian
from i2f_fast.metrics import psnr
from i2f_fast.models import lenet

SIZE = 16  # 16×16 digits keep the attack CI-sized; the model is the paper's LeNet (sigmoid, U(−½, ½))


def _problem(n=1, start=0, dtype=torch.float32, size=SIZE):
    batch = digits(n=n, start=start, image_size=size)
    model = lenet(image_size=size, generator=torch.Generator().manual_seed(0)).eval().to(dtype)
    x = batch.images.to(dtype)
    grads = torch.autograd.grad(F.cross_entropy(model(x), batch.labels), list(model.parameters()))
    return batch, model, x, [g.detach() for g in grads]


def test_gs_recovers_a_digit_without_defense():
    batch, model, x, grads = _problem()
    res = invert(model, grads, batch.labels, x.shape, attack="gs", iterations=300, bounds=batch.pixel_bounds,
                 generator=torch.Generator().manual_seed(0), progress=False)
    assert res.x.shape == x.shape and res.restarts.shape == (1, *x.shape)
    quality = psnr(res.x, x, batch.mean, batch.std)
    assert quality.item() >= 30, f"PSNR {quality.item():.1f} dB"
    assert res.loss < 1e-4 and res.history.shape == (30, 1) and res.history_steps[-1] == 290
    lo, hi = batch.pixel_bounds
    assert (res.x >= lo - 1e-6).all() and (res.x <= hi + 1e-6).all(), "GS must stay in the box"


def test_gs_fails_under_heavy_noise():
    batch, model, x, grads = _problem()
    noisy = gaussian(grads, var=1e-1, generator=torch.Generator().manual_seed(0))
    assert noisy.stats["ratio"] > 3
    res = invert(model, noisy.grads, batch.labels, x.shape, attack="gs", iterations=300, bounds=batch.pixel_bounds,
                 generator=torch.Generator().manual_seed(0), progress=False)
    assert psnr(res.x, x, batch.mean, batch.std).item() < 15


def test_dlg_adam_and_lbfgs_decrease_the_matching_loss():
    batch, model, x, grads = _problem()
    for optimizer, iterations in (("adam", 60), ("lbfgs", 30)):
        res = invert(model, grads, batch.labels, x.shape, attack="dlg", iterations=iterations, optimizer=optimizer,
                     generator=torch.Generator().manual_seed(1), progress=False, history_every=1)
        assert res.config.match == "l2" and not res.config.signed
        assert res.loss < 0.2 * res.history[0, 0].item(), optimizer
        assert torch.isfinite(res.x).all()


def test_restarts_run_together_and_match_separate_runs():
    batch, model, x, grads = _problem(dtype=torch.float64)
    starts = torch.randn(3, *x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    kw = dict(attack="dlg", iterations=15, progress=False, tv=1e-3)
    together = invert(model, grads, batch.labels, x.shape, restarts=3, init=starts, **kw)
    for r in range(3):
        alone = invert(model, grads, batch.labels, x.shape, restarts=1, init=starts[r : r + 1], **kw)
        torch.testing.assert_close(together.restarts[r], alone.x, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(together.losses[r], alone.losses[0], rtol=1e-9, atol=1e-12)
    assert together.best == int(together.losses.argmin()) and together.loss == together.losses.min().item()
    assert torch.equal(together.x, together.restarts[together.best])


def test_seeded_runs_are_reproducible():
    batch, model, x, grads = _problem()
    runs = [invert(model, grads, batch.labels, x.shape, iterations=5, restarts=2, init="rand",
                   generator=torch.Generator().manual_seed(3), progress=False) for _ in range(2)]
    assert torch.equal(runs[0].restarts, runs[1].restarts)
    assert (runs[0].restarts[0] != runs[0].restarts[1]).any()


def test_layer_subset_ignores_the_other_layers():
    batch, model, x, grads = _problem(dtype=torch.float64)
    corrupted = [g.clone() for g in grads]
    corrupted[0] += 100.0  # not matched: layers 6..9 only
    kw = dict(iterations=5, layers=[6, 7, 8, 9], generator=None, progress=False, init="zeros")
    a = invert(model, grads, batch.labels, x.shape, **kw)
    b = invert(model, corrupted, batch.labels, x.shape, **kw)
    torch.testing.assert_close(a.x, b.x)
    c = invert(model, corrupted, batch.labels, x.shape, **dict(kw, layers=None))
    assert not torch.allclose(a.x, c.x)
    with pytest.raises(ValueError, match="layers"):
        invert(model, grads, batch.labels, x.shape, iterations=1, layers=[10], progress=False)
    with pytest.raises(ValueError, match="layer_weights"):
        invert(model, grads, batch.labels, x.shape, iterations=1, layer_weights=[1.0] * 3, progress=False)


@pytest.mark.parametrize("start", range(5))
def test_idlg_infers_the_label_of_one_sample(start):
    batch, model, x, grads = _problem(start=start)
    assert infer_labels(model, grads, 1).tolist() == batch.labels.tolist()


def test_batch_label_inference_and_invert_without_labels():
    batch, model, x, grads = _problem(n=4)  # digits 0, 1, 2, 3: distinct labels
    inferred = infer_labels(model, grads, 4)
    assert sorted(inferred.tolist()) == sorted(batch.labels.tolist())
    res = invert(model, grads, None, x.shape, iterations=1, progress=False)
    assert torch.equal(res.labels, inferred)
    with pytest.raises(ValueError, match="iDLG"):
        infer_labels(model, grads, 4, strategy="idlg")
    with pytest.raises(ValueError, match="strategy"):
        infer_labels(model, grads, 1, strategy="magic")


def test_bad_input_names_the_argument():
    batch, model, x, grads = _problem()
    flat = torch.cat([g.reshape(-1) for g in grads])
    call = dict(progress=False, iterations=1)
    with pytest.raises(ValueError, match="target_grads has 9 tensors"):
        invert(model, grads[:-1], batch.labels, x.shape, **call)
    with pytest.raises(ValueError, match=r"target_grads\[1\] has shape"):
        invert(model, [grads[0], grads[1][:5]] + grads[2:], batch.labels, x.shape, **call)
    with pytest.raises(ValueError, match="target_grads must have shape"):
        invert(model, flat[:-1], batch.labels, x.shape, **call)
    with pytest.raises(ValueError, match="target_grads contains NaN"):
        invert(model, torch.full_like(flat, float("nan")), batch.labels, x.shape, **call)
    with pytest.raises(TypeError, match="target_grads"):
        invert(model, "gradient", batch.labels, x.shape, **call)
    with pytest.raises(ValueError, match="shape"):
        invert(model, flat, batch.labels, (1, 3, 16, 16), **call)
    with pytest.raises(ValueError, match="shape"):
        invert(model, flat, batch.labels, (1, 1, 28, 28), **call)
    with pytest.raises(ValueError, match="attack must be one of"):
        invert(model, flat, batch.labels, x.shape, attack="magic", **call)
    with pytest.raises(ValueError, match="init"):
        invert(model, flat, batch.labels, x.shape, init="ones", **call)
    with pytest.raises(ValueError, match="optimizer"):
        invert(model, flat, batch.labels, x.shape, optimizer="sgd", **call)
    with pytest.raises(ValueError, match="iterations"):
        invert(model, flat, batch.labels, x.shape, iterations=0, progress=False)
    with pytest.raises(ValueError, match="restarts"):
        invert(model, flat, batch.labels, x.shape, restarts=0, **call)
    with pytest.raises(ValueError, match="labels"):
        invert(model, flat, torch.tensor([10]), x.shape, **call)
    with pytest.raises(ValueError, match="bounds"):
        invert(model, flat, batch.labels, x.shape, bounds=(1.0, -1.0), **call)
    with pytest.raises(ValueError, match="lbfgs"):
        invert(model, flat, batch.labels, x.shape, attack="gs", optimizer="lbfgs", **call)
    with pytest.raises(TypeError, match="model"):
        invert(lambda t: t, flat, batch.labels, x.shape, **call)


def test_lbfgs_with_line_search_stops_at_the_gradient_tolerance():
    batch, model, x, grads = _problem(dtype=torch.float64, size=12)
    kw = dict(attack="dlg", optimizer="lbfgs", line_search="strong_wolfe", init=x.unsqueeze(0), progress=False,
              history_every=1, iterations=500)
    noisy = [g + 1e-4 * torch.randn_like(g) for g in grads]  # the optimum moves off x: something to converge to
    loose = invert(model, noisy, batch.labels, x.shape, grad_tol=1e-2, **kw)  # ~30 iterations
    tight = invert(model, noisy, batch.labels, x.shape, grad_tol=1e-4, **kw)  # ~300
    assert 1 <= loose.iterations < tight.iterations < 500
    assert loose.history_steps[-1] == loose.iterations - 1
    assert tight.loss < loose.loss < loose.history[0, 0]
    call = dict(attack="dlg", progress=False, iterations=1)
    with pytest.raises(ValueError, match="line_search"):
        invert(model, grads, batch.labels, x.shape, optimizer="lbfgs", line_search="armijo", **call)
    with pytest.raises(ValueError, match="grad_tol"):
        invert(model, grads, batch.labels, x.shape, optimizer="lbfgs", grad_tol=-1.0, **call)
    with pytest.raises(ValueError, match="optimizer='lbfgs'"):
        invert(model, grads, batch.labels, x.shape, grad_tol=1e-6, **call)
