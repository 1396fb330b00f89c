"""Bad input to the i2f-fast command: a one-line error naming the flag (``--debug`` shows the traceback),
``--out`` checked before any computation, files written atomically."""
import json

import pytest

from i2f_fast import cli
from i2f_fast.files import atomic_path, write_json

FAST = ["--image-size", "12", "--iterations", "1", "--quiet"]

CASES = [
    pytest.param(["demo", "--samples", "0"], "--samples", id="demo-samples-0"),
    pytest.param(["demo", "--samples", "two"], "--samples", id="demo-samples-word"),
    pytest.param(["demo", "--threads", "-2"], "--threads", id="demo-threads-negative"),
    pytest.param(["demo", "--variances", "-1"], "--variances", id="demo-variance-negative"),
    pytest.param(["demo", "--variances", "nan"], "--variances", id="demo-variance-nan"),
    pytest.param(["demo", "--eps", "-1"], "--eps", id="demo-eps-negative"),
    pytest.param(["demo", "--eps", "nan"], "eps", id="demo-eps-nan"),
    pytest.param(["demo", "--dtype", "float16"], "--dtype", id="demo-dtype-half"),
    pytest.param(["demo", "--model", "vgg"], "--model", id="demo-model-unknown"),
    pytest.param(["attack", "--defense", "magic"], "--defense", id="attack-defense-unknown"),
    pytest.param(["attack", "--iterations", "0"], "--iterations", id="attack-iterations-0"),
    pytest.param(["attack", "--restarts", "0"], "--restarts", id="attack-restarts-0"),
    pytest.param(["attack", "--samples", "0"], "--samples", id="attack-samples-0"),
    pytest.param(["attack", "--start", "-1"], "--start", id="attack-start-negative"),
    pytest.param(["attack", "--image-size", "0"], "--image-size", id="attack-image-size-0"),
    pytest.param(["attack", "--defense", "gaussian", *FAST], "strength", id="attack-missing-strength"),
    pytest.param(["attack", "--defense", "gaussian", "--strength", "-1", *FAST], "var", id="attack-strength-negative"),
    pytest.param(["attack", "--defense", "gaussian", "--strength", "nan", *FAST], "strength", id="attack-strength-nan"),
    pytest.param(["attack", "--defense", "prune", "--strength", "2", *FAST], "ratio", id="attack-ratio-above-1"),
    pytest.param(["attack", "--lr", "-1", *FAST], "lr", id="attack-lr-negative"),
    pytest.param(["attack", "--tv", "-1", *FAST], "tv", id="attack-tv-negative"),
    pytest.param(["attack", "--optimizer", "lbfgs", *FAST], "lbfgs", id="attack-lbfgs-with-gs"),
    pytest.param(["attack", "--start", "5000", *FAST], "start", id="attack-start-past-the-data"),
    pytest.param(["compare", "--iterations", "0"], "--iterations", id="compare-iterations-0"),
    pytest.param(["compare", "--eps", "-1", *FAST], "--eps", id="compare-eps-negative"),
    pytest.param(["frobnicate"], "frobnicate", id="unknown-command"),
]


def _error_message(argv, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    code = info.value.code
    if isinstance(code, int):  # argparse: usage and the error on stderr, exit status 2
        assert code == 2
        return capsys.readouterr().err.strip().splitlines()[-1]
    return str(code)


@pytest.mark.parametrize("argv, flag", CASES)
def test_bad_flags_end_with_one_line_naming_the_flag(argv, flag, capsys, tmp_path):
    message = _error_message([*argv, "--out", str(tmp_path / "out")] if argv[0] != "frobnicate" else argv, capsys)
    assert "\n" not in message and flag in message, message
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["demo", "attack", "compare"])
def test_out_is_checked_before_any_computation(command, tmp_path, monkeypatch, capsys):
    def no_computation(*args, **kwargs):
        raise AssertionError("the job ran before --out was checked")

    monkeypatch.setitem(cli._COMMANDS, command, no_computation)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "sub"):
        message = _error_message([command, "--out", str(out)], capsys)
        assert "--out" in message and "\n" not in message


def test_debug_shows_the_traceback_anywhere_on_the_line(tmp_path):
    argv = ["attack", "--defense", "gaussian", "--strength", "-1", "--out", str(tmp_path), *FAST]
    for position in (0, len(argv)):
        with pytest.raises(ValueError, match="var must be >= 0"):
            cli.main([*argv[:position], "--debug", *argv[position:]])


def test_files_are_written_atomically(tmp_path):
    target = tmp_path / "results.json"
    write_json(target, {"a": 1.0, "b": float("inf")})
    assert json.loads(target.read_text()) == {"a": 1.0, "b": None}
    with pytest.raises(KeyboardInterrupt):  # killed mid-write: the old file stays whole, no temp file left
        with atomic_path(target) as tmp:
            tmp.write_text('{"half": ')
            raise KeyboardInterrupt
    assert json.loads(target.read_text()) == {"a": 1.0, "b": None}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_written_files_get_the_permissions_of_a_normally_created_file(tmp_path):
    """The temporary file is created private (0600); the result must be readable like any file the user writes."""
    reference = tmp_path / "reference"
    reference.write_text("x")
    target = tmp_path / "results.json"
    write_json(target, {"a": 1})
    assert (target.stat().st_mode & 0o777) == (reference.stat().st_mode & 0o777)
