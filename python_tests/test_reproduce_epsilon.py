"""E5 epsilon (--quick): the JSON's structure; I²F falls as ε grows, the small-ε end meets the converged
attack and the paper's ε = 1 sits far below it."""
from i2f_fast.experiments.reproduce import epsilon, runner


def test_epsilon_quick_damping_lowers_the_prediction_below_the_attack(tmp_path):
    record, table = runner.run_experiment("epsilon", tmp_path, quick=True, progress=False)
    result, config = record["result"], record["config"]
    samples, grid = config["samples"], result["eps_grid"]
    assert grid == sorted(grid) and 1.0 in grid and len(result["i2f_rmse"]) == samples
    for key in ("local_rmse", "global_rmse", "calibrated_rmse", "lower_bound_rmse", "lambda_max"):
        assert len(result[key]) == samples and all(v > 0 for v in result[key])
    for n, row in enumerate(result["i2f_rmse"]):
        assert len(row) == len(grid)
        assert all(a >= b for a, b in zip(row, row[1:])), "I²F must not grow with ε"
        paper = row[grid.index(1.0)]
        assert paper < result["local_rmse"][n] / 5, "the paper's ε = 1 damps the prediction far below the attack"
        assert 0.5 < result["calibrated_rmse"][n] / result["local_rmse"][n] < 2
    assert record["verdict"]["status"] in ("partly", "does not hold", "holds")
    assert "ε = 1" in record["verdict"]["measured"] and "I²F ε=1" in table
    assert epsilon.NAME == "epsilon"
