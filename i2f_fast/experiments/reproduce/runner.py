"""Run reproduction experiments: one, or all of them with an index.

For experiment ``name`` the runner writes ``<out>/<name>/result.json`` (``experiment``, ``id``,
``paper``, ``claim``, ``config``, ``result``, ``verdict``, ``versions``) and
``<out>/<name>/figure.png``, atomically, and returns the printed table. ``run_all`` runs every
experiment of this build in the paper's order and rewrites ``<out>/index.md`` after each one, so an
interrupted run leaves a valid index; with ``resume=True`` an experiment whose ``result.json`` and
figure exist with the same configuration is not run again.
"""
from __future__ import annotations

import contextlib
import json
import platform
from pathlib import Path

import numpy
import torch

from ... import __version__
from ...files import atomic_path, write_json
from . import EXPERIMENTS, PAPER_IDS, ExperimentUnavailable, load
from .common import ReproduceInputError, check_datasets

OVERRIDES = ("dataset", "root", "iterations", "seed", "model")
"""Configuration keys the command line may override (``--dataset`` … ``--model``)."""

STATUSES = ("holds", "does not hold", "partly")


def versions() -> dict:
    """The software the result was computed with."""
    return dict(i2f_fast=__version__, torch=torch.__version__, numpy=numpy.__version__, python=platform.python_version())


def check_overrides(overrides: dict | None) -> dict:
    """``overrides`` checked (keys of :data:`OVERRIDES`; ``iterations`` >= 1 and ``seed`` >= 0 integers;
    a ``dataset`` on disk): ReproduceInputError naming the flag, before anything runs."""
    overrides = dict(overrides or {})
    for key, value in overrides.items():
        if key not in OVERRIDES:
            raise ValueError(f"overrides: unknown key {key!r}, expected one of {OVERRIDES}")
        low = {"iterations": 1, "seed": 0}.get(key)
        if low is not None and value is not None and (not isinstance(value, int) or value < low):
            raise ReproduceInputError(f"--{key} must be an integer >= {low}, got {value!r}")
    if overrides.get("dataset") is not None:
        check_datasets(dict(dataset=overrides["dataset"], root=overrides.get("root")))
    return overrides


def configure(name: str, quick: bool = False, overrides: dict | None = None) -> dict:
    """The configuration experiment ``name`` runs with: its ``options(quick)`` with the non-None
    ``overrides`` (keys of :data:`OVERRIDES`) applied, as JSON would store it.

    ``model`` replaces the experiment's ``"model"``, or its ``"models"`` list by that one model.

    Raises:
        ReproduceInputError: an override the experiment cannot take (names the flag).
    """
    module = load(name)
    config = dict(module.options(quick))
    for key, value in check_overrides(dict(overrides or {}, dataset=None)).items():
        if value is None:
            continue
        if key == "model":
            if "model" in config:
                config["model"] = value
            elif "models" in config:
                config["models"] = [value]
            else:
                raise ReproduceInputError(f"--model: experiment {name} has no model to choose")
        else:
            config[key] = value
    if (overrides or {}).get("dataset") is not None:
        config["dataset"] = overrides["dataset"]
    config["quick"] = bool(quick)
    return json.loads(json.dumps(config))


@contextlib.contextmanager
def _one_thread():
    """torch on one thread for the run (deterministic, and fair to shared cores); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_verdict(name: str, verdict) -> dict:
    if not (isinstance(verdict, dict) and verdict.get("status") in STATUSES and isinstance(verdict.get("measured"), str)):
        raise TypeError(f"experiment {name}: verdict must be {{'status': one of {STATUSES}, 'measured': str}}, got {verdict!r}")
    return verdict


def _finished(folder: Path, config: dict) -> dict | None:
    """The stored record of a finished run with this configuration, else None."""
    result, figure = folder / "result.json", folder / "figure.png"
    if not (result.is_file() and figure.is_file()):
        return None
    try:
        record = json.loads(result.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if record.get("config") == config else None


def run_experiment(name: str, out: Path, *, quick: bool = False, overrides: dict | None = None,
                   resume: bool = False, progress: bool = True) -> tuple[dict, str]:
    """Run experiment ``name`` into ``out/name/``; returns ``(record, printed table)``.

    ``record`` is what ``result.json`` holds; with ``resume`` a finished run with the same
    configuration is loaded instead of run (``record["resumed"]`` is then True, not stored).

    Raises:
        ValueError (unknown name), ExperimentUnavailable, ReproduceInputError (a dataset not on
        disk, a model that does not fit, a bad override), and whatever the experiment raises.
    """
    module = load(name)
    config = configure(name, quick, overrides)
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    if resume and (record := _finished(folder, config)) is not None:
        return dict(record, resumed=True), module.table(record["result"], config)
    check_datasets(config)
    with _one_thread():
        result = module.run(config, folder, progress)
    result = json.loads(json.dumps(result))  # what result.json will hold (tuples → lists); fails early if not JSON-ready
    record = dict(
        experiment=name, id=PAPER_IDS[name], paper=module.PAPER, claim=module.CLAIM, config=config, result=result,
        verdict=_check_verdict(name, module.verdict(result, config)), versions=versions(),
    )
    module.plot(result, config, folder / "figure.png")
    write_json(folder / "result.json", record)  # last: its presence means the experiment finished
    return record, module.table(result, config)


def verdict_line(record: dict) -> str:
    """One line: the paper's claim, what we measured, holds / does not hold / partly."""
    verdict = record["verdict"]
    differs = "" if verdict["status"] == "holds" else " (differs from the paper)"
    return f"{verdict['status']}{differs}: {verdict['measured']}"


def write_index(out: Path, entries: list[dict]) -> Path:
    """``out/index.md``: per experiment in the paper's order its claim, figure and one-line verdict.

    ``entries`` are ``{"name", "record"}`` for finished runs, or ``{"name", "error"}`` for runs that
    are not available or failed."""
    by_name = {e["name"]: e for e in entries}
    lines = ["# i2f-fast reproduce: the paper's findings", "",
             "Each section: the paper's claim, our figure, and whether the claim holds in our measurement "
             "(RMSE per element in the normalised input space; `result.json` next to each figure has every number "
             "and the configuration).", ""]
    summary = ["| id | experiment | paper | verdict |", "|---|---|---|---|"]
    sections = []
    for name in EXPERIMENTS:
        entry = by_name.get(name)
        if entry is None:
            continue
        pid = PAPER_IDS[name]
        if "record" in entry:
            record = entry["record"]
            summary.append(f"| {pid} | [{name}](#{pid.lower()}-{name}) | {record['paper']} | {record['verdict']['status']} |")
            sections += [f"## {pid} {name}", "", f"**Paper ({record['paper']}):** {record['claim']}", "",
                         f"![{name}]({name}/figure.png)", "", f"**Verdict:** {verdict_line(record)}", ""]
        else:
            summary.append(f"| {pid} | {name} | - | {entry['error']} |")
            sections += [f"## {pid} {name}", "", entry["error"], ""]
    path = Path(out) / "index.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines + summary + [""] + sections))
    return path


def run_all(out: Path, *, quick: bool = False, overrides: dict | None = None, resume: bool = False,
            progress: bool = True, echo=print) -> list[dict]:
    """Run every experiment of this build in order into ``out``; ``echo`` gets each table and verdict.

    The overrides are checked first (a bad value or a dataset not on disk stops everything at once);
    an experiment that is not available, cannot take an override (e.g. ``--model`` where it has no
    model) or fails is recorded in the index and the others still run.
    Returns the index entries (``{"name", "record"}`` or ``{"name", "error", "failed"}``)."""
    overrides = check_overrides(overrides)
    entries = []
    for name in EXPERIMENTS:
        try:
            record, table = run_experiment(name, out, quick=quick, overrides=overrides, resume=resume, progress=progress)
        except ExperimentUnavailable as err:
            entries.append(dict(name=name, error=str(err), failed=False))
        except Exception as err:  # noqa: BLE001 — one failure must not lose the other experiments
            message = " ".join(str(err).split()) or type(err).__name__
            entries.append(dict(name=name, error=f"failed: {type(err).__name__}: {message}", failed=True))
            echo(f"{PAPER_IDS[name]} {name}: failed: {message}")
        else:
            entries.append(dict(name=name, record=record))
            echo(report(record, table))
        write_index(out, entries)
    return entries


def report(record: dict, table: str) -> str:
    """What the command prints for one finished experiment: a title, the table and the verdict."""
    resumed = " (resumed: finished earlier with this configuration)" if record.get("resumed") else ""
    return (f"== {record['id']} {record['experiment']} ({record['paper']}){resumed}\n{table}\n"
            f"verdict: {verdict_line(record)}\n")

