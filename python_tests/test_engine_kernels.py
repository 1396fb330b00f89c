"""The structured engine's kernels (dual_act, ce_hvp, gram_apply) on every device × backend
(reference, C++/OpenMP, CUDA, Triton) against their pure-torch references, and the references
themselves against autograd (activation derivatives, the CE Hessian) and a materialised U."""
import pytest
import torch
import torch.nn.functional as F

from i2f_fast import use_backend
from i2f_fast.ops import ce_hvp, dual_act, gram_apply
from i2f_fast.reference import ce_hvp_ref, dual_act_ref, gram_apply_ref
from i2f_fast.reference.dual_act import ACTIVATIONS, activation_derivatives
from i2f_fast.testing import ANALYTIC, DTYPES, EXACT, assert_close

# (alpha, threshold) per activation: non-default values, so that a kernel ignoring them fails.
PARAMS = {"leaky_relu": (0.07, 20.0), "elu": (1.3, 20.0), "softplus": (2.0, 5.0)}


def params(act):
    return PARAMS.get(act, (0.0, 20.0))


def run(backend, fn, *args, **kwargs):
    with use_backend(backend):
        return fn(*args, **kwargs)


def check(got, want):
    """Kernel vs reference in the same dtype, with the project's tolerance for that dtype."""
    assert got.dtype == want.dtype and got.shape == want.shape
    assert_close(got, want, scale=max(1.0, float(want.abs().max())) if want.numel() else 1.0)


def special_z(act, dtype):
    """Pre-activations with the kinks (0), both saturations and softplus's threshold (± a bit)."""
    alpha, threshold = params(act)
    edge = threshold / alpha if act == "softplus" else 20.0
    vals = [0.0, 1e-4, -1e-4, 0.5, -0.5, 3.0, -3.0, 20.0, -20.0, 45.0, -45.0, edge, edge * (1 + 1e-6), edge * (1 - 1e-6)]
    g = torch.Generator().manual_seed(1)
    return torch.cat([torch.tensor(vals, dtype=torch.float64), 3 * torch.randn(21, generator=g, dtype=torch.float64)]).to(dtype)


# ---------------------------------------------------------------------------------------------
# The reference activation rules against autograd (float64)

TORCH_ACTS = {
    "sigmoid": lambda z, a, th: torch.sigmoid(z),
    "tanh": lambda z, a, th: torch.tanh(z),
    "relu": lambda z, a, th: F.relu(z),
    "leaky_relu": lambda z, a, th: F.leaky_relu(z, a),
    "elu": lambda z, a, th: F.elu(z, a),
    "gelu": lambda z, a, th: F.gelu(z),
    "gelu_tanh": lambda z, a, th: F.gelu(z, approximate="tanh"),
    "silu": lambda z, a, th: F.silu(z),
    "softplus": lambda z, a, th: F.softplus(z, a, th),
}


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_reference_derivatives_match_autograd(act):
    """σ' and σ'' of the reference equal torch.func.grad of grad of PyTorch's own activation,
    elementwise, at random points, at the kinks and in the saturated / linear regions."""
    alpha, threshold = params(act)
    z = special_z(act, torch.float64)
    f = TORCH_ACTS[act]
    d1_ag = torch.vmap(torch.func.grad(lambda x: f(x, alpha, threshold)))(z)
    d2_ag = torch.vmap(torch.func.grad(torch.func.grad(lambda x: f(x, alpha, threshold))))(z)
    d1, d2 = activation_derivatives(z, act, alpha, threshold)
    torch.testing.assert_close(d1, d1_ag, **ANALYTIC)
    torch.testing.assert_close(d2, d2_ag, **ANALYTIC)


# ---------------------------------------------------------------------------------------------
# dual_act


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_dual_act_matches_reference(device_backend, act, dtype):
    """Every activation, kinks and saturation included; L = () and (k,) = (3,); with and without
    the second term."""
    device, backend = device_backend
    alpha, threshold = params(act)
    z = special_z(act, dtype).reshape(5, 7).to(device)
    g = torch.Generator().manual_seed(2)
    da = torch.randn(5, 7, generator=g, dtype=dtype).to(device)
    for lead in ((), (3,)):
        t = torch.randn(*lead, 5, 7, generator=g, dtype=dtype).to(device)
        s = torch.randn(*lead, 5, 7, generator=g, dtype=dtype).to(device)
        check(run(backend, dual_act, z, t, s, da, act, alpha, threshold), dual_act_ref(z, t, s, da, act, alpha, threshold))
        check(run(backend, dual_act, z, t, act=act, alpha=alpha, threshold=threshold),
              dual_act_ref(z, t, None, None, act, alpha, threshold))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 4])
def test_dual_act_odd_large_sizes(device_backend, dtype, k):
    """numel(z) = 1237 (not a multiple of any tile: 512 in C++, 1024 in Triton), k leading tangents."""
    device, backend = device_backend
    g = torch.Generator().manual_seed(3)
    z = (3 * torch.randn(1237, generator=g, dtype=dtype)).to(device)
    t, s = (torch.randn(k, 1237, generator=g, dtype=dtype).to(device) for _ in range(2))
    da = torch.randn(1237, generator=g, dtype=dtype).to(device)
    for act in ("sigmoid", "gelu"):
        check(run(backend, dual_act, z, t, s, da, act), dual_act_ref(z, t, s, da, act))


def test_dual_act_many_leading_rows(device_backend):
    """A tiny z shared by many leading rows (several row tiles), and two leading dims."""
    device, backend = device_backend
    g = torch.Generator().manual_seed(4)
    z = torch.randn(3, generator=g, dtype=torch.float64).to(device)
    t, s = (torch.randn(2, 37, 3, generator=g, dtype=torch.float64).to(device) for _ in range(2))
    da = torch.randn(3, generator=g, dtype=torch.float64).to(device)
    check(run(backend, dual_act, z, t, s, da, "silu"), dual_act_ref(z, t, s, da, "silu"))


# ---------------------------------------------------------------------------------------------
# ce_hvp


def test_reference_ce_hvp_is_the_cross_entropy_hessian():
    g = torch.Generator().manual_seed(5)
    z = torch.randn(3, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 4, 2])
    u = torch.randn(3, 5, generator=g, dtype=torch.float64)
    loss = lambda zz: F.cross_entropy(zz, y, reduction="mean")  # noqa: E731
    hvp = torch.func.jvp(torch.func.grad(loss), (z,), (u,))[1]
    torch.testing.assert_close(ce_hvp_ref(torch.softmax(z, -1), u, 1 / 3), hvp, **ANALYTIC)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N, C", [(1, 10), (3, 7), (2, 1100)])
@pytest.mark.parametrize("lead", [(), (4,)])
def test_ce_hvp_matches_reference(device_backend, dtype, N, C, lead):
    device, backend = device_backend
    g = torch.Generator().manual_seed(6)
    p = torch.softmax(3 * torch.randn(N, C, generator=g, dtype=dtype), -1).to(device)
    u = torch.randn(*lead, N, C, generator=g, dtype=dtype).to(device)
    check(run(backend, ce_hvp, p, u, 1 / N), ce_hvp_ref(p, u, 1 / N))


# ---------------------------------------------------------------------------------------------
# gram_apply


def gram_inputs(k, G, S, I, O, dtype, device="cpu", seed=7):
    g = torch.Generator().manual_seed(seed)
    shapes = ((G, S, I), (G, S, O), (k, G, S, I), (k, G, S, O))
    return tuple(torch.randn(*s, generator=g, dtype=dtype).to(device) for s in shapes)


@pytest.mark.parametrize("bias", [True, False])
def test_reference_gram_apply_equals_the_materialised_u(bias):
    """ua = U a_m + u_b and ute = Uᵀ e_m with U = Σ_n ė_n a_nᵀ + e_n ȧ_nᵀ formed explicitly."""
    a, e, adot, edot = gram_inputs(2, 3, 4, 6, 5, torch.float64)
    ua, ute = gram_apply_ref(a, e, adot, edot, bias)
    for kk in range(2):
        for gg in range(3):
            U = edot[kk, gg].T @ a[gg] + e[gg].T @ adot[kk, gg]  # (O, I)
            ub = edot[kk, gg].sum(0) if bias else torch.zeros(5, dtype=torch.float64)
            torch.testing.assert_close(ua[kk, gg], a[gg] @ U.T + ub, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(ute[kk, gg], e[gg] @ U, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "k, G, S, I, O",
    [
        (1, 1, 1, 13, 7),  # MLP layer, N = 1
        (4, 1, 1, 9, 300),  # k tangents; O over one Triton tile
        (2, 3, 1, 6, 5),  # per-sample mode: G = N, S = 1
        (3, 1, 5, 11, 4),  # one batched Jacobian of 5 samples
        (2, 2, 3, 261, 17),  # I over one tile, odd everything
        (2, 1, 16, 70, 61),  # large enough for the C++ kernel's GEMM form
    ],
)
def test_gram_apply_matches_reference(device_backend, dtype, k, G, S, I, O):
    device, backend = device_backend
    if backend == "triton" and S >= 8 and device == "cpu":
        pytest.skip("the GEMM form is the C++ kernel's; the Triton kernels have one code path (slow when interpreted)")
    inputs = gram_inputs(k, G, S, I, O, dtype, device)
    for bias in (True, False):
        got = run(backend, gram_apply, *inputs, bias)
        want = gram_apply_ref(*inputs, bias)
        for x, y in zip(got, want):
            check(x, y)


# ---------------------------------------------------------------------------------------------
# All three: non-contiguous and zero-size inputs, opcheck, bad input, autograd


def test_noncontiguous_inputs(device_backend):
    device, backend = device_backend
    g = torch.Generator().manual_seed(8)
    z = torch.randn(7, 5, generator=g, dtype=torch.float64).to(device).t()  # (5, 7), transposed
    t = torch.randn(3, 7, 5, generator=g, dtype=torch.float64).to(device).transpose(1, 2)
    s = torch.randn(3, 7, 5, generator=g, dtype=torch.float64).to(device).transpose(1, 2)
    da = torch.randn(5, 14, generator=g, dtype=torch.float64).to(device)[:, ::2]
    assert not (z.is_contiguous() or t.is_contiguous() or da.is_contiguous())
    check(run(backend, dual_act, z, t, s, da, "tanh"), dual_act_ref(z, t, s, da, "tanh"))

    p = torch.softmax(torch.randn(6, 3, generator=g, dtype=torch.float64), -1).to(device).t()
    u = torch.randn(2, 6, 3, generator=g, dtype=torch.float64).to(device).transpose(1, 2)
    check(run(backend, ce_hvp, p, u, 0.5), ce_hvp_ref(p, u, 0.5))

    a, e, adot, edot = (x.transpose(-1, -2).contiguous().transpose(-1, -2) for x in gram_inputs(2, 1, 3, 4, 5, torch.float64, device))
    a, e = a[..., :3], e[..., :4]  # non-contiguous slices
    adot, edot = adot[..., :3], edot[..., :4]
    assert not a.is_contiguous()
    for x, y in zip(run(backend, gram_apply, a, e, adot, edot, True), gram_apply_ref(a, e, adot, edot, True)):
        check(x, y)


def test_zero_size(device_backend):
    device, backend = device_backend
    opts = dict(dtype=torch.float64, device=device)
    for z_shape, t_shape in (((0,), (3, 0)), ((4,), (0, 4)), ((0, 2), (0, 2))):
        z, t = torch.zeros(z_shape, **opts), torch.zeros(t_shape, **opts)
        out = run(backend, dual_act, z, t, torch.zeros(t_shape, **opts), torch.zeros(z_shape, **opts), "sigmoid")
        assert out.shape == t_shape
    for p_shape, u_shape in (((0, 4), (2, 0, 4)), ((3, 0), (3, 0)), ((3, 4), (0, 3, 4))):
        assert run(backend, ce_hvp, torch.zeros(p_shape, **opts), torch.zeros(u_shape, **opts)).shape == u_shape
    for k, G, S, I, O in ((0, 1, 2, 3, 4), (2, 0, 2, 3, 4), (2, 1, 0, 3, 4), (2, 1, 2, 0, 4), (1, 1, 2, 3, 0)):
        inputs = gram_inputs(k, G, S, I, O, torch.float64, device)
        got = run(backend, gram_apply, *inputs, True)
        want = gram_apply_ref(*inputs, True)
        for x, y in zip(got, want):
            assert x.shape == y.shape
            check(x, y)


def small_cases(device):
    g = torch.Generator().manual_seed(9)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(device)  # noqa: E731
    return {
        "dual_act": (r(3, 4), r(2, 3, 4), r(2, 3, 4), r(3, 4), "gelu", 0.0, 20.0),
        "dual_act_first": (r(3, 4), r(2, 3, 4), None, None, "softplus", 2.0, 5.0),
        "ce_hvp": (torch.softmax(r(2, 5), -1), r(3, 2, 5), 0.5),
        "gram_apply": (*gram_inputs(2, 2, 3, 4, 5, torch.float64, device), True),
    }


@pytest.mark.parametrize("case", ["dual_act", "dual_act_first", "ce_hvp", "gram_apply"])
def test_opcheck(device_backend, case):
    """opcheck on ``torch.ops.i2f_fast.<op>``: the compiled kernel of the device when loaded, else
    the reference registered as its CompositeExplicitAutograd kernel."""
    device, backend = device_backend
    if backend != "native":
        pytest.skip("torch.ops.i2f_fast.<op> runs the native kernel (or the reference when none is built)")
    op = getattr(torch.ops.i2f_fast, case.removesuffix("_first")).default
    torch.library.opcheck(op, small_cases(device)[case])


@pytest.mark.parametrize("case", ["dual_act", "dual_act_first", "ce_hvp", "gram_apply"])
def test_opcheck_triton(device_backend, case):
    device, backend = device_backend
    if backend != "triton":
        pytest.skip("Triton op only")
    import importlib

    name = case.removesuffix("_first")
    importlib.import_module(f"i2f_fast.triton.{name}")  # registers the op
    # AOT tracing of a triton_op runs its kernels on fake tensors, which the CPU interpreter cannot.
    utils = ("test_schema", "test_autograd_registration", "test_faketensor") if device == "cpu" else None
    kwargs = {"test_utils": utils} if utils else {}
    torch.library.opcheck(getattr(torch.ops.i2f_fast, f"{name}_triton").default, small_cases(device)[case], **kwargs)


def test_reference_backend_runs_the_reference():
    case = small_cases("cpu")
    torch.testing.assert_close(run("reference", dual_act, *case["dual_act"]), dual_act_ref(*case["dual_act"]), **EXACT)
    torch.testing.assert_close(run("reference", ce_hvp, *case["ce_hvp"]), ce_hvp_ref(*case["ce_hvp"]), **EXACT)
    for x, y in zip(run("reference", gram_apply, *case["gram_apply"]), gram_apply_ref(*case["gram_apply"])):
        torch.testing.assert_close(x, y, **EXACT)


# The C++ extension registers PyTorch's not-implemented autograd kernel; the pure-Python install a
# Python one (i2f_fast/ops/_engine_checks.py).
NOT_DIFFERENTIABLE = r"{0} is not differentiable|derivative for .*{0}.* is not implemented"


def test_not_differentiable_raises_a_clear_error():
    """The ops (``torch.ops.i2f_fast.*``) raise on backward; the public functions under the
    ``reference`` backend run plain torch and stay differentiable."""
    z, t, s, da, *rest = small_cases("cpu")["dual_act"]
    t = t.clone().requires_grad_()
    out = torch.ops.i2f_fast.dual_act(z, t, s, da, *rest)
    with pytest.raises(RuntimeError, match=NOT_DIFFERENTIABLE.format("dual_act")):
        out.sum().backward()
    p, u, scale = small_cases("cpu")["ce_hvp"]
    with pytest.raises(RuntimeError, match=NOT_DIFFERENTIABLE.format("ce_hvp")):
        torch.ops.i2f_fast.ce_hvp(p, u.clone().requires_grad_(), scale).sum().backward()
    a, e, adot, edot, bias = small_cases("cpu")["gram_apply"]
    with pytest.raises(RuntimeError, match=NOT_DIFFERENTIABLE.format("gram_apply")):
        torch.ops.i2f_fast.gram_apply(a.clone().requires_grad_(), e, adot, edot, bias)[0].sum().backward()


def _bad_cases():
    r = lambda *s: torch.randn(*s, dtype=torch.float64)  # noqa: E731
    z, t, s, da = r(3, 4), r(2, 3, 4), r(2, 3, 4), r(3, 4)
    p, u = torch.softmax(r(2, 5), -1), r(3, 2, 5)
    a, e, adot, edot = gram_inputs(2, 1, 3, 4, 5, torch.float64)
    return [
        (dual_act, (z, r(2, 4, 3)), {}, ValueError, "t must have shape"),
        (dual_act, (z, t, s, None), {}, ValueError, "s and da must be given together"),
        (dual_act, (z, t, r(2, 3, 5), da), {}, ValueError, "s must have t's shape"),
        (dual_act, (z, t, s, r(4)), {}, ValueError, "da must have z's shape"),
        (dual_act, (z, t.float()), {}, TypeError, "t must have dtype"),
        (dual_act, (z.int(), t), {}, TypeError, "z must be float32 or float64"),
        (dual_act, ([1.0], t), {}, TypeError, "z must be a tensor"),
        (dual_act, (z, t), {"act": "swish"}, ValueError, "act must be one of"),
        (dual_act, (z, t), {"act": "elu", "alpha": "1"}, TypeError, "alpha must be a real number"),
        (dual_act, (z, t), {"act": "softplus", "threshold": None}, TypeError, "threshold must be a real number"),
        (ce_hvp, (p[0], u), {}, ValueError, "p must be a 2-D"),
        (ce_hvp, (p, u[..., :4]), {}, ValueError, "u must have shape"),
        (ce_hvp, (p, u.float()), {}, TypeError, "u must have dtype"),
        (ce_hvp, (p, u, "x"), {}, TypeError, "scale must be a real number"),
        (gram_apply, (a[0], e, adot, edot), {}, ValueError, "a must be a 3-D"),
        (gram_apply, (a, e[:, :2], adot, edot), {}, ValueError, "e must be"),
        (gram_apply, (a, e, adot[:, :, :2], edot), {}, ValueError, "adot must be"),
        (gram_apply, (a, e, adot, edot[:1]), {}, ValueError, "edot must be"),
        (gram_apply, (a, e, adot, edot.float()), {}, TypeError, "edot must have dtype"),
        (gram_apply, (a, e, adot, edot, 1), {}, TypeError, "bias must be a bool"),
    ]


@pytest.mark.parametrize("fn, args, kwargs, error, match", _bad_cases())
def test_bad_input_names_the_argument(fn, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        fn(*args, **kwargs)


def test_compiled_kernels_check_their_arguments():
    """Called directly (bypassing the Python checks), the C++ kernels reject bad input by name."""
    from i2f_fast.backend import unavailable_reason

    if unavailable_reason("native", torch.device("cpu")):
        pytest.skip("C++ extension not built")
    case = small_cases("cpu")
    z, t, s, da, *_ = case["dual_act"]
    with pytest.raises(RuntimeError, match="act must be one of"):
        torch.ops.i2f_fast.dual_act(z, t, s, da, "swish", 0.0, 20.0)
    with pytest.raises(RuntimeError, match="t must be contiguous"):
        torch.ops.i2f_fast.dual_act(z, t.transpose(1, 2).contiguous().transpose(1, 2), s, da, "tanh", 0.0, 20.0)
    with pytest.raises(RuntimeError, match="da must have z's shape"):
        torch.ops.i2f_fast.dual_act(z, t, s, da[:2], "tanh", 0.0, 20.0)
    p, u, _ = case["ce_hvp"]
    with pytest.raises(RuntimeError, match="u must end with p's shape"):
        torch.ops.i2f_fast.ce_hvp(p, u[..., :3].contiguous(), 1.0)
    a, e, adot, edot, _ = case["gram_apply"]
    with pytest.raises(RuntimeError, match="edot must be"):
        torch.ops.i2f_fast.gram_apply(a, e, adot, edot[:1].contiguous(), True)
    with pytest.raises(RuntimeError, match="e must have dtype"):
        torch.ops.i2f_fast.gram_apply(a, e.float(), adot, edot, True)
