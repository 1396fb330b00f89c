"""The i2f-fast command: demo writes its table, JSON and plot; env reports the backends."""
import json

import pytest

from i2f_fast.cli import COLUMNS, main


def test_demo_writes_results_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["demo", "--out", str(out), "--samples", "2", "--variances", "1e-4", "1e-3", "--seed", "1"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["samples"] == 2 and result["config"]["num_params"] == 17038
    rows = result["rows"]
    assert len(rows) == 4 and set(rows[0]) == set(COLUMNS)
    for r in rows:
        assert r["i2f"] > 0 and r["lambda_max"] > 0 and r["cg_iterations"] > 0
        assert r["i2f"] >= r["jt_delta_norm"] / (r["lambda_max"] + 1.0) * (1 - 1e-4)
    by_sample = {}
    for r in rows:
        by_sample.setdefault(r["sample"], []).append(r["i2f"])
    assert all(v[0] < v[1] for v in by_sample.values()), "more noise must predict a larger error"
    png = (out / "i2f_vs_noise.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    printed = capsys.readouterr().out
    assert "I²F_lb" in printed and "lenet (17,038 parameters)" in printed


def test_env_lists_backends(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "reference  available" in out


def test_bad_arguments_exit_with_a_message():
    with pytest.raises(SystemExit):
        main(["demo", "--variances", "-1"])
    with pytest.raises(SystemExit, match="--samples must be >= 1"):
        main(["demo", "--samples", "0"])
