"""Every comparison of the benches as pytest-benchmark tests (see ``conftest.py``): candidate and
baseline in one group, the interleaved in-process ratio in ``extra_info``."""
import pytest

import common


def test_comparison(benchmark, bench_case):
    if bench_case.error is not None:
        pytest.fail(f"the bench failed before or while timing:\n{bench_case.error}", pytrace=False)
    benchmark.group = bench_case.group
    benchmark.extra_info.update(bench_case.extra_info)
    fn, device = bench_case.fn, bench_case.device

    def timed():
        fn()
        common._sync(device)

    with bench_case.ambient.restored():
        benchmark.pedantic(timed, rounds=bench_case.rounds, iterations=bench_case.iterations, warmup_rounds=1)
