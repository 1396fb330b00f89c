"""E8 efficiency (--quick): the JSON's structure (every measure timed, interleaved rounds) and the paper-scale
attack costing more than the prediction. Timings are read only as ratios, never against fixed values."""
from i2f_fast.experiments.reproduce import efficiency, runner


def test_efficiency_quick_times_every_measure_and_the_attack_costs_more(tmp_path):
    record, table = runner.run_experiment("efficiency", tmp_path, quick=True, progress=False)
    result, config = record["result"], record["config"]
    assert [m["model"] for m in result["models"]] == config["models"] and result["threads"] == 1
    for m in result["models"]:
        assert m["rounds"] == config["rounds"] and m["num_params"] > 0
        for measure in efficiency.MEASURES:
            assert len(m["all_seconds"][measure]) == config["rounds"] and m["seconds"][measure] > 0
        assert m["attack_full"] == m["attack_per_iteration"] * config["iterations"]
        assert m["attack_full"] > m["seconds"]["bound"], "24,000 attack iterations cost more than one Lanczos bound"
    assert record["verdict"]["status"] in ("holds", "partly") and "bound" in table
