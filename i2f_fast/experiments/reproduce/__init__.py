"""``i2f-fast reproduce``: the paper's findings E1–E8, one module per experiment.

Every experiment module ``<name>.py`` in this package follows one contract (the runner relies on it):

- ``NAME`` (the command-line name), ``PAPER`` (where the paper shows it), ``CLAIM`` (its claim in
  one sentence);
- ``options(quick) -> dict``: the JSON-ready configuration, with at least ``"dataset"`` (a name, or
  a list of names for experiments that cover several), ``"root"``, ``"iterations"`` and ``"seed"``;
- ``run(config, workdir, progress=True) -> dict``: every number the figure plots (deterministic
  given ``config``);
- ``plot(result, config, path)``, ``table(result, config) -> str``, and
  ``verdict(result, config) -> {"status": "holds" | "does not hold" | "partly", "measured": str}``.

:data:`EXPERIMENTS` is the paper's order; :func:`load` imports a module lazily, so a build that lacks
one reports it as not available instead of failing at import.
"""
from __future__ import annotations

import importlib
from types import ModuleType

EXPERIMENTS = ("generality", "pruning", "eigen", "init", "epsilon", "training", "unfairness", "efficiency")
"""The command-line names of E1 … E8, in the paper's order."""

PAPER_IDS = {name: f"E{i}" for i, name in enumerate(EXPERIMENTS, start=1)}
"""Experiment name → its id in the paper's list (``"eigen"`` → ``"E3"``)."""

CONTRACT = ("NAME", "PAPER", "CLAIM", "options", "run", "plot", "table", "verdict")
"""What every experiment module defines."""


class ExperimentUnavailable(LookupError):
    """A known experiment whose module is not part of this build."""


def check_name(name: str, allow_all: bool = False) -> str:
    """``name`` if it is one of :data:`EXPERIMENTS` (or ``"all"`` when ``allow_all``); ValueError otherwise."""
    choices = EXPERIMENTS + (("all",) if allow_all else ())
    if name not in choices:
        raise ValueError(f"unknown experiment {name!r}: choose one of {', '.join(choices)}")
    return name


def load(name: str) -> ModuleType:
    """The module of experiment ``name``, imported on first use.

    Raises:
        ValueError: ``name`` is not one of :data:`EXPERIMENTS`.
        ExperimentUnavailable: the module is missing from this build.
        TypeError: the module does not define the whole :data:`CONTRACT`.
    """
    check_name(name)
    module_name = f"{__name__}.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:  # the module exists but one of its imports is missing: a real error
            raise
        raise ExperimentUnavailable(f"{name} ({PAPER_IDS[name]}) is not available in this build") from err
    missing = [attr for attr in CONTRACT if not hasattr(module, attr)]
    if missing:
        raise TypeError(f"experiment module {module_name} lacks {', '.join(missing)} (see {__name__} for the contract)")
    return module

