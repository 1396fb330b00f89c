"""The GPU suite's CPU-side parts: it imports without CUDA, parses its arguments and plans its steps
(the measurements themselves need a GPU and run only in `make gpu-suite`)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import gpu_suite  # noqa: E402


def test_arguments_and_the_step_plan(capsys):
    args = gpu_suite.parse_args(["--skip", "build", "cpu-bench", "--budget-s", "300"])
    assert args.skip == ["build", "cpu-bench"] and args.budget_s == 300 and not args.measure
    assert sum(gpu_suite.STEP_LIMITS.values()) < 600  # the whole suite fits in 10 minutes
    assert gpu_suite.main(["--dry-run"]) == 0
    plan = capsys.readouterr().out.splitlines()
    assert len(plan) == len(gpu_suite.STEPS)
    assert plan[0].startswith("I2F_FAST_CUDA=1") and "pip install" in plan[0]
    assert "pytest python_tests" in plan[1] and "--measure" in plan[2] and "run.py --quick" in plan[3]


def test_bad_arguments_are_rejected():
    with pytest.raises(SystemExit):
        gpu_suite.parse_args(["--skip", "everything"])
    with pytest.raises(SystemExit):
        gpu_suite.parse_args(["--budget-s", "0"])


def test_measure_needs_a_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_suite.main(["--measure"]) == 2
