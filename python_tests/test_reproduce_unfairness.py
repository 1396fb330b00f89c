"""E7 (unfairness, blog Fig. 2): the --quick configuration through the module's functions."""
import json

import pytest
import torch

from i2f_fast.experiments.reproduce import unfairness


def test_stratified_subset_takes_evenly_ranked_members_of_every_class():
    labels = [0, 1, 0, 1, 0, 1, 0, 2]
    risk = [4.0, 1.0, 3.0, 2.0, 2.0, 3.0, 1.0, 9.0]
    # class 0 ranked by risk: positions 6, 4, 2, 0 → ranks 0.5·4/2 = 1 and 1.5·4/2 = 3; class 2 has one member
    assert unfairness.stratified_subset(labels, risk, 2) == [0, 1, 4, 5, 7]


def test_quick_unfairness_structure_and_ranking(tmp_path):
    torch.set_num_threads(1)
    config = unfairness.options(quick=True)
    result = unfairness.run(config, tmp_path, progress=False)
    json.dumps(result, allow_nan=False)
    n = config["samples"]
    for key in ("samples", "labels", "predicted_rmse", "paper_eps_rmse", "draw_rmse", "lambda_max"):
        assert len(result[key]) == n, key
    assert sum(stats["count"] for stats in result["per_class"].values()) == n
    sub = result["subset"]
    assert sorted(set(sub["labels"])) == sorted(set(result["labels"]))  # every class is attacked
    # main effect: the risk is unequal, and the attack ranks the digits like the prediction
    assert max(result["predicted_rmse"]) > 2 * min(result["predicted_rmse"])
    assert sub["spearman_expected"] > 0
    unfairness.plot(result, config, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Spearman" in unfairness.table(result, config)
    assert unfairness.verdict(result, config)["status"] in ("holds", "partly", "does not hold")


def test_a_dataset_without_the_test_split_is_a_one_line_error_naming_the_flag(tmp_path):
    config = dict(unfairness.options(quick=True), dataset="natural")  # 1000 patches: no samples from 1597 on
    with pytest.raises(ValueError, match="--dataset natural: start"):
        unfairness.run(config, tmp_path, progress=False)
