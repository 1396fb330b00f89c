"""The i2f-fast command: demo writes its table, JSON and plot; env reports the backends."""
import json

import pytest

from i2f_fast.cli import COLUMNS, main
from i2f_fast.experiments.compare_job import COLUMNS as COMPARE_COLUMNS
from i2f_fast.influence import DEFAULT_EPS_REL


def test_demo_writes_results_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["demo", "--out", str(out), "--samples", "2", "--variances", "1e-4", "1e-3", "--seed", "1"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["samples"] == 2 and result["config"]["num_params"] == 17038
    rows = result["rows"]
    assert len(rows) == 4 and set(rows[0]) == set(COLUMNS)
    for r in rows:
        assert r["i2f"] > 0 and r["lambda_max"] > 0 and r["rmse"] > 0 and r["expected_rmse"] > 0
        assert r["i2f"] >= r["jt_delta_norm"] / (r["lambda_max"] + 1.0) * (1 - 1e-4)
    by_sample = {}
    for r in rows:
        by_sample.setdefault(r["sample"], []).append(r)
    for low, high in by_sample.values():
        assert low["i2f"] < high["i2f"], "more noise must predict a larger error"
        assert high["expected_rmse"] / low["expected_rmse"] == pytest.approx(10**0.5, rel=1e-4)  # linear in σ
    assert result["config"]["eps_rel"] == 1e-8 and result["config"]["method"] == "spectral"
    png = (out / "i2f_vs_noise.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    printed = capsys.readouterr().out
    assert "I²F_lb" in printed and "lenet (17,038 parameters)" in printed


def test_env_lists_backends(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "triton" in out
    assert "i2f_fast._C " in out and "i2f_fast._C_cuda" in out
    assert "reference  cpu   available" in out
    assert "picks" in out and "for cpu tensors" in out
    assert "lenet      10 nodes, 10 hand-written rules, 0 generic" in out  # the engine covers the paper's model


def test_env_reports_a_bad_backend_variable_instead_of_failing(capsys, monkeypatch):
    monkeypatch.setenv("I2F_FAST_BACKEND", "fastest")
    assert main(["env"]) == 0
    assert "invalid, I2F_FAST_BACKEND must be one of" in capsys.readouterr().out


def test_bad_arguments_exit_with_a_message():
    with pytest.raises(SystemExit):
        main(["demo", "--variances", "-1"])
    with pytest.raises(SystemExit, match="--samples must be >= 1"):
        main(["demo", "--samples", "0"])
    with pytest.raises(SystemExit):  # exclusive
        main(["demo", "--eps", "1", "--eps-rel", "1e-6"])
    with pytest.raises(SystemExit):
        main(["demo", "--eps-rel", "0"])


def test_attack_writes_grid_json_and_prints_metrics(tmp_path, capsys):
    out = tmp_path / "attack"
    argv = ["attack", "--out", str(out), "--image-size", "12", "--iterations", "20", "--restarts", "2",
            "--defense", "gaussian", "--strength", "1e-4", "--infer-labels", "--quiet", "--seed", "1"]
    assert main(argv) == 0
    result = json.loads((out / "attack.json").read_text())
    assert result["config"]["restarts"] == 2 and len(result["restarts"]) == 2
    assert result["labels_used"] == result["labels"]
    assert result["defense_stats"]["delta_norm"] > 0
    row = result["restarts"][result["best_restart"]]
    assert set(row) == {"restart", "matching_loss", "mse", "rmse", "rmse_pixels", "psnr", "ssim"}
    assert len(result["history"]["objective"]) == 2
    png = (out / "attack.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "PSNR dB" in printed and "defense gaussian 0.0001" in printed


def test_compare_writes_table_correlations_scatter_and_json(tmp_path, capsys):
    out = tmp_path / "compare"
    argv = ["compare", "--out", str(out), "--samples", "2", "--image-size", "12", "--iterations", "15",
            "--restarts", "1", "--strengths", "1e-8", "1e-6", "--quiet"]
    assert main(argv) == 0
    result = json.loads((out / "compare.json").read_text())
    cfg, rows = result["config"], result["rows"]
    assert cfg["attack"] == "dlg" and cfg["objective"] == "l2" and cfg["box"] and cfg["eps"] is None
    assert cfg["eps_rel"] == DEFAULT_EPS_REL
    assert len(rows) == 4 and set(rows[0]) == set(COMPARE_COLUMNS)
    for r in rows:
        assert r["i2f"] > 0 and r["attack_rmse"] > 0 and r["i2f_lower_bound"] > 0 and r["eps"] > 0
        assert r["i2f_rmse"] == pytest.approx(r["i2f"] / 12)
        assert r["ratio"] == pytest.approx(r["attack_rmse"] / r["i2f_rmse"])
    middle = sorted(r["ratio"] for r in rows)[1:3]
    assert result["median_ratio"] == pytest.approx(sum(middle) / 2)
    corr = result["correlation_log_i2f_vs_log_rmse"]
    assert corr["n"] == 4 and -1 <= corr["pearson"] <= 1 and -1 <= corr["spearman"] <= 1
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "Pearson" in printed and "Spearman" in printed and "median attack/predicted" in printed
    assert "I²F_lb" in printed


def test_compare_gs_uses_the_cosine_prediction_and_an_absolute_eps(tmp_path):
    out = tmp_path / "compare"
    argv = ["compare", "--out", str(out), "--samples", "1", "--image-size", "12", "--iterations", "5",
            "--restarts", "1", "--strengths", "1e-6", "--attack", "gs", "--eps", "1", "--no-box", "--quiet"]
    assert main(argv) == 0
    cfg = json.loads((out / "compare.json").read_text())["config"]
    assert cfg["objective"] == "cosine" and cfg["eps"] == 1 and cfg["eps_rel"] is None and not cfg["box"]
    with pytest.raises(SystemExit):
        main(["compare", "--eps", "1", "--eps-rel", "1e-6"])


def test_attack_commands_reject_bad_settings():
    with pytest.raises(SystemExit):
        main(["attack", "--defense", "magic"])
    with pytest.raises(SystemExit, match="--iterations must be >= 1"):
        main(["attack", "--iterations", "0"])
    with pytest.raises(SystemExit, match="needs a strength"):
        main(["attack", "--defense", "gaussian", "--image-size", "12", "--iterations", "1", "--quiet"])
