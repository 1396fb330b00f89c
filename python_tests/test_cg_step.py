"""The cg_step op on every device × backend (reference, C++/OpenMP, CUDA, Triton) against a
row-by-row float64 oracle."""
import pytest
import torch

from i2f_fast import use_backend
from i2f_fast.ops import cg_step
from i2f_fast.reference import cg_step_ref
from i2f_fast.testing import DTYPES, ELEMENTWISE, EXACT


def oracle(x, r, p, Ap, rr, active):
    """Row-by-row Python implementation of one CG iteration (float64)."""
    x, r, p = x.double().clone(), r.double().clone(), p.double().clone()
    Ap, rr = Ap.double(), rr.double().clone()
    stepped = torch.zeros_like(active)
    for i in range(x.shape[0]):
        if not active[i]:
            continue
        pAp = torch.dot(p[i], Ap[i])
        if not torch.isfinite(pAp) or pAp <= 0:
            continue
        alpha = rr[i] / pAp
        x[i] += alpha * p[i]
        r[i] -= alpha * Ap[i]
        rr_new = torch.dot(r[i], r[i])
        beta = rr_new / rr[i] if rr[i] > 0 else 0.0
        p[i] = r[i] + beta * p[i]
        rr[i] = rr_new
        stepped[i] = True
    return x, r, p, rr, stepped


def make_state(B, D, dtype, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=dtype)
    r = torch.randn(B, D, generator=g, dtype=dtype)
    p = torch.randn(B, D, generator=g, dtype=dtype)
    Ap = p * torch.rand(B, D, generator=g, dtype=dtype) + 0.1 * p  # pAp > 0
    rr = (r * r).sum(1)
    active = torch.ones(B, dtype=torch.bool)
    if B > 1:
        active[1] = False  # an already-converged row
    if B > 2:
        Ap[2] = 0  # pAp = 0: breakdown
    return tuple(t.to(device) for t in (x, r, p, Ap, rr, active))


def run(backend, *state):
    with use_backend(backend):
        return cg_step(*state)


def assert_matches_oracle(state, got_state, out, dtype):
    ex, er, ep, err, estep = oracle(*(t.cpu() for t in state))
    rr_new, stepped = out
    torch.testing.assert_close(stepped.cpu(), estep)
    for got, want in zip((*got_state, rr_new), (ex, er, ep, err)):
        torch.testing.assert_close(got.cpu().double(), want, **ELEMENTWISE[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", [1, 3, 17])
@pytest.mark.parametrize("D", [1, 127, 4099])
def test_matches_row_by_row_oracle(device_backend, dtype, B, D):
    device, backend = device_backend
    state = make_state(B, D, dtype, device=device)
    x, r, p, Ap, rr, active = (t.clone() for t in state)
    out = run(backend, x, r, p, Ap, rr, active)
    assert_matches_oracle(state, (x, r, p), out, dtype)
    if B > 2:
        assert not out[1][2], "pAp = 0 must freeze the row"
        torch.testing.assert_close(x[2], state[0][2], **EXACT)


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_that_converges_in_one_step(device_backend, dtype):
    """A = I and p = r: r' = 0 exactly. The closed-form r'·r' cancels to rounding noise here, so
    the compiled kernels must take β from the exact sum (their third pass)."""
    device, backend = device_backend
    g = torch.Generator().manual_seed(3)
    r = torch.randn(2, 5000, generator=g, dtype=dtype).to(device)
    x, p, Ap = torch.zeros_like(r), r.clone(), r.clone()
    rr = (r * r).sum(1)
    active = torch.ones(2, dtype=torch.bool, device=device)
    rr_new, stepped = run(backend, x, r, p, Ap, rr, active)
    assert bool(stepped.all())
    torch.testing.assert_close(x, Ap, **ELEMENTWISE[dtype])  # x = b after one step
    assert float(rr_new.max()) <= 1e-10 * float(rr.min())
    assert bool(torch.isfinite(p).all())
    torch.testing.assert_close(p, r, rtol=0, atol=1e-10)  # β = r'·r'/r·r ≈ 0 gives p = r' (≈ 0)


def test_frozen_rows_untouched_even_with_nonfinite_values(device_backend):
    device, backend = device_backend
    x, r, p, Ap, rr, active = make_state(3, 5, torch.float64, device=device)
    p[1] = float("inf")
    Ap[1] = float("nan")
    before = [t[1].clone() for t in (x, r, p)]
    rr_new, stepped = run(backend, x, r, p, Ap, rr, active)
    for got, want in zip((x[1], r[1], p[1]), before):
        torch.testing.assert_close(got, want, equal_nan=True, **EXACT)
    assert rr_new[1] == rr[1] and not stepped[1]


def test_nonfinite_pap_is_breakdown(device_backend):
    device, backend = device_backend
    x, r, p, Ap, rr, active = make_state(2, 4, torch.float64, device=device)
    active[:] = True
    Ap[0, 0] = float("nan")
    _, stepped = run(backend, x, r, p, Ap, rr, active)
    assert not stepped[0] and stepped[1]


def test_noncontiguous_inputs_are_handled(device_backend):
    device, backend = device_backend
    state = make_state(4, 6, torch.float64, device=device)
    x, r, p, Ap = (t.t().contiguous().t() for t in state[:4])  # same values, column-major
    assert not x.is_contiguous()
    out = run(backend, x, r, p, Ap, state[4].clone(), state[5])
    assert_matches_oracle(state, (x, r, p), out, torch.float64)


def test_zero_size(device_backend):
    device, backend = device_backend
    for B, D in ((0, 5), (3, 0)):
        x, r, p, Ap = (torch.zeros(B, D, dtype=torch.float64, device=device) for _ in range(4))
        rr = torch.ones(B, dtype=torch.float64, device=device)
        rr_new, stepped = run(backend, x, r, p, Ap, rr, torch.ones(B, dtype=torch.bool, device=device))
        assert rr_new.shape == (B,) and not bool(stepped.any())  # D = 0: pAp = 0 is a breakdown
        torch.testing.assert_close(rr_new, rr)


THREADED_RUN = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
from i2f_fast import use_backend
from i2f_fast.ops import cg_step
g = torch.Generator().manual_seed(0)
state = [torch.randn(2, 3 * 4096 + 5, generator=g) for _ in range(3)]
Ap = state[2] * torch.rand(2, 3 * 4096 + 5, generator=g)
rr = (state[1] * state[1]).sum(1)
with use_backend("native"):
    out = cg_step(*state, Ap, rr, torch.ones(2, dtype=torch.bool))
torch.save([*state, *out], sys.argv[2])
"""


def test_native_results_do_not_depend_on_the_thread_count(tmp_path):
    """Each tile's partial sums are reduced in a fixed order, so 1 and 2 threads agree bit for bit.
    Each thread count runs in its own process: changing torch's thread count inside one process
    makes later batched LAPACK calls (torch.linalg.solve) hang with torch 2.13/2.14 + MKL."""
    import subprocess
    import sys

    from i2f_fast.backend import unavailable_reason

    if unavailable_reason("native", torch.device("cpu")):
        pytest.skip("C++ extension not built")
    outs = []
    for threads in (1, 2):
        path = tmp_path / f"out{threads}.pt"
        subprocess.run([sys.executable, "-c", THREADED_RUN, str(threads), str(path)], check=True, timeout=300)
        outs.append(torch.load(path))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, **EXACT)


def test_opcheck(device_backend):
    """opcheck on ``torch.ops.i2f_fast.cg_step``: the compiled kernel of the device when loaded,
    else the reference registered as its CompositeExplicitAutograd kernel."""
    device, backend = device_backend
    if backend != "native":
        pytest.skip("torch.ops.i2f_fast.cg_step runs the native kernel (or the reference when none is built)")
    torch.library.opcheck(torch.ops.i2f_fast.cg_step.default, make_state(3, 7, torch.float64, device=device))


def test_opcheck_triton(device_backend):
    device, backend = device_backend
    if backend != "triton":
        pytest.skip("Triton op only")
    from i2f_fast.triton.cg_step import cg_step_triton  # noqa: F401  (registers the op)

    # AOT tracing of a triton_op runs its kernels on fake tensors, which the CPU interpreter cannot.
    skip_aot = device == "cpu"
    utils = ("test_schema", "test_autograd_registration", "test_faketensor") if skip_aot else None
    kwargs = {"test_utils": utils} if utils else {}
    torch.library.opcheck(
        torch.ops.i2f_fast.cg_step_triton.default, make_state(3, 7, torch.float64, device=device), **kwargs
    )


def test_reference_backend_runs_the_reference():
    a = make_state(5, 9, torch.float64)
    b = tuple(t.clone() for t in a)
    out_a = run("reference", *a)
    out_b = cg_step_ref(*b)
    for u, v in zip((*a[:3], *out_a), (*b[:3], *out_b)):
        torch.testing.assert_close(u, v, **EXACT)


@pytest.mark.parametrize(
    "mutate, error, match",
    [
        (lambda s: (s[0][:, :3],) + s[1:], ValueError, "r has shape"),
        (lambda s: (s[0].unsqueeze(0),) + s[1:], ValueError, "x must be a 2-D"),
        (lambda s: s[:3] + (s[3].float(),) + s[4:], TypeError, "Ap must be float32 or float64"),
        (lambda s: s[:4] + (s[4][:2],) + s[5:], ValueError, "rr must be"),
        (lambda s: s[:5] + (s[5].long(),), ValueError, "active must be"),
        (lambda s: tuple(t.int() if i == 0 else t for i, t in enumerate(s)), TypeError, "x must be float32"),
    ],
)
def test_bad_input_names_the_argument(mutate, error, match):
    state = make_state(3, 5, torch.float64)
    with pytest.raises(error, match=match):
        cg_step(*mutate(state))


def test_compiled_kernel_checks_its_arguments():
    """Called directly (bypassing the Python checks), the C++ kernel rejects bad input by name."""
    from i2f_fast.backend import unavailable_reason

    if unavailable_reason("native", torch.device("cpu")):
        pytest.skip("C++ extension not built")
    x, r, p, Ap, rr, active = make_state(3, 5, torch.float64)
    with pytest.raises(RuntimeError, match="Ap has shape"):
        torch.ops.i2f_fast.cg_step(x, r, p, Ap[:, :2], rr, active)
    with pytest.raises(RuntimeError, match="x must be contiguous"):
        torch.ops.i2f_fast.cg_step(x.t().contiguous().t(), r, p, Ap, rr, active)
