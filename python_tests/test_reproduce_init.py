"""E4 (initialisation, Fig. 7): the --quick configuration through the module's functions."""
import json

import torch

from i2f_fast.experiments.reproduce import init


def test_quick_init_structure_and_ordering(tmp_path):
    torch.set_num_threads(1)
    config = init.options(quick=True)
    result = init.run(config, tmp_path, progress=False)
    json.dumps(result, allow_nan=False)
    assert list(result["schemes"]) == ["uniform", "normal", "kaiming", "xavier"]
    for rows in result["schemes"].values():
        for key in ("predicted_rmse", "paper_eps_rmse", "expected_sq", "lambda_max", "attack_rmse", "attack_mse"):
            assert len(rows[key]) == len(config["seeds"]) and all(len(r) == config["samples"] for r in rows[key]), key
    med = {scheme: rows["median"]["predicted_rmse"] for scheme, rows in result["schemes"].items()}
    # main effect (the paper's): kaiming / xavier predicted safer than uniform / normal
    assert min(med["kaiming"], med["xavier"]) > max(med["uniform"], med["normal"])
    init.plot(result, config, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(init.table(result, config).splitlines()) == 6
    verdict = init.verdict(result, config)
    assert verdict["status"] in ("holds", "partly", "does not hold") and "kaiming" in verdict["measured"]
