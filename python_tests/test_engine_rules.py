"""Every hand-written node rule of the engine against the generic ``torch.func`` rule on the node alone.

The generic rule computes the node's four sweeps by ``jvp`` / ``vjp`` of the node's function, so it
is the per-node oracle: tangent, backward tangent with the parameter block, and the two adjoints
(whose contributions to ``ā`` are summed, since a rule may move the second-order term between
them), in batch and per-sample mode, in float64.
"""
import pytest
import torch
import torch.nn.functional as F

from i2f_fast.engine.layers import BatchNormRule, ConvRule, GenericRule, LinearRule
from i2f_fast.engine.rules import (ActivationRule, AddRule, AvgPoolRule, CatRule, LinearMapRule, MaxPoolRule,
                                   ReshapeRule, ScaleRule)
from i2f_fast.reference.dual_act import ACTIVATIONS
from i2f_fast.testing import assert_close

K = 3
DT = torch.float64


def randn(*shape):
    return torch.randn(*shape, dtype=DT)


def prepared(rule, inputs, params, dz, per_sample):
    rule.per_sample = per_sample
    z = rule.forward(inputs, params)
    rule.prepare(inputs, params, z, dz)
    return z


def check_rule(rule, fn, inputs, params, per_sample=False):
    """Compare ``rule`` with ``GenericRule(fn)`` on random tangents, adjoints and parameter vectors."""
    generic = GenericRule(lambda ins, ps: fn(*ins, *ps), rule.param_slots)
    z = rule.forward(inputs, params)
    dz = randn(*z.shape)
    for r in (rule, generic):
        prepared(r, inputs, params, dz, per_sample)
    assert_close(z, generic.forward(inputs, params))
    lead = (K, inputs[0].shape[0]) if per_sample else (K,)
    adots = [randn(K, *a.shape) for a in inputs]
    dzdot = randn(K, *z.shape)
    ebars = [randn(K, *a.shape) for a in inputs]
    us = [randn(*lead, *p.shape) for p in params]
    abar = randn(K, *z.shape)

    assert_close(rule.tangent(adots), generic.tangent(adots))
    got_da, got_g = rule.tangent_back(adots, dzdot)
    want_da, want_g = generic.tangent_back(adots, dzdot)
    for got, want in zip(list(got_da) + list(got_g), list(want_da) + list(want_g)):
        assert_close(got, want)

    def adjoints(r):
        ez, second = r.adjoint_up(ebars, us)
        down = r.adjoint_down(abar)
        return ez, [(s if s is not None else 0) + (d if d is not None else 0) for s, d in zip(second, down)]

    got_ez, got_abar = adjoints(rule)
    want_ez, want_abar = adjoints(generic)
    assert_close(got_ez, want_ez)
    for got, want in zip(got_abar, want_abar):
        assert_close(got, want)
    return rule, adots, dzdot, ebars


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 5)], ids=["rows", "tokens"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(per_sample, shape, bias):
    W, b = randn(6, 5), randn(6)
    params = [W, b] if bias else [W]
    rule = LinearRule(0, 1 if bias else None)
    check_rule(rule, lambda a, *p: F.linear(a, *p), [randn(*shape)], params, per_sample)


@pytest.mark.parametrize("per_sample", [False, True])
def test_linear_gram_form_equals_the_materialised_block(per_sample):
    rule = LinearRule(0, 1)
    prepared(rule, [randn(2, 3, 20)], [randn(24, 20), randn(24)], randn(2, 3, 24), per_sample)
    assert rule.use_gram  # 6 (or 3) rows: S·(I + O) < I·O
    adots, dzdot, ebars = [randn(K, 2, 3, 20)], randn(K, 2, 3, 24), [randn(K, 2, 3, 20)]
    _, compact = rule.tangent_back(adots, dzdot, materialize=False)
    _, full = rule.tangent_back(adots, dzdot, materialize=True)
    assert compact[0] == "gram"
    got_ez, got_second = rule.adjoint_up(ebars, compact)
    want_ez, want_second = rule.adjoint_up(ebars, full)
    assert_close(got_ez, want_ez)
    assert_close(got_second[0], want_second[0])


@pytest.mark.parametrize("channels", [4, 2])  # 2: per sample, the image-input layer's col2im adjoint too
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("stride, padding, dilation, groups, bias", [
    (1, 1, 1, 1, True), (2, 2, 1, 1, True), (1, 0, 2, 2, False), (2, 1, 1, 2, True), (3, 1, 1, 1, False),
    (1, 2, 2, 1, True),
])
def test_conv2d(per_sample, stride, padding, dilation, groups, bias, channels):
    W = randn(4, channels // groups, 3, 3)
    params = [W, randn(4)] if bias else [W]
    rule = ConvRule(0, 1 if bias else None, (stride,) * 2, (padding,) * 2, (dilation,) * 2, groups)

    def conv(a, w, b=None):
        return F.conv2d(a, w, b, stride, padding, dilation, groups)

    check_rule(rule, conv, [randn(2, channels, 7, 6)], params, per_sample)


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("shape", [(3, 4), (2, 4, 3, 3)], ids=["1d", "2d"])
def test_batchnorm_eval(per_sample, shape):
    mean, var = randn(4), torch.rand(4, dtype=DT) + 0.5
    rule = BatchNormRule(mean, var, 1e-5, 0, 1)
    check_rule(rule, lambda a, w, b: F.batch_norm(a, mean, var, w, b, False, 0.0, 1e-5),
               [randn(*shape)], [randn(4), randn(4)], per_sample)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activation(act):
    alpha, threshold = {"leaky_relu": (0.2, 20.0), "elu": (1.3, 20.0), "softplus": (1.5, 2.0)}.get(act, (0.0, 20.0))
    fn = {
        "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "silu": F.silu, "gelu": F.gelu,
        "gelu_tanh": lambda a: F.gelu(a, approximate="tanh"), "leaky_relu": lambda a: F.leaky_relu(a, alpha),
        "elu": lambda a: F.elu(a, alpha), "softplus": lambda a: F.softplus(a, alpha, threshold),
    }[act]
    z = 3 * randn(2, 3, 4)
    check_rule(ActivationRule(act, alpha, threshold, fn), fn, [z], [])


def test_max_pool_with_overlapping_windows_and_ceil_mode():
    spec = dict(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=True)
    check_rule(MaxPoolRule(spec), lambda a: F.max_pool2d(a, **spec), [randn(2, 3, 7, 6)], [])


@pytest.mark.parametrize("adaptive", [False, True])
def test_avg_pool(adaptive):
    spec = dict(output_size=(2, 3)) if adaptive else dict(kernel_size=3, stride=2, padding=1, ceil_mode=False,
                                                           count_include_pad=False, divisor_override=None)
    pool = (lambda a: F.adaptive_avg_pool2d(a, **spec)) if adaptive else (lambda a: F.avg_pool2d(a, **spec))
    check_rule(AvgPoolRule(adaptive, spec), pool, [randn(2, 3, 7, 6)], [])


def test_reshape_and_linear_maps():
    check_rule(ReshapeRule(lambda a: a.flatten(1)), lambda a: a.flatten(1), [randn(2, 3, 4)], [])
    check_rule(LinearMapRule(lambda a: a.transpose(1, 2).mean(1), 1), lambda a: a.transpose(1, 2).mean(1),
               [randn(2, 3, 4)], [])


def test_add_with_broadcasting_and_a_constant():
    constant = randn(4)
    check_rule(AddRule([1.0, -1.0], constant), lambda a, b: a - b + constant, [randn(2, 3, 4), randn(2, 1, 4)], [])


def test_scale_and_concatenation():
    check_rule(ScaleRule(0.25), lambda a: a * 0.25, [randn(2, 3)], [])
    constant = randn(2, 1, 3)
    check_rule(CatRule([1, constant, 0], 1), lambda a, b: torch.cat([b, constant, a], 1),
               [randn(2, 2, 3), randn(2, 4, 3)], [])
