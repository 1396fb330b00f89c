"""torch.compile(fullgraph=True) on CPU through every fused op, as custom-op users expect: each public
function traces into one graph (no graph break: the argument checks and the backend routing run at
trace time), the fake kernels give the right metadata, and the compiled result equals the eager one."""
import pytest
import torch

from i2f_fast import use_backend
from i2f_fast.backend import unavailable_reason
from i2f_fast.ops import attack_step, ce_hvp, cg_step, dual_act, grad_match, gram_apply, tv
from i2f_fast.testing import ELEMENTWISE


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _adam(x, g, m, v):
    lr, bc1, bc2 = torch.tensor(0.1, dtype=x.dtype), torch.tensor(0.1, dtype=x.dtype), torch.tensor(0.001, dtype=x.dtype)
    attack_step(x, g, m, v, lr, bc1, bc2, signed=True, lower=torch.full((1, 1, 1), -1.0, dtype=x.dtype))
    return x, m, v


CASES = {
    "cg_step": (lambda x, r, p, Ap, rr: cg_step(x, r, p, Ap, rr, torch.ones(3, dtype=torch.bool)),
                lambda: (_randn(3, 7), _randn(3, 7, seed=1), _randn(3, 7, seed=2), _randn(3, 7, seed=3), _randn(3, seed=4).abs() + 1)),
    "ce_hvp": (lambda p, u: ce_hvp(p, u, 0.5), lambda: (torch.softmax(_randn(4, 5), -1), _randn(2, 4, 5, seed=1))),
    "dual_act": (lambda z, t, s, da: dual_act(z, t, s, da, "sigmoid"),
                 lambda: (_randn(4, 6), _randn(2, 4, 6, seed=1), _randn(2, 4, 6, seed=2), _randn(4, 6, seed=3))),
    "gram_apply": (lambda a, e, adot, edot: gram_apply(a, e, adot, edot, True),
                   lambda: (_randn(2, 3, 4), _randn(2, 3, 5, seed=1), _randn(2, 2, 3, 4, seed=2), _randn(2, 2, 3, 5, seed=3))),
    "grad_match": (lambda trial, target: grad_match(trial, target, "cosine"), lambda: (_randn(3, 11), _randn(11, seed=1))),
    "tv": (lambda x: tv(x), lambda: (_randn(2, 1, 1, 5, 6),)),
    "attack_step": (_adam, lambda: (_randn(2, 1, 1, 4, 4), _randn(2, 1, 1, 4, 4, seed=1), torch.zeros(2, 1, 1, 4, 4, dtype=torch.float64),
                                    torch.zeros(2, 1, 1, 4, 4, dtype=torch.float64))),
}


DIFFERENTIABLE = {"grad_match", "tv"}  # their first output is differentiable in the first input


def _run(fn, inputs, op):
    """Outputs of ``fn(*inputs)``, plus the gradient of the first output's sum for a differentiable op
    (the backward runs outside the compiled function, through the op's registered autograd formula)."""
    if op in DIFFERENTIABLE:
        inputs[0].requires_grad_(True)
    out = fn(*inputs)
    out = list(out) if isinstance(out, tuple) else [out]
    if op in DIFFERENTIABLE:
        out += torch.autograd.grad(out[0].sum(), inputs[0])
    return [t.detach() for t in out]


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("op", sorted(CASES))
def test_every_fused_op_compiles_without_a_graph_break(op, backend):
    why = unavailable_reason(backend, torch.device("cpu"))
    if why is not None:
        pytest.skip(why)
    fn, make = CASES[op]
    torch._dynamo.reset()
    with use_backend(backend):
        eager = _run(fn, list(make()), op)
        compiled = _run(torch.compile(fn, fullgraph=True, backend="aot_eager"), list(make()), op)
    assert len(compiled) == len(eager)
    for got, want in zip(compiled, eager):
        torch.testing.assert_close(got, want, **ELEMENTWISE[torch.float64])
