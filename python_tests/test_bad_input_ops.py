"""Bad input to the fused ops (i2f_fast.ops) and the backend switch: a clean error naming the op's
argument, never an error from inside a kernel (half precision included)."""
import pytest
import torch

from bad_input import check_clean_error
from i2f_fast import use_backend
from i2f_fast.ops import attack_step, ce_hvp, cg_step, dual_act, grad_match, gram_apply, tv

Z = torch.zeros(2, 3)
ONE = torch.ones(())


def enter(name):
    return lambda: use_backend(name).__enter__()


CASES = [
    pytest.param(enter("cuda"), "backend", id="use_backend-unknown"),
    pytest.param(lambda: tv(torch.zeros(1, 1, 4, 4, dtype=torch.long)), "x", id="tv-int"),
    pytest.param(lambda: tv(torch.zeros(1, 1, 4, 4, dtype=torch.half)), "x", id="tv-half"),
    pytest.param(lambda: tv(torch.zeros(4, 4)), "x", id="tv-2d"),
    pytest.param(lambda: grad_match(Z, torch.zeros(3), "l1"), "kind", id="grad_match-kind"),
    pytest.param(lambda: grad_match(Z, torch.zeros(4)), "target", id="grad_match-target-shape"),
    pytest.param(lambda: grad_match(Z, torch.zeros(3, dtype=torch.float64)), "target", id="grad_match-target-dtype"),
    pytest.param(lambda: grad_match(Z.half(), torch.zeros(3).half()), "trial", id="grad_match-half"),
    pytest.param(lambda: grad_match(Z, torch.zeros(3), weights=torch.zeros(2)), "weights", id="grad_match-weights-shape"),
    pytest.param(lambda: cg_step(Z, Z, Z, Z, torch.ones(2), torch.ones(2)), "active", id="cg_step-active-dtype"),
    pytest.param(lambda: cg_step(Z, Z, Z, torch.zeros(2, 4), torch.ones(2), torch.ones(2, dtype=torch.bool)), "Ap",
                 id="cg_step-Ap-shape"),
    pytest.param(lambda: cg_step(Z.half(), Z.half(), Z.half(), Z.half(), torch.ones(2).half(), torch.ones(2, dtype=torch.bool)),
                 "x", id="cg_step-half"),
    pytest.param(lambda: ce_hvp(Z.half(), Z.half().unsqueeze(0)), "p", id="ce_hvp-half"),
    pytest.param(lambda: ce_hvp(Z.bfloat16(), Z.bfloat16().unsqueeze(0)), "p", id="ce_hvp-bfloat16"),
    pytest.param(lambda: ce_hvp(Z, torch.zeros(1, 2, 4)), "u", id="ce_hvp-u-shape"),
    pytest.param(lambda: ce_hvp(Z, Z.unsqueeze(0), scale="1"), "scale", id="ce_hvp-scale-string"),
    pytest.param(lambda: dual_act(torch.zeros(3), torch.zeros(1, 3), act="swish"), "act", id="dual_act-act"),
    pytest.param(lambda: dual_act(torch.zeros(3), torch.zeros(1, 3), s=torch.zeros(1, 3)), "da", id="dual_act-s-without-da"),
    pytest.param(lambda: gram_apply(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), torch.zeros(1, 1, 2, 3), torch.zeros(1, 1, 2, 4),
                                    bias=1), "bias", id="gram_apply-bias-int"),
    pytest.param(lambda: gram_apply(torch.zeros(1, 2, 3), torch.zeros(1, 3, 4), torch.zeros(1, 1, 2, 3), torch.zeros(1, 1, 3, 4)),
                 "e", id="gram_apply-e-shape"),
    pytest.param(lambda: attack_step(Z, Z, Z, Z, torch.zeros(3), ONE, ONE), "lr", id="attack_step-lr-shape"),
    pytest.param(lambda: attack_step(Z, Z, Z, torch.zeros(2, 4), ONE, ONE, ONE), "exp_avg_sq", id="attack_step-moment-shape"),
    pytest.param(lambda: attack_step(Z, Z, Z, Z, ONE, ONE, ONE, lower=torch.zeros(4)), "lower", id="attack_step-lower-shape"),
]


@pytest.mark.parametrize("call, argument", CASES)
def test_bad_input_gets_a_clean_error_naming_the_argument(call, argument):
    check_clean_error(call, argument)
