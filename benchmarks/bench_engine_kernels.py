"""The engine's fused kernels (C++/OpenMP) vs their reference torch sequences, float32, at the
sizes the structured JᵀJ engine calls them with (ENGINE.md).

Each row times the public op twice in the same process, interleaved: under
``use_backend("native")`` (the C++ kernel) and under ``use_backend("reference")`` (the pure-torch
reference, 5–10 small torch ops). Both sides pay the same Python argument checks. The ratio is the
**median over rounds of the per-round ratio** reference / native (> 1: the fused kernel is
faster). Before timing, the native result must match the reference (rtol 1e-5).

For the tiny shapes the kernels remove per-op overhead (dispatch, allocation of temporaries)
rather than memory traffic; ``EXPECTED`` holds the ratio predicted before the first measurement,
printed next to the measured one. Goal: the fused kernel is no slower than the reference
(ratio >= 1) at every engine size.

Run: ``python benchmarks/bench_engine_kernels.py [--quick] [--threads N] [--no-csv]``.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
from i2f_fast import use_backend  # noqa: E402
from i2f_fast.backend import unavailable_reason  # noqa: E402
from i2f_fast.ops import ce_hvp, dual_act, gram_apply  # noqa: E402

GOAL = 1.0

# Predicted reference/native ratios, written down before the first measurement (1 thread): the
# reference's op count × ~4 µs per small torch op against one op, at equal Python checks.
EXPECTED = {
    "dual_act sigmoid, z (12, 14, 14), k = 1": 2.5,
    "dual_act sigmoid, z (12, 14, 14), k = 16": 3.0,
    "dual_act sigmoid, z (2^20,), k = 1": 1.5,
    "ce_hvp N = 1, C = 10": 2.0,
    "ce_hvp N = 64, C = 1000": 3.0,
    "gram_apply G = 1, S = 1, I = 784, O = 512, k = 1": 4.0,
    "gram_apply G = 1, S = 1, I = 784, O = 512, k = 16": 3.0,
    "gram_apply G = 1, S = 64, I = O = 256, k = 1": 0.1,
}


def _cases():
    """(name, op, args) at the engine's sizes, float32."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    cases = []
    for shape, k in (((12, 14, 14), 1), ((12, 14, 14), 16), ((1 << 20,), 1)):
        z, da = r(*shape), r(*shape)
        lead = (k,) if k > 1 else ()
        t, s = r(*lead, *shape), r(*lead, *shape)
        label = "2^20," if shape == (1 << 20,) else ", ".join(map(str, shape))
        cases.append((f"dual_act sigmoid, z ({label}), k = {k}", dual_act, (z, t, s, da, "sigmoid")))
    for N, C in ((1, 10), (64, 1000)):
        p = torch.softmax(r(N, C), -1)
        cases.append((f"ce_hvp N = {N}, C = {C}", ce_hvp, (p, r(N, C), 1.0 / N)))
    for G, S, I, O, k in ((1, 1, 784, 512, 1), (1, 1, 784, 512, 16), (1, 64, 256, 256, 1)):
        io = f"I = {I}, O = {O}" if I != O else f"I = O = {I}"
        cases.append((f"gram_apply G = {G}, S = {S}, {io}, k = {k}", gram_apply,
                      (r(G, S, I), r(G, S, O), r(k, G, S, I), r(k, G, S, O), True)))
    return cases


def _call(op, args, backend):
    def run():
        with use_backend(backend):
            return op(*args)

    return run


def main(quick: bool = False, write_csv: bool = True, threads: int = 1) -> list[common.Row]:
    why = unavailable_reason("native", torch.device("cpu"))
    if why:
        raise RuntimeError(f"bench_engine_kernels needs the C++ extension: {why}")
    rounds = 5 if quick else 11
    min_round_s = 0.005 if quick else 0.02
    rows = []
    with common.threads(threads):
        for name, op, args in _cases():
            native, reference = _call(op, args, "native"), _call(op, args, "reference")
            got, want = native(), reference()
            for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * max(1.0, float(b.abs().max())))
            c = common.compare(native, reference, rounds=rounds, min_round_s=min_round_s)
            ratio = statistics.median(b / a for a, b in zip(c.candidate_samples, c.baseline_samples))
            rows.append(common.Row(
                f"{name}: C++ vs reference", ratio, f">= {GOAL:g}", bool(ratio >= GOAL),
                f"expected {EXPECTED[name]:g}x; native {common.fmt_time(c.candidate_s)}, reference "
                f"{common.fmt_time(c.baseline_s)}" + common.noise_note(c),
                c.candidate_s, c.baseline_s, c.threads,
            ))
    return common.report("bench_engine_kernels", "Engine kernels: C++/OpenMP vs reference torch ops (float32)",
                         rows, write_csv)


if __name__ == "__main__":
    parser = common.add_threads_arg(common.standard_args(__doc__.splitlines()[0]))
    args = parser.parse_args()
    main(quick=args.quick, write_csv=not args.no_csv, threads=args.threads)
