"""E2 (pruning, Fig. 13): the --quick configuration through the module's functions."""
import json

import torch

from i2f_fast.experiments.reproduce import pruning


def test_quick_pruning_structure_and_trend(tmp_path):
    torch.set_num_threads(1)
    config = pruning.options(quick=True)
    result = pruning.run(config, tmp_path, progress=False)
    json.dumps(result, allow_nan=False)
    K, N = len(config["ratios"]), config["samples"]
    for key in ("delta_norm", "predicted_rmse", "paper_eps_rmse", "bound_rmse", "attack_rmse", "attack_mse", "attack_ssim"):
        assert len(result[key]) == K and all(len(row) == N for row in result[key]), key
    med = result["median"]
    # main effect: more pruning, larger perturbation, larger predicted and measured error, lower SSIM
    assert med["predicted_rmse"][-1] > med["predicted_rmse"][0]
    assert med["attack_rmse"][-1] > med["attack_rmse"][0]
    assert med["attack_ssim"][-1] < med["attack_ssim"][0]
    # the bound and the paper's ε = 1 sit below the calibrated prediction
    assert all(b <= p for b, p in zip(med["bound_rmse"], med["predicted_rmse"]))
    assert all(e < p for e, p in zip(med["paper_eps_rmse"], med["predicted_rmse"]))
    pruning.plot(result, config, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(pruning.table(result, config).splitlines()) == K + 3
    verdict = pruning.verdict(result, config)
    assert verdict["status"] in ("holds", "partly", "does not hold") and "Spearman" in verdict["measured"]
    # every attack was kept: a second run reuses them and gives the same numbers
    assert pruning.run(config, tmp_path, progress=False) == result
