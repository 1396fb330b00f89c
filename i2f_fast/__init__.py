"""i2f_fast: fast Inversion Influence Function (I²F) — how much private data leaks through gradients.

Quick start::

    import i2f_fast
    from i2f_fast.models import lenet
    from i2f_fast.data import digits

    batch = digits(n=1)
    model = lenet()
    delta = 1e-2 * torch.randn(sum(p.numel() for p in model.parameters()))
    res = i2f_fast.i2f(model, batch.images, batch.labels, delta)   # calibrated damping 1e-8·λ_max
    print(res.value, res.rmse)   # predicted ‖x̂ − x‖ of the DLG attack, and per-element RMSE
"""
from .attack import AttackResult, invert
from .backend import BackendUnavailableError, use_backend
from .influence import (
    EigenPairs,
    ExpectedI2F,
    I2FResult,
    InversionInfluence,
    LowerBoundResult,
    expected_i2f_sq,
    i2f,
    i2f_lower_bound,
    max_eigenvalue,
    top_eigenpairs,
)
from .operators import InversionJacobian
from .solvers import CGResult, DenseSpectrum, EigenResult, cg, cgls, lanczos, lsqr, power_iteration

__version__ = "0.1.0"

__all__ = [
    "AttackResult",
    "BackendUnavailableError",
    "CGResult",
    "DenseSpectrum",
    "EigenPairs",
    "EigenResult",
    "ExpectedI2F",
    "I2FResult",
    "InversionInfluence",
    "InversionJacobian",
    "LowerBoundResult",
    "cg",
    "cgls",
    "expected_i2f_sq",
    "i2f",
    "i2f_lower_bound",
    "invert",
    "lanczos",
    "lsqr",
    "max_eigenvalue",
    "power_iteration",
    "top_eigenpairs",
    "use_backend",
]
