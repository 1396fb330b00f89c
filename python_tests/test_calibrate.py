"""Noise calibration and DP budgets (i2f_fast.audit.calibrate, i2f_fast.audit.accounting): the calibrated
noise is the smallest that meets the quantile, the one-pass closed form agrees with a fresh prediction
and with the attack at that noise, ε comes from Opacus's accountants, bad input names the argument."""
import json
import math
import sys

import pytest
import torch

from i2f_fast import InversionInfluence
from i2f_fast.audit.accounting import TrainingConfig, epsilon_spent, noise_multiplier_for
from i2f_fast.audit.calibrate import calibrate, risk_of_budget
from i2f_fast.audit.risk import predicted_risk
from i2f_fast.data import digits
from i2f_fast.models import mlp

SIZE = 8
QUICK_CHECK = dict(check_samples=1, restarts=1, iterations=20)
TRAINING = dict(sample_rate=0.01, steps=500, delta=1e-5)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def problem():
    model = mlp((1, SIZE, SIZE), hidden=(16,), init="xavier", generator=torch.Generator().manual_seed(0)).eval()
    return model, digits(n=10, image_size=SIZE)


def _risk(model, batch, spec):
    return predicted_risk(InversionInfluence(model, batch.images, batch.labels, per_sample=True), spec).rmse


def test_gaussian_calibration_is_the_smallest_variance_that_meets_the_quantile(problem):
    model, batch = problem
    unit = _risk(model, batch, "gaussian:1.0")
    target = 0.5 * unit.median().item() * math.sqrt(1e-4)  # reached near σ² = 0.25e-4
    cal = calibrate(model, batch, target, quantile=0.2, **QUICK_CHECK)
    assert cal.kind == "gaussian" and cal.defense == f"gaussian:{cal.noise!r}" and not cal.met_without_noise
    assert cal.noise_std == pytest.approx(math.sqrt(cal.noise))
    # a fresh prediction at the calibrated variance: its 20 % quantile is the target, and 1 % less noise misses it
    assert torch.quantile(_risk(model, batch, cal.defense), 0.2).item() == pytest.approx(target, rel=1e-6)
    assert torch.quantile(_risk(model, batch, f"gaussian:{0.99 * cal.noise}"), 0.2).item() < target
    assert cal.quantile_rmse == pytest.approx(target, rel=1e-9) and cal.exact and cal.epsilon is None
    # the attack's check on the most exposed sample
    (check,) = cal.checks
    exposed = torch.argmin(_risk(model, batch, cal.defense)).item()
    assert check.index == exposed and check.label == int(batch.labels[exposed])
    assert check.repredicted_rmse == pytest.approx(check.predicted_rmse, rel=1e-6)
    assert check.local_rmse == pytest.approx(check.draw_predicted_rmse, rel=0.1)  # linear regime: the attack lands there
    assert check.global_rmse > 0
    assert cal.table.num_rows == len(batch)


def test_dp_calibration_reports_the_noise_multiplier_and_its_epsilon(problem):
    model, batch = problem
    clip = 1e3  # no sample is clipped: the risk is the noise's alone
    unit = _risk(model, batch, f"dp:clip={clip},noise=1.0,batch=4")
    target = 0.1 * unit.min().item() * 1e-3
    cal = calibrate(model, batch, target, quantile=0.0, defense="dp", clip=clip, batch=4, check_samples=0, **TRAINING)
    assert cal.kind == "dp" and cal.noise == pytest.approx(1e-4, rel=1e-6)  # quantile 0: the most exposed sample
    assert cal.defense == f"dp:clip={clip!r},noise={cal.noise!r},batch=4" and cal.noise_std == pytest.approx(cal.noise * clip)
    assert cal.epsilon == epsilon_spent(cal.noise, TrainingConfig(**TRAINING)) and cal.epsilon > 1e3  # tiny z: no privacy
    assert cal.training.accountant == "rdp" and cal.checks == []


def test_dp_under_the_cosine_attack_is_checked_by_the_attack(problem):
    model, batch = problem
    g = torch.stack([torch.cat([p.reshape(-1) for p in torch.autograd.grad(
        torch.nn.functional.cross_entropy(model(batch.images[n : n + 1]), batch.labels[n : n + 1]), model.parameters())])
        for n in range(len(batch))])
    clip = 0.25 * g.norm(dim=1).min().item()  # every sample clipped to a quarter of its norm or less
    cal = calibrate(model, batch, 0.02, quantile=0.0, defense="dp", clip=clip, objective="cosine", **TRAINING,
                    **QUICK_CHECK)
    (check,) = cal.checks
    assert check.repredicted_rmse == pytest.approx(check.predicted_rmse, rel=1e-6)
    assert check.local_rmse == pytest.approx(check.draw_predicted_rmse, rel=0.1)  # the attack lands on the prediction
    assert check.draw_predicted_rmse == pytest.approx(check.predicted_rmse, rel=0.5)  # one draw near the expectation


def test_dp_clipping_bias_alone_can_meet_the_target(problem):
    model, batch = problem
    bias = predicted_risk(InversionInfluence(model, batch.images, batch.labels, per_sample=True),
                          "dp:clip=1e-3,noise=0").bias_rmse
    cal = calibrate(model, batch, 0.5 * bias.min().item(), quantile=0.0, defense="dp", clip=1e-3, check_samples=0,
                    **TRAINING)
    assert cal.met_without_noise and cal.noise == 0 and cal.epsilon == math.inf


def test_a_target_out_of_reach_and_bad_input_name_the_argument(problem):
    model, batch = problem
    with pytest.raises(ValueError, match=r"target_rmse=1e\+06 is out of reach.*max_noise=1"):
        calibrate(model, batch, 1e6, check_samples=0)
    cases = [
        (dict(target_rmse=0.0), "target_rmse"),
        (dict(target_rmse=0.1, quantile=1.0), "quantile"),
        (dict(target_rmse=0.1, defense="laplace"), "defense"),
        (dict(target_rmse=0.1, defense="dp", clip=1.0, steps=10, delta=1e-5), "sample_rate"),
        (dict(target_rmse=0.1, clip=1.0), "clip"),
        (dict(target_rmse=0.1, batch=8), "batch"),
        (dict(target_rmse=0.1, defense="dp", clip=-1.0, **TRAINING), "clip"),
        (dict(target_rmse=0.1, defense="dp", clip=1.0, accountant="gdp", **TRAINING), "accountant"),
        (dict(target_rmse=0.1, max_noise=0.0), "max_noise"),
        (dict(target_rmse=0.1, check_samples=-1), "check_samples"),
    ]
    for kwargs, argument in cases:
        with pytest.raises(ValueError, match=argument):
            calibrate(model, batch, **kwargs)


def test_risk_of_budget_is_the_audit_at_opacus_noise_multiplier(problem):
    model, batch = problem
    res = risk_of_budget(model, batch, epsilon=2.0, delta=1e-5, sample_rate=0.01, steps=500, clip=1.0, batch=8)
    from opacus.accountants.utils import get_noise_multiplier

    z = get_noise_multiplier(target_epsilon=2.0, target_delta=1e-5, sample_rate=0.01, steps=500)
    assert res.noise_multiplier == z and res.defense == f"dp:clip=1.0,noise={z!r},batch=8"
    assert 2.0 - 0.01 <= res.epsilon <= 2.0
    rmse = _risk(model, batch, res.defense)
    assert list(res.quantiles) == [0.05, 0.25, 0.5]
    for q, value in res.quantiles.items():
        assert value == pytest.approx(torch.quantile(rmse, q).item(), rel=1e-6)
    with pytest.raises(ValueError, match="epsilon=1e-09: no noise multiplier reaches it"):
        risk_of_budget(model, batch, epsilon=1e-9, delta=1e-5, sample_rate=1.0, steps=10, clip=1.0)
    with pytest.raises(ValueError, match="sample_rate"):
        risk_of_budget(model, batch, epsilon=2.0, delta=1e-5, sample_rate=1.5, steps=500, clip=1.0)


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_accounting_is_opacus_both_ways(accountant):
    from opacus.accountants import create_accountant

    config = TrainingConfig(0.02, 300, 1e-5, accountant)
    reference = create_accountant(accountant)
    for _ in range(300):
        reference.step(noise_multiplier=1.1, sample_rate=0.02)
    assert epsilon_spent(1.1, config) == pytest.approx(reference.get_epsilon(delta=1e-5), rel=1e-9)
    assert epsilon_spent(2.0, config) < epsilon_spent(1.1, config) and epsilon_spent(0.0, config) == math.inf
    z = noise_multiplier_for(3.0, config)
    assert 3.0 - 0.01 <= epsilon_spent(z, config) <= 3.0


def test_accounting_bad_input_and_missing_opacus(monkeypatch):
    for kwargs, argument in [(dict(sample_rate=0.0), "sample_rate"), (dict(sample_rate=1.5), "sample_rate"),
                             (dict(steps=0), "steps"), (dict(delta=1.0), "delta"), (dict(accountant="x"), "accountant")]:
        with pytest.raises(ValueError, match=argument):
            TrainingConfig(**{**TRAINING, **kwargs})
    with pytest.raises(ValueError, match="noise_multiplier"):
        epsilon_spent(-1.0, TrainingConfig(**TRAINING))
    with pytest.raises(ValueError, match="epsilon"):
        noise_multiplier_for(0.0, TrainingConfig(**TRAINING))
    with pytest.raises(ValueError, match=r"noise_multiplier=0.00065: the prv accountant needs more memory.*'rdp'"):
        epsilon_spent(6.5e-4, TrainingConfig(**TRAINING, accountant="prv"))  # Opacus's PRV mesh: 194 TiB
    monkeypatch.setitem(sys.modules, "opacus", None)
    with pytest.raises(ImportError, match=r"i2f_fast\[dp\]"):
        epsilon_spent(1.0, TrainingConfig(**TRAINING))


QUICK_COMMAND = ["--samples", "4", "--image-size", "8", "--model", "mlp", "--quiet"]


def test_calibrate_command_writes_json_and_plot(tmp_path, capsys):
    from i2f_fast.cli import main

    out = tmp_path / "cal"
    argv = ["calibrate", "--out", str(out), "--target-rmse", "0.05", "--quantile", "0.25", "--check-samples", "1",
            "--iterations", "5", "--restarts", "1", "--local-iterations", "50", "--start", "5", *QUICK_COMMAND]
    assert main(argv) == 0
    result = json.loads((out / "calibrate.json").read_text())
    cal = result["calibrated"]
    assert cal["defense"].startswith("gaussian:") and cal["quantile_rmse"] == pytest.approx(0.05, rel=1e-9)
    assert len(result["rows"]) == 4 and len(result["checks"]) == 1 and len(result["levels"]) == 5
    assert [r["index"] for r in result["rows"]] == [5, 6, 7, 8] and 5 <= result["checks"][0]["index"] <= 8
    exposed = min(result["rows"], key=lambda r: r["rmse"])
    assert result["checks"][0]["index"] == exposed["index"] and result["checks"][0]["label"] == exposed["label"]
    assert (out / "calibrate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"
    printed = capsys.readouterr().out
    assert "← calibrated" in printed and "attack from x" in printed

    dp = ["calibrate", "--out", str(out), "--target-rmse", "0.05", "--defense", "dp", "--objective", "cosine", "--clip",
          "1e-2", "--sample-rate", "0.01", "--steps", "100", "--delta", "1e-5", "--check-samples", "0", *QUICK_COMMAND]
    assert main(dp) == 0
    result = json.loads((out / "calibrate.json").read_text())
    cal = result["calibrated"]
    assert cal["defense"].startswith("dp:clip=0.01,") and not cal["met_without_noise"]  # cosine: blind to clipping
    assert cal["epsilon"] == pytest.approx(epsilon_spent(cal["noise"], TrainingConfig(0.01, 100, 1e-5)))
    assert "spends ε" in capsys.readouterr().out


def test_calibrate_command_bad_flags_name_the_flag(tmp_path):
    from i2f_fast.cli import main

    base = ["calibrate", "--out", str(tmp_path / "x"), "--target-rmse", "0.05", *QUICK_COMMAND]
    for extra, flag in [(["--defense", "dp", "--clip", "1"], "--sample-rate"), (["--clip", "1"], "--clip"),
                        (["--quantile", "1"], "--quantile"), (["--check-samples", "-1"], "--check-samples"),
                        (["--local-iterations", "0"], "--local-iterations")]:
        with pytest.raises(SystemExit, match=flag):
            main(base + extra)
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match="--out"):
        main(["calibrate", "--out", str(tmp_path / "file"), "--target-rmse", "0.05"])
    with pytest.raises(SystemExit, match="out of reach"):
        main(base + ["--target-rmse", "1e6", "--check-samples", "0"])


def test_any_dataset_of_image_label_pairs_gives_the_same_calibration(problem):
    model, batch = problem
    pairs = torch.utils.data.TensorDataset(batch.images, batch.labels)
    kwargs = dict(target_rmse=0.05, quantile=0.5, check_samples=1, restarts=1, iterations=5, local_iterations=20)
    from_batch, from_pairs = calibrate(model, batch, **kwargs), calibrate(model, pairs, **kwargs)
    assert from_pairs.noise == pytest.approx(from_batch.noise, rel=1e-9)
    assert from_pairs.checks[0].index == from_batch.checks[0].index
    assert from_pairs.checks[0].repredicted_rmse == pytest.approx(from_batch.checks[0].repredicted_rmse, rel=1e-9)


def test_opacus_and_flwr_are_imported_only_when_used():
    import subprocess

    code = ("import sys, i2f_fast.audit.calibrate, i2f_fast.integrations.flower, i2f_fast.cli; "
            "print(sorted(m for m in ('opacus', 'flwr') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
