"""Shared fixtures: small float64 models and their dense Jacobians (torch.func.jacrev) as the oracle,
and the device × backend matrix that every op test runs over."""
import os

import torch

if not torch.cuda.is_available():  # no GPU: Triton kernels run on CPU tensors in the interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch.nn as nn
from torch.func import functional_call, jacrev


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
KERNEL_BACKENDS = ("reference", "native", "triton")


@pytest.fixture(params=[(d, b) for d in DEVICES for b in KERNEL_BACKENDS], ids=lambda db: f"{db[0]}-{db[1]}")
def device_backend(request):
    """``(device, backend)`` for every device here and every kernel backend; unavailable ones skip
    with the reason (e.g. the native kernels when the extension is not built)."""
    from i2f_fast.backend import unavailable_reason

    device, backend = request.param
    why = unavailable_reason(backend, torch.device(device))
    if why is not None:
        pytest.skip(f"{backend} on {device}: {why}")
    return device, backend


def small_cnn(dtype=torch.float64):
    """Sigmoid CNN on (1, 8, 8) inputs, 4 classes (a miniature of the paper's LeNet)."""
    torch.manual_seed(1)
    m = nn.Sequential(
        nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.Sigmoid(),
        nn.Conv2d(3, 3, 3, stride=1, padding=1), nn.Sigmoid(),
        nn.Flatten(), nn.Linear(3 * 16, 4),
    )
    for p in m.parameters():
        nn.init.uniform_(p, -0.5, 0.5)
    return m.to(dtype).eval()


def small_mlp(dtype=torch.float64):
    """Tanh MLP on 6 features, 3 classes."""
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype).eval()


MODELS = {
    "cnn": (small_cnn, (1, 8, 8), 4),
    "mlp": (small_mlp, (6,), 3),
}


def make_problem(name, n, dtype=torch.float64):
    """(model, x (n, *shape), y (n,)) for a model of MODELS."""
    build, shape, classes = MODELS[name]
    model = build(dtype)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, *shape, generator=g, dtype=dtype)
    y = torch.arange(n) % classes
    return model, x, y


def dense_jacobian(model, x, y):
    """Dense J = ∂(∇_θ L)/∂x, shape (P, D), with L = mean cross-entropy over the batch."""
    params = {k: p.detach() for k, p in model.named_parameters()}

    def flat_grad(xx):
        g = torch.func.grad(lambda p: nn.functional.cross_entropy(functional_call(model, p, (xx,)), y))(params)
        return torch.cat([g[k].reshape(-1) for k in params])

    return jacrev(flat_grad)(x).reshape(-1, x.numel())


def per_sample_jacobians(model, x, y):
    """List of N dense per-sample Jacobians, each (P, D_sample)."""
    return [dense_jacobian(model, x[n : n + 1], y[n : n + 1]) for n in range(x.shape[0])]
