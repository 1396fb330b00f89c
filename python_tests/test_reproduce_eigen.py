"""E3 eigen (--quick): the JSON's structure, and the attack's error falling with the eigenvalue."""
from i2f_fast.experiments.reproduce import eigen, runner


def test_eigen_quick_attack_error_falls_with_the_eigenvalue(tmp_path):
    record, table = runner.run_experiment("eigen", tmp_path, quick=True, progress=False)
    result, config = record["result"], record["config"]
    scales, samples, directions = len(config["scales"]), config["samples"], len(result["indices"])
    assert result["indices"][0] == 0 and result["indices"][-1] == config["top_k"] - 1
    for key in ("attack_rmse", "predicted_rmse", "paper_rmse", "lower_bound_rmse", "closed_form_rmse", "inverse_sqrt_rmse"):
        assert len(result[key]) == scales and all(len(s) == samples and len(s[0]) == directions for s in result[key])
    for lam in result["eigenvalues"]:
        assert lam == sorted(lam, reverse=True) and lam[-1] > 0
    for s in range(scales):
        for n in range(samples):
            attack = result["attack_rmse"][s][n]
            assert attack[0] < attack[-1], "the largest eigenvalue's direction must be the least protective"
            # the paper's ε = 1 damps the prediction below the calibrated one
            assert all(p < c for p, c in zip(result["paper_rmse"][s][n], result["predicted_rmse"][s][n]))
    assert record["verdict"]["status"] in ("holds", "partly") and "Spearman" in record["verdict"]["measured"]
    assert "c/√λ" in table and (tmp_path / "eigen" / "figure.png").read_bytes()[:4] == b"\x89PNG"
    assert eigen.NAME == "eigen" and eigen.PAPER == "Fig. 5"
