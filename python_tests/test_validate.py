"""validate: the prediction against the attack's own optimum (L-BFGS from the true x, float64) and
the global attack; the linear regime and where it ends; the command's files; bad input."""
import json
import math

import pytest
import torch

from i2f_fast.cli import main
from i2f_fast.data import digits
from i2f_fast.experiments.validate_job import COLUMNS
from i2f_fast.models import lenet, mlp
from i2f_fast.validate import LinearRegime, linear_regime, validate

SIZE = 12  # 12×12 digits: LeNet's local attack converges in a few hundred L-BFGS iterations


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread, as the command's default: these per-sample problems are tiny, and a second
    thread on cores shared with other work made them 10-40x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _lenet():
    return lenet(image_size=SIZE, generator=torch.Generator().manual_seed(0)).eval()


def _mlp():
    torch.manual_seed(0)  # PyTorch's default init draws from the global generator
    return mlp((1, SIZE, SIZE), hidden=(32,)).eval()


def _noise(model, n, variances, seed=0):
    """``(K, n, P)``: one standard-normal direction per sample, scaled to each variance."""
    P = sum(p.numel() for p in model.parameters())
    z = torch.randn(n, P, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.stack([math.sqrt(v) * z for v in variances])


QUICK_GLOBAL = dict(restarts=1, iterations=20)  # the global attack's numbers are not what these tests check


@pytest.mark.parametrize("build", [_lenet, _mlp], ids=["lenet", "mlp"])
def test_local_attack_lands_on_the_prediction_at_small_noise(build):
    model = build()
    batch = digits(n=2, image_size=SIZE)
    res = validate(model, batch.images, batch.labels, _noise(model, 2, [1e-6])[0], eps_rel=1e-10, **QUICK_GLOBAL)
    assert res.attack == "dlg" and res.local_ratio.shape == (2,)
    assert res.local_converged.all()
    assert ((res.local_ratio - 1).abs() <= 0.10).all(), res.local_ratio
    assert (res.local_cosine >= 0.98).all(), res.local_cosine
    assert torch.allclose(res.predicted_rmse, res.predicted / SIZE)
    assert torch.allclose(res.local_rmse, res.local / SIZE)
    assert (res.global_rmse > 0).all() and torch.allclose(res.global_ratio, res.global_rmse / res.predicted_rmse)


def test_cosine_objective_and_layer_weights_are_checked_with_the_same_attack():
    model = _mlp()
    batch = digits(n=1, image_size=SIZE)
    weights = [1.0, 0.5, 2.0, 1.0]  # one per parameter tensor, as invert(layer_weights=...)
    res = validate(model, batch.images, batch.labels, _noise(model, 1, [1e-6])[0], objective="cosine",
                   layer_weights=weights, **QUICK_GLOBAL)
    assert res.attack == "gs" and res.objective == "cosine"
    assert ((res.local_ratio - 1).abs() <= 0.10).all() and (res.local_cosine >= 0.98).all()


def test_agreement_degrades_beyond_the_linear_regime():
    model = _lenet()
    batch = digits(n=1, image_size=SIZE)
    variances = [1e-6, 1e-3]
    res = validate(model, batch.images, batch.labels, _noise(model, 1, variances), **QUICK_GLOBAL)
    assert res.local_ratio.shape == (2, 1)
    small, large = (res.local_ratio[:, 0] - 1).abs(), res.local_cosine[:, 0]
    assert small[0] <= 0.10 and large[0] >= 0.98
    assert small[1] > 0.10 or large[1] < 0.98, "at σ² = 1e-3 the linearisation should no longer hold"
    regime = linear_regime(variances, res)
    assert regime == LinearRegime(variances, [1.0, 0.0], 1e-6, 1e-3)


def test_inputs_are_left_untouched_and_float32_models_work():
    model = _mlp()
    before = [p.detach().clone() for p in model.parameters()]
    batch = digits(n=1, image_size=SIZE)
    x = batch.images.clone()
    delta = _noise(model, 1, [1e-6])[0].float()
    validate(model, batch.images, batch.labels, delta, restarts=1, iterations=1, local_iterations=2)
    assert all(p.dtype == torch.float32 and torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert torch.equal(batch.images, x) and delta.dtype == torch.float32


def test_linear_regime_summaries():
    class Fake:  # only the two fields linear_regime reads
        local_ratio = torch.tensor([[1.0, 1.02], [1.05, 0.85], [1.3, 1.5]])
        local_cosine = torch.tensor([[1.0, 0.999], [0.99, 0.99], [0.9, 0.8]])

    assert linear_regime([1, 2, 3], Fake) == LinearRegime([1.0, 2.0, 3.0], [1.0, 0.5, 0.0], 1.0, 2.0)
    Fake.local_ratio = torch.ones(3, 2)
    Fake.local_cosine = torch.ones(3, 2)
    assert linear_regime([1, 2, 3], Fake) == LinearRegime([1.0, 2.0, 3.0], [1.0, 1.0, 1.0], 3.0, None)
    with pytest.raises(ValueError, match="levels"):
        linear_regime([2, 1, 3], Fake)
    with pytest.raises(ValueError, match="levels"):
        linear_regime([1, 2], Fake)


def test_bad_input_names_the_argument():
    model = _mlp()
    batch = digits(n=2, image_size=SIZE)
    x, y = batch.images, batch.labels
    P = sum(p.numel() for p in model.parameters())
    delta = torch.zeros(2, P)
    with pytest.raises(ValueError, match="objective"):
        validate(model, x, y, delta, objective="ssim")
    for argument in ("restarts", "iterations", "local_iterations"):
        with pytest.raises(ValueError, match=argument):
            validate(model, x, y, delta, **{argument: 0})
    with pytest.raises(ValueError, match="grad_tol"):
        validate(model, x, y, delta, grad_tol=-1.0)
    for shape in ((P + 1,), (3, P), (1, 3, P), (0, 2, P)):
        with pytest.raises(ValueError, match="delta"):
            validate(model, x, y, torch.zeros(shape))
    with pytest.raises(ValueError, match="delta"):
        validate(model, x, y, [torch.zeros(3)])
    with pytest.raises(ValueError, match="delta"):
        validate(model, x, y, torch.full((2, P), math.nan))
    with pytest.raises(TypeError, match="model"):
        validate("lenet", x, y, delta)
    with pytest.raises(ValueError, match="eps_rel"):
        validate(model, x, y, delta, eps_rel=0.0)


def test_validate_command_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "validate"
    argv = ["validate", "--out", str(out), "--samples", "1", "--variances", "1e-3", "1e-6", "--iterations", "10",
            "--restarts", "1", "--quiet"]
    assert main(argv) == 0
    result = json.loads((out / "validate.json").read_text())
    assert result["config"]["variances"] == [1e-6, 1e-3] and result["config"]["attack"] == "dlg"
    rows = result["rows"]
    assert len(rows) == 2 and set(rows[0]) == set(COLUMNS)
    assert rows[1]["predicted_rmse"] == pytest.approx(rows[0]["predicted_rmse"] * math.sqrt(1e3))  # linear in σ
    assert abs(rows[0]["local_ratio"] - 1) <= 0.10 and rows[0]["local_cosine"] >= 0.98
    assert result["linear_regime"]["last_inside"] == 1e-6 and result["linear_regime"]["first_outside"] == 1e-3
    png = (out / "validate.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"
    printed = capsys.readouterr().out
    assert "linear regime ends between σ² = 1e-06 and 0.001" in printed and "local/pred" in printed
    with pytest.raises(SystemExit, match="--local-iterations must be >= 1"):
        main(["validate", "--local-iterations", "0"])
