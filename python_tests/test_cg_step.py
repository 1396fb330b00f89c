"""The cg_step op (reference kernel) against a row-by-row float64 oracle."""
import pytest
import torch

from i2f_fast.ops import cg_step
from i2f_fast.reference import cg_step_ref


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


def make_state(B, D, dtype, seed=0):
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
    return x, r, p, Ap, rr, active


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B", [1, 3, 17])
@pytest.mark.parametrize("D", [1, 127, 4099])
def test_matches_row_by_row_oracle(dtype, B, D):
    state = make_state(B, D, dtype)
    x, r, p, Ap, rr, active = (t.clone() for t in state)
    ex, er, ep, err, estep = oracle(*state)
    rr_new, stepped = cg_step(x, r, p, Ap, rr, active)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=1e-5)
    torch.testing.assert_close(stepped, estep)
    for got, want in ((x, ex), (r, er), (p, ep), (rr_new, err)):
        torch.testing.assert_close(got.double(), want, **tol)
    if B > 2:
        assert not stepped[2], "pAp = 0 must freeze the row"
        torch.testing.assert_close(x[2], state[0][2], rtol=0, atol=0)


def test_frozen_rows_untouched_even_with_nonfinite_values():
    x, r, p, Ap, rr, active = make_state(3, 5, torch.float64)
    p[1] = float("inf")
    Ap[1] = float("nan")
    before = [t[1].clone() for t in (x, r, p)]
    rr_new, stepped = cg_step(x, r, p, Ap, rr, active)
    for got, want in zip((x[1], r[1], p[1]), before):
        torch.testing.assert_close(got, want, equal_nan=True, rtol=0, atol=0)
    assert rr_new[1] == rr[1] and not stepped[1]


def test_nonfinite_pap_is_breakdown():
    x, r, p, Ap, rr, active = make_state(2, 4, torch.float64)
    active[:] = True
    Ap[0, 0] = float("nan")
    _, stepped = cg_step(x, r, p, Ap, rr, active)
    assert not stepped[0] and stepped[1]


def test_noncontiguous_inputs_are_handled():
    x, r, p, Ap, rr, active = make_state(4, 6, torch.float64)
    xt, rt, pt, Apt = (t.t().contiguous().t() for t in (x, r, p, Ap))  # same values, column-major
    assert not xt.is_contiguous()
    ex, er, ep, err, _ = oracle(x, r, p, Ap, rr, active)
    rr_new, _ = cg_step(xt, rt, pt, Apt, rr.clone(), active)
    torch.testing.assert_close(xt, ex)
    torch.testing.assert_close(pt, ep)
    torch.testing.assert_close(rr_new, err)


def test_opcheck():
    x, r, p, Ap, rr, active = make_state(3, 7, torch.float64)
    torch.library.opcheck(torch.ops.i2f_fast.cg_step.default, (x, r, p, Ap, rr, active))


def test_reference_is_what_the_op_runs():
    a = make_state(5, 9, torch.float64)
    b = tuple(t.clone() for t in a)
    out_a = cg_step(*a)
    out_b = cg_step_ref(*b)
    for u, v in zip(out_a, out_b):
        torch.testing.assert_close(u, v, rtol=0, atol=0)


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
