"""The attack loop's fused ops (grad_match, tv, attack_step) on every device × backend against
their references, in float32 and float64: odd sizes, restarts 1 and 5, zero gradients, opcheck,
gradcheck and bad input."""
import pytest
import torch

from i2f_fast import use_backend
from i2f_fast.ops import attack_step, grad_match, tv
from i2f_fast.reference import attack_step_ref, grad_match_ref, tv_ref
from i2f_fast.testing import DTYPES, assert_close


def _randn(*shape, dtype=torch.float64, seed=0, device="cpu"):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(device)


def _weights(P, dtype, device):
    w = torch.rand(P, generator=torch.Generator().manual_seed(9), dtype=dtype)
    w[: P // 3] = 0  # a dropped layer
    return w.to(device)


# ------------------------------------------------------------------------------------ grad_match
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["cosine", "l2"])
@pytest.mark.parametrize("R, P", [(1, 1), (5, 4099), (1, 9001)])
@pytest.mark.parametrize("weighted", [False, True])
def test_grad_match_matches_the_reference(device_backend, dtype, kind, R, P, weighted):
    device, backend = device_backend
    trial, target = _randn(R, P, dtype=dtype, device=device), _randn(P, dtype=dtype, seed=1, device=device)
    weights = _weights(P, dtype, device) if weighted else None
    with use_backend(backend):
        loss, grad = grad_match(trial, target, kind, weights)
    ref_loss, ref_grad = grad_match_ref(trial, target, kind, weights)
    assert loss.shape == (R,) and grad.shape == (R, P) and loss.dtype == dtype
    assert_close(loss, ref_loss, scale=max(1.0, ref_loss.abs().max().item()))
    assert_close(grad, ref_grad, scale=max(1.0, ref_grad.abs().max().item()))


@pytest.mark.parametrize("kind", ["cosine", "l2"])
def test_grad_match_zero_gradients_are_defined(device_backend, kind):
    """A zero trial row or a zero target: the cosine is undefined, defined here as loss 1 and
    gradient 0 (never NaN); l2 is the plain squared distance."""
    device, backend = device_backend
    target = _randn(37, device=device)
    trial = torch.stack([torch.zeros(37, device=device, dtype=torch.float64), 2 * target])
    with use_backend(backend):
        loss, grad = grad_match(trial, target, kind)
        loss0, grad0 = grad_match(trial, torch.zeros_like(target), kind)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert torch.isfinite(loss0).all() and torch.isfinite(grad0).all()
    if kind == "cosine":
        assert loss[0] == 1 and (grad[0] == 0).all()
        assert (loss0 == 1).all() and (grad0 == 0).all()
        assert abs(loss[1].item()) < 1e-12  # parallel vectors: cosine 1
    else:
        assert_close(loss[0], (target * target).sum())
        assert_close(grad[1], 2 * target)


@pytest.mark.parametrize("kind", ["cosine", "l2"])
def test_grad_match_gradcheck(device_backend, kind):
    device, backend = device_backend
    trial = _randn(3, 11, device=device).requires_grad_(True)
    target = _randn(11, seed=1, device=device).requires_grad_(True)
    weights = _weights(11, torch.float64, device)

    def loss(t, g):
        with use_backend(backend):
            return grad_match(t, g, kind, weights)[0]

    assert torch.autograd.gradcheck(loss, (trial, target))


# -------------------------------------------------------------------------------------------- tv
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 5, 7), (5, 2, 3, 9, 13), (2, 1, 1, 1, 6), (1, 2, 1, 33, 1)])
def test_tv_matches_the_reference(device_backend, dtype, shape):
    device, backend = device_backend
    x = _randn(*shape, dtype=dtype, device=device)
    with use_backend(backend):
        value, grad = tv(x)
    ref_value, ref_grad = tv_ref(x)
    assert value.shape == (shape[0],) and grad.shape == shape
    assert_close(value, ref_value, scale=max(1.0, ref_value.abs().max().item()))
    assert_close(grad, ref_grad, scale=max(1.0, ref_grad.abs().max().item()))


def test_tv_of_nchw_and_of_a_constant_image(device_backend):
    device, backend = device_backend
    x = _randn(2, 3, 6, 5, device=device)
    flat = torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64, device=device)
    with use_backend(backend):
        value, grad = tv(x)
        zero_value, zero_grad = tv(flat)
    ref_value, ref_grad = tv_ref(x)
    assert value.shape == () and grad.shape == x.shape
    assert_close(value, ref_value)
    assert_close(grad, ref_grad)
    assert zero_value == 0 and (zero_grad == 0).all()  # zero differences: sign 0, no NaN


def test_tv_gradcheck(device_backend):
    device, backend = device_backend
    x = _randn(2, 1, 2, 4, 5, device=device).requires_grad_(True)

    def value(t):
        with use_backend(backend):
            return tv(t)[0]

    assert torch.autograd.gradcheck(value, (x,))


# ----------------------------------------------------------------------------------- attack_step
def _adam_state(shape, dtype, device, seed=0):
    x = _randn(*shape, dtype=dtype, seed=seed, device=device)
    grad = _randn(*shape, dtype=dtype, seed=seed + 1, device=device)
    m = 0.1 * _randn(*shape, dtype=dtype, seed=seed + 2, device=device)
    v = torch.rand(shape, generator=torch.Generator().manual_seed(seed + 3), dtype=dtype).to(device)
    return x, grad, m, v


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("R", [1, 5])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("box", [False, True])
def test_attack_step_matches_the_reference(device_backend, dtype, R, signed, box):
    device, backend = device_backend
    shape = (R, 2, 3, 7, 5)
    x, grad, m, v = _adam_state(shape, dtype, device)
    lr = torch.linspace(0.05, 0.2, R, dtype=dtype, device=device) if R > 1 else torch.tensor(0.1, dtype=dtype, device=device)
    bc1, bc2 = (torch.tensor(c, dtype=dtype, device=device) for c in (1 - 0.9**3, 1 - 0.999**3))
    lower = upper = None
    if box:
        lower = torch.tensor([-0.4, -0.1, -1.0], dtype=dtype, device=device).view(3, 1, 1)
        upper = torch.tensor([0.3, 0.2, 1.0], dtype=dtype, device=device).view(3, 1, 1)
    got = [t.clone() for t in (x, m, v)]
    want = [t.clone() for t in (x, m, v)]
    with use_backend(backend):
        attack_step(got[0], grad, got[1], got[2], lr, bc1, bc2, signed=signed, lower=lower, upper=upper)
    ref_lr = lr.view(-1, 1, 1, 1, 1) if R > 1 else lr
    attack_step_ref(want[0], grad, want[1], want[2], ref_lr, bc1, bc2, signed=signed, lower=lower, upper=upper)
    for a, b in zip(got, want):
        assert_close(a, b)
    if box:
        assert (got[0] >= lower - 1e-7).all() and (got[0] <= upper + 1e-7).all()


def test_attack_step_zero_gradient_from_rest_keeps_x(device_backend):
    device, backend = device_backend
    x = _randn(1, 1, 1, 3, 4, device=device)
    before = x.clone()
    zeros = torch.zeros_like(x)
    m, v = zeros.clone(), zeros.clone()
    one = torch.tensor(1.0, dtype=torch.float64, device=device)
    with use_backend(backend):
        for signed in (False, True):
            attack_step(x, zeros, m, v, 0.1 * one, one - 0.9, one - 0.999, signed=signed)
    assert torch.equal(x, before) and not m.any() and not v.any()


def test_attack_step_noncontiguous_state_is_written_back(device_backend):
    device, backend = device_backend
    x, grad, m, v = _adam_state((3, 4, 5), torch.float64, device)
    xt = x.transpose(1, 2).contiguous().transpose(1, 2)  # same values, not contiguous
    assert not xt.is_contiguous()
    want = [t.clone() for t in (x, m, v)]
    one = torch.tensor(1.0, dtype=torch.float64, device=device)
    with use_backend(backend):
        attack_step(xt, grad, m, v, 0.1 * one, one - 0.9, one - 0.999)
    attack_step_ref(want[0], grad, want[1], want[2], 0.1 * one, one - 0.9, one - 0.999)
    assert_close(xt, want[0])
    assert_close(m, want[1])


def test_zero_size_inputs(device_backend):
    device, backend = device_backend
    f64 = dict(dtype=torch.float64, device=device)
    one = torch.tensor(1.0, **f64)
    with use_backend(backend):
        loss, grad = grad_match(torch.zeros(0, 5, **f64), torch.ones(5, **f64))
        assert loss.shape == (0,) and grad.shape == (0, 5)
        loss, grad = grad_match(torch.zeros(2, 0, **f64), torch.zeros(0, **f64), "cosine")
        assert loss.tolist() == [1.0, 1.0] and grad.shape == (2, 0)  # empty vectors: undefined cosine
        loss, _ = grad_match(torch.zeros(2, 0, **f64), torch.zeros(0, **f64), "l2")
        assert loss.tolist() == [0.0, 0.0]
        value, grad = tv(torch.zeros(0, 1, 1, 4, 4, **f64))
        assert value.shape == (0,) and grad.shape == (0, 1, 1, 4, 4)
        x = torch.zeros(0, 3, **f64)
        attack_step(x, x, x.clone(), x.clone(), one, one, one)


# ------------------------------------------------------------------------------------- opcheck
def _opcheck_args():
    trial, target = _randn(3, 7), _randn(7, seed=1)
    x, grad, m, v = _adam_state((2, 1, 3, 4), torch.float64, "cpu")
    scalars = [torch.tensor([c], dtype=torch.float64) for c in (0.1, 0.1, 0.001)]
    return {
        "grad_match": [(trial, target, None, "cosine"), (trial, target, torch.rand(7, dtype=torch.float64), "l2")],
        "tv": [(_randn(2, 1, 2, 4, 5),)],
        "attack_step": [(x, grad, m, v, *scalars, 0.9, 0.999, 1e-8, True, -torch.ones(1, 3, 4, dtype=torch.float64),
                         torch.ones(1, 3, 4, dtype=torch.float64))],
    }


@pytest.mark.parametrize("op", ["grad_match", "tv", "attack_step"])
def test_opcheck(device_backend, op):
    """opcheck on ``torch.ops.i2f_fast.<op>``: the compiled kernel of the device when loaded, else
    the reference registered as its CompositeExplicitAutograd kernel."""
    device, backend = device_backend
    if backend != "native":
        pytest.skip("torch.ops.i2f_fast.<op> runs the native kernel (or the reference when none is built)")
    for args in _opcheck_args()[op]:
        args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
        torch.library.opcheck(getattr(torch.ops.i2f_fast, op).default, args)


@pytest.mark.parametrize("op", ["grad_match", "tv", "attack_step"])
def test_opcheck_triton(device_backend, op):
    device, backend = device_backend
    if backend != "triton":
        pytest.skip("Triton op only")
    import importlib

    importlib.import_module(f"i2f_fast.triton.{op}")  # registers i2f_fast::<op>_triton
    # AOT tracing of a triton_op runs its kernels on fake tensors, which the CPU interpreter cannot.
    utils = ("test_schema", "test_autograd_registration", "test_faketensor") if device == "cpu" else None
    kwargs = {"test_utils": utils} if utils else {}
    for args in _opcheck_args()[op]:
        args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
        torch.library.opcheck(getattr(torch.ops.i2f_fast, f"{op}_triton").default, args, **kwargs)


# ------------------------------------------------------------------------------------ bad input
def test_grad_match_bad_input_names_the_argument():
    trial, target = torch.zeros(2, 5), torch.zeros(5)
    with pytest.raises(ValueError, match="kind"):
        grad_match(trial, target, "l1")
    with pytest.raises(ValueError, match="trial must be"):
        grad_match(target, target)
    with pytest.raises(ValueError, match="target must have shape"):
        grad_match(trial, torch.zeros(4))
    with pytest.raises(TypeError, match="target must have trial's dtype"):
        grad_match(trial, target.double())
    with pytest.raises(ValueError, match="weights must have shape"):
        grad_match(trial, target, weights=torch.ones(6))
    with pytest.raises(TypeError, match="trial must be float32 or float64"):
        grad_match(trial.half(), target.half())


def test_tv_and_attack_step_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="x must be"):
        tv(torch.zeros(3, 4, 5))
    with pytest.raises(TypeError, match="x must be float32"):
        tv(torch.zeros(1, 1, 3, 4, dtype=torch.int64))
    x = torch.zeros(2, 1, 3, 3)
    one = torch.tensor(1.0)
    with pytest.raises(ValueError, match="exp_avg has shape"):
        attack_step(x, x, x[:1], x, one, one, one)
    with pytest.raises(TypeError, match="grad must have x's dtype"):
        attack_step(x, x.double(), x, x, one, one, one)
    with pytest.raises(ValueError, match="lr must be"):
        attack_step(x, x, x.clone(), x.clone(), torch.ones(3), one, one)
    with pytest.raises(ValueError, match="bias_correction1 must be a 0-d"):
        attack_step(x, x, x.clone(), x.clone(), one, torch.ones(2), one)
    with pytest.raises(ValueError, match="lower does not broadcast"):
        attack_step(x, x, x.clone(), x.clone(), one, one, one, lower=torch.zeros(2, 1, 1))
    with pytest.raises(TypeError, match="upper must be a tensor"):
        attack_step(x, x, x.clone(), x.clone(), one, one, one, upper=1.0)


def test_compiled_kernels_check_their_arguments():
    """Called directly (bypassing the Python checks), the C++ kernels reject bad input by name."""
    from i2f_fast.backend import unavailable_reason

    if unavailable_reason("native", torch.device("cpu")):
        pytest.skip("C++ extension not built")
    with pytest.raises(RuntimeError, match="target must have shape"):
        torch.ops.i2f_fast.grad_match(torch.zeros(2, 5), torch.zeros(4), None, "cosine")
    with pytest.raises(RuntimeError, match="kind must be"):
        torch.ops.i2f_fast.grad_match(torch.zeros(2, 5), torch.zeros(5), None, "l1")
    with pytest.raises(RuntimeError, match="x must be a 5-D"):
        torch.ops.i2f_fast.tv(torch.zeros(2, 5))
    x, one = torch.zeros(2, 3), torch.ones(1)
    with pytest.raises(RuntimeError, match="lower must have the 3 elements"):
        torch.ops.i2f_fast.attack_step(x, x, x.clone(), x.clone(), one, one, one, 0.9, 0.999, 1e-8, False,
                                       torch.zeros(4), None)
