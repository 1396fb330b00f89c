"""The reproduce runner and command: registry, files, index, resume, overrides and one-line errors
(a tiny stand-in experiment module keeps these tests fast; each experiment has its own test file)."""
import json
import sys
import types

import pytest

from i2f_fast.cli import main
from i2f_fast.experiments import reproduce
from i2f_fast.experiments.reproduce import runner
from i2f_fast.experiments.reproduce.common import ReproduceInputError, load_batch, model_for

FAKE = "i2f_fast.experiments.reproduce.training"  # E6: any name of the list works


def _fake_module(calls):
    module = types.ModuleType(FAKE)
    module.NAME, module.PAPER, module.CLAIM = "training", "Fig. X", "numbers grow"

    def options(quick):
        return dict(dataset="digits", root=None, iterations=3 if quick else 30, seed=0, model="lenet", sizes=[1, 2])

    def run(config, workdir, progress=True):
        calls.append(dict(config))
        batch = load_batch(config, 2)
        model_for(config["model"], batch, seed=config["seed"])
        return dict(values=[config["iterations"] * s for s in config["sizes"]])

    def plot(result, config, path):
        path.write_bytes(b"\x89PNG fake")

    def table(result, config):
        return "values " + " ".join(map(str, result["values"]))

    def verdict(result, config):
        grows = result["values"][1] > result["values"][0]
        return dict(status="holds" if grows else "does not hold", measured=f"values {result['values']}")

    for f in (options, run, plot, table, verdict):
        setattr(module, f.__name__, f)
    return module


@pytest.fixture
def fake(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, FAKE, _fake_module(calls))
    return calls


def test_registry_lists_the_eight_experiments_and_rejects_unknown_names():
    assert reproduce.EXPERIMENTS[0] == "generality" and reproduce.EXPERIMENTS[-1] == "efficiency"
    assert len(reproduce.EXPERIMENTS) == 8 and reproduce.PAPER_IDS["eigen"] == "E3"
    with pytest.raises(ValueError, match="unknown experiment 'fig5'"):
        reproduce.load("fig5")


def test_a_missing_module_is_reported_as_not_available(monkeypatch):
    monkeypatch.setitem(sys.modules, FAKE, None)  # import of this module fails like a missing file
    with pytest.raises(reproduce.ExperimentUnavailable, match="training \\(E6\\) is not available in this build"):
        reproduce.load("training")


def test_run_writes_result_figure_and_resumes(tmp_path, fake):
    record, table = runner.run_experiment("training", tmp_path, quick=True, overrides=dict(seed=3), progress=False)
    stored = json.loads((tmp_path / "training" / "result.json").read_text())
    assert set(stored) == {"experiment", "id", "paper", "claim", "config", "result", "verdict", "versions"}
    assert stored["config"]["seed"] == 3 and stored["config"]["quick"] is True and stored["config"]["iterations"] == 3
    assert stored["result"] == {"values": [3, 6]} and stored["verdict"]["status"] == "holds"
    assert (tmp_path / "training" / "figure.png").is_file() and table == "values 3 6"
    again, _ = runner.run_experiment("training", tmp_path, quick=True, overrides=dict(seed=3), resume=True)
    assert again["resumed"] and len(fake) == 1  # same configuration: not run again
    runner.run_experiment("training", tmp_path, quick=True, overrides=dict(seed=4), resume=True)
    assert len(fake) == 2  # another configuration: run


def test_overrides_reach_the_configuration(fake):
    config = runner.configure("training", True, dict(dataset="natural", iterations=7, model="linear", root=None))
    assert config["dataset"] == "natural" and config["iterations"] == 7 and config["model"] == "linear"
    with pytest.raises(ReproduceInputError, match="--iterations must be an integer >= 1"):
        runner.configure("training", True, dict(iterations=0))


def test_all_writes_an_index_with_verdicts_and_unavailable_experiments(tmp_path, fake, monkeypatch):
    for name in reproduce.EXPERIMENTS:
        if name != "training":
            monkeypatch.setitem(sys.modules, f"i2f_fast.experiments.reproduce.{name}", None)
    printed = []
    entries = runner.run_all(tmp_path, quick=True, progress=False, echo=printed.append)
    assert [e["name"] for e in entries] == list(reproduce.EXPERIMENTS)
    index = (tmp_path / "index.md").read_text()
    assert "![training](training/figure.png)" in index and "**Verdict:** holds: values [3, 30]" not in index
    assert "holds: values [3, 6]" in index and "not available in this build" in index
    assert any("E6 training" in p for p in printed)


def test_cli_errors_are_one_line(tmp_path, fake):
    with pytest.raises(SystemExit, match="unknown experiment 'nope'"):
        main(["reproduce", "nope", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as err:
        main(["reproduce", "training", "--quick", "--dataset", "mnist", "--root", str(tmp_path), "--out", str(tmp_path)])
    message = str(err.value)
    assert "\n" not in message and "--dataset mnist --root" in message and "is not under" in message


def test_cli_runs_one_experiment(tmp_path, fake, capsys):
    assert main(["reproduce", "training", "--quick", "--quiet", "--out", str(tmp_path), "--iterations", "5"]) == 0
    out = capsys.readouterr().out
    assert "E6 training (Fig. X)" in out and "values 5 10" in out and "verdict: holds" in out


def test_a_model_that_does_not_fit_the_data_names_the_flag(monkeypatch):
    import torch.nn as nn

    from i2f_fast.experiments.reproduce import common

    # the registered models adapt to any (C, H, W); a model with a fixed input size (e.g. one restored
    # from a checkpoint made on other data) must fail with the flags named, not with a shape error
    monkeypatch.setattr(common, "build_model", lambda name, shape, classes, init=None, seed=0: nn.Sequential(
        nn.Flatten(), nn.Linear(784, classes)))
    batch = load_batch(dict(dataset="natural", root=None), 1)
    with pytest.raises(ReproduceInputError, match=r"--model lenet does not fit --dataset natural \(images \(3, 32, 32\)\)"):
        model_for("lenet", batch)
    assert model_for("lenet", load_batch(dict(dataset="digits", root=None), 1))(batch.images[:1, :1, :28, :28]).shape == (1, 10)


def test_a_failing_experiment_is_recorded_and_the_others_still_run(tmp_path, fake, monkeypatch):
    broken = _fake_module([])
    broken.__name__ = "i2f_fast.experiments.reproduce.unfairness"

    def run(config, workdir, progress=True):
        raise RuntimeError("out of patience")

    broken.run = run
    monkeypatch.setitem(sys.modules, broken.__name__, broken)
    for name in reproduce.EXPERIMENTS:
        if name not in ("training", "unfairness"):
            monkeypatch.setitem(sys.modules, f"i2f_fast.experiments.reproduce.{name}", None)
    assert main(["reproduce", "all", "--quick", "--quiet", "--out", str(tmp_path)]) == 1
    index = (tmp_path / "index.md").read_text()
    assert "failed: RuntimeError: out of patience" in index and "holds: values [3, 6]" in index
    assert not (tmp_path / "unfairness" / "result.json").exists()


@pytest.mark.parametrize("argv, flag", [
    (["training", "--iterations", "0"], "--iterations"),
    (["training", "--seed", "-1"], "--seed"),
    (["training", "--model", "vgg"], "--model"),
    (["training", "--dataset", "imagenet"], "--dataset"),
    (["all", "--dataset", "cifar10"], "--dataset cifar10"),  # no --root: fails before any experiment runs
    (["fig5"], "unknown experiment 'fig5'"),
])
def test_bad_reproduce_flags_end_with_one_line_naming_the_flag(argv, flag, tmp_path, fake, capsys):
    with pytest.raises(SystemExit) as info:
        main(["reproduce", *argv, "--quick", "--quiet", "--out", str(tmp_path)])
    code = info.value.code
    message = capsys.readouterr().err.strip().splitlines()[-1] if isinstance(code, int) else str(code)
    assert "\n" not in message and flag in message, message
    assert not fake, "nothing may run after a bad flag"


def test_reproduce_checks_out_before_any_computation(tmp_path, fake):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit, match="--out"):
        main(["reproduce", "training", "--quick", "--out", str(blocker)])
    assert not fake


def test_a_module_without_the_whole_contract_is_refused(monkeypatch):
    module = _fake_module([])
    del module.verdict
    monkeypatch.setitem(sys.modules, FAKE, module)
    with pytest.raises(TypeError, match="lacks verdict"):
        reproduce.load("training")


def test_all_records_an_experiment_that_cannot_take_model_and_runs_the_others(tmp_path, fake, monkeypatch):
    modelless = _fake_module([])
    modelless.__name__ = "i2f_fast.experiments.reproduce.unfairness"
    modelless.options = lambda quick: dict(dataset="digits", root=None, iterations=3, seed=0, sizes=[1, 2])
    monkeypatch.setitem(sys.modules, modelless.__name__, modelless)
    for name in reproduce.EXPERIMENTS:
        if name not in ("training", "unfairness"):
            monkeypatch.setitem(sys.modules, f"i2f_fast.experiments.reproduce.{name}", None)
    entries = runner.run_all(tmp_path, quick=True, overrides=dict(model="linear"), progress=False, echo=lambda _: None)
    by_name = {e["name"]: e for e in entries}
    assert by_name["training"]["record"]["config"]["model"] == "linear"
    assert "--model: experiment unfairness has no model to choose" in by_name["unfairness"]["error"]
