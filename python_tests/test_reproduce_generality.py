"""E1 generality (--quick): the JSON's structure; the attack's RMSE stays above the paper's lower bound
and the calibrated prediction tracks it across models and attacks."""
from i2f_fast.experiments.reproduce import generality, runner


def test_generality_quick_attack_is_above_the_bound_and_tracks_the_prediction(tmp_path):
    record, table = runner.run_experiment("generality", tmp_path, quick=True, progress=False)
    result, config = record["result"], record["config"]
    points = result["points"]
    expected = len(config["models"]) * len(config["attacks"]) * len(config["variances"]) * config["samples"]
    assert len(points) == expected
    assert {p["model"] for p in points} == set(config["models"]) and {p["attack"] for p in points} == {"dlg", "gs"}
    for p in points:
        assert set(generality.KEYS) <= set(p) and all(p[k] > 0 for k in generality.KEYS)
        assert p["attack_rmse"] >= p["lower_bound_rmse"], "the lower bound must stay below the attack"
        assert p["paper_rmse"] < p["predicted_rmse"], "ε = 1 damps the prediction"
    summary = generality._summary(points)
    assert summary["spearman_predicted"] > 0, "models with larger predicted error must be attacked less accurately"
    assert record["verdict"]["status"] in ("holds", "partly") and "lower bound" in record["verdict"]["measured"]
    assert "I²F_lb" in table


def test_generality_verdict_and_table_with_too_few_points_for_a_correlation():
    point = dict(dataset="digits", model="resnet18", attack="gs", variance=1e-4, sample=0, label=0,
                 attack_rmse=0.3, predicted_rmse=0.2, paper_rmse=0.1, lower_bound_rmse=0.01)
    result = dict(points=[point, dict(point, attack="dlg", attack_rmse=0.25)])
    config = generality.options(True)
    verdict = generality.verdict(result, config)
    assert "Spearman n/a" in verdict["measured"] and "2/2" in verdict["measured"]
    assert "resnet18" in generality.table(result, config)
