"""Bad input to i2f_fast.solvers: a clean error naming the argument."""
import pytest
import torch

from bad_input import check_clean_error
from i2f_fast import solvers

B = torch.randn(2, 4, dtype=torch.float64)


def identity(v):
    return v


CASES = [
    pytest.param(lambda: solvers.cg(identity, B, -1.0), "eps", id="cg-eps-negative"),
    pytest.param(lambda: solvers.cg(identity, B, float("nan")), "eps", id="cg-eps-nan"),
    pytest.param(lambda: solvers.cg(identity, B.long(), 1.0), "b", id="cg-b-int"),
    pytest.param(lambda: solvers.cg(identity, B * float("nan"), 1.0), "b", id="cg-b-nan"),
    pytest.param(lambda: solvers.cg(identity, B[0], 1.0), "b", id="cg-b-1d"),
    pytest.param(lambda: solvers.cg(identity, B, 1.0, tol=0.0), "tol", id="cg-tol-0"),
    pytest.param(lambda: solvers.cg(identity, B, 1.0, max_iter=0), "max_iter", id="cg-max_iter-0"),
    pytest.param(lambda: solvers.lanczos(identity, 4, 0), "k", id="lanczos-k-0"),
    pytest.param(lambda: solvers.lanczos(identity, 4, 5), "k", id="lanczos-k-above-dim"),
    pytest.param(lambda: solvers.cg("A", B, 1.0), "matvec", id="cg-matvec-string"),
    pytest.param(lambda: solvers.lanczos(identity, 4, "1"), "k", id="lanczos-k-string"),
    pytest.param(lambda: solvers.power_iteration(identity, -1), "dim", id="power-dim-negative"),
    pytest.param(lambda: solvers.lsqr(identity, "At", B), "apply_AT", id="lsqr-adjoint-string"),
    pytest.param(lambda: solvers.lsqr(identity, identity, B, torch.tensor([1.0, -1.0])), "eps", id="lsqr-eps-row-negative"),
    pytest.param(lambda: solvers.lsqr(identity, identity, B, 0.0, tol="a"), "tol", id="lsqr-tol-string"),
    pytest.param(lambda: solvers.dense_spectrum(identity, 0), "dim", id="dense-spectrum-dim-0"),
    pytest.param(lambda: solvers.dense_spectrum(identity, 4, block=0), "block", id="dense-spectrum-block-0"),
]


@pytest.mark.parametrize("call, argument", CASES)
def test_bad_input_gets_a_clean_error_naming_the_argument(call, argument):
    check_clean_error(call, argument)
