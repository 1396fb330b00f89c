"""E6 (training): the --quick configuration through the module's functions, and resuming from checkpoints."""
import json

import pytest
import torch

from i2f_fast.experiments.reproduce import training


def test_quick_training_structure_trend_and_resume(tmp_path):
    torch.set_num_threads(1)
    config = training.options(quick=True)
    result = training.run(config, tmp_path, progress=False)
    json.dumps(result, allow_nan=False)
    E, N = len(config["epochs"]), config["samples"]
    assert result["epochs"] == sorted(config["epochs"])
    for key in ("predicted_rmse", "paper_eps_rmse", "lambda_max", "attack_rmse"):
        assert len(result[key]) == E and all(len(row) == N for row in result[key]), key
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == sorted(f"epoch{e}.pt" for e in config["epochs"])
    # main effect: the model learns and, as it does, both the predicted and the attack's error grow
    assert result["test_accuracy"][-1] > result["test_accuracy"][0] + 0.2
    med = result["median"]
    assert med["predicted_rmse"][-1] > med["predicted_rmse"][0] and med["attack_rmse"][-1] > med["attack_rmse"][0]
    assert training.verdict(result, config)["status"] in ("holds", "partly", "does not hold")
    training.plot(result, config, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(training.table(result, config).splitlines()) == E + 2
    # an interrupted run resumes from the checkpoints it finished in order and retrains the rest identically
    (tmp_path / "checkpoints" / f"epoch{sorted(config['epochs'])[1]}.pt").unlink()
    assert training.run(config, tmp_path, progress=False) == result
    assert len(list((tmp_path / "checkpoints").iterdir())) == E


def test_training_refuses_test_samples_inside_the_training_split(tmp_path):
    config = dict(training.options(quick=True), start=10)
    with pytest.raises(ValueError, match="--dataset digits: start"):
        training.run(config, tmp_path, progress=False)
