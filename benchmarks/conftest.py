"""pytest-benchmark front end of the benchmarks (``pytest benchmarks --benchmark-only``).

Collecting ``test_benchmarks.py`` runs every bench's ``main()`` once, as ``run.py`` does: its
correctness checks first, then the interleaved in-process timing of candidate against baseline
(:func:`common.compare`, DESIGN.md §6). Each comparison it made becomes two tests, ``candidate``
and ``baseline``, in one pytest-benchmark group; pytest-benchmark times the same two functions
again in the same state (threads, oneDNN switch, backend, grad mode), so ``--benchmark-save``,
``--benchmark-compare`` and ``--benchmark-json`` work as usual, and records in ``extra_info`` the
interleaved ratio (``baseline / candidate``) and the bench's report rows (goal, pass/fail), from
which ``benchmarks/run.py --table`` prints the ratio table.

Nothing runs at collection under ``--collect-only`` or ``--benchmark-skip``. A bench that fails
(a correctness check included) gives one failing test with its error.
"""
from __future__ import annotations

import dataclasses
import importlib
import traceback

import pytest

import common
import run


def pytest_configure(config):
    config.addinivalue_line("filterwarnings", "ignore:TF32 acceleration on top of oneDNN")


def pytest_addoption(parser):
    group = parser.getgroup("i2f_fast benchmarks")
    group.addoption("--bench-quick", action="store_true", help="the benches' --quick mode (fewer rounds)")
    group.addoption("--bench-threads", type=int, default=1, help="torch threads of the timed runs (default 1)")
    group.addoption("--bench-only", nargs="+", choices=run.BENCHES, default=None, help="run only these benches")


@dataclasses.dataclass
class Case:
    """One side (candidate or baseline) of one comparison, or a bench that failed."""

    id: str
    group: str
    fn: object = None
    rounds: int = 0
    iterations: int = 1
    device: object = None
    ambient: common.Ambient | None = None
    extra_info: dict = dataclasses.field(default_factory=dict)
    error: str | None = None


def _row_info(bench: str, row: common.Row) -> dict:
    return dict(bench=bench, name=row.name, ratio=row.ratio, goal=row.goal, passed=row.passed, detail=row.detail,
                threads=row.threads)


def _cases(bench: str, quick: bool, threads: int) -> list[Case]:
    """Run ``bench``'s main() under :func:`common.recording`; one Case per side of each comparison."""
    module = importlib.import_module(bench)
    kwargs = dict(quick=quick, write_csv=False)
    if bench in run.TAKES_THREADS:
        kwargs["threads"] = threads
    try:
        with common.recording() as rec:
            module.main(**kwargs)
    except Exception:  # noqa: BLE001 — reported by the bench's one failing test
        return [Case(id=f"{bench}: failed", group=bench, error=traceback.format_exc())]
    rows = [_row_info(bench, r) for r in rec.rows]
    cases = []
    for i, seen in enumerate(rec.comparisons, 1):
        cmp = seen.comparison
        named = [r.name for r in rec.rows if r.candidate_s == cmp.candidate_s and r.baseline_s == cmp.baseline_s]
        label = f"{bench}: {seen.label or (named[0] if named else f'comparison {i}')}"
        info = dict(bench=bench, comparison=label, ratio=cmp.ratio, threads=cmp.threads, interleaved_rounds=cmp.rounds,
                    candidate_s=cmp.candidate_s, baseline_s=cmp.baseline_s, bench_rows=rows)
        for side, fn, rounds, reps in (("candidate", seen.candidate_fn, cmp.rounds, cmp.candidate_reps),
                                       ("baseline", seen.baseline_fn, cmp.baseline_rounds, cmp.baseline_reps)):
            cases.append(Case(id=f"{label} [{side}]", group=label, fn=fn, rounds=rounds, iterations=reps,
                              device=seen.device, ambient=seen.ambient, extra_info=dict(info, side=side)))
    return cases


def pytest_generate_tests(metafunc):
    if "bench_case" not in metafunc.fixturenames:
        return
    config = metafunc.config
    benches = config.getoption("bench_only") or run.BENCHES
    if not config.pluginmanager.hasplugin("benchmark"):
        why = "pytest-benchmark is not installed (pip install -r requirements-dev.txt)"
    elif config.option.collectonly or config.getoption("benchmark_skip"):
        why = "benchmarks run only when collected to run"
    else:
        why = None
    if why is not None:
        cases = [pytest.param(None, id=b, marks=pytest.mark.skip(reason=why)) for b in benches]
    else:
        found = [c for b in benches for c in _cases(b, config.getoption("bench_quick"), config.getoption("bench_threads"))]
        cases = [pytest.param(c, id=c.id) for c in found]
    metafunc.parametrize("bench_case", cases)
