"""Helpers of the bad-input suites (``test_bad_input_<module>.py``): one case = one bad input.

A case passes when the call raises ``ValueError``, ``TypeError`` or ``FloatingPointError`` whose
message names the argument; it fails on a silent result (no error) and on an error from deep
inside torch that does not name it. :func:`assert_unchanged` checks that the caller's model and
tensors come back exactly as they were given (dtype, device, values, buffers, ``requires_grad``,
training flags).
"""
import re

import pytest
import torch
import torch.nn as nn

CLEAN_ERRORS = (ValueError, TypeError, FloatingPointError)


def check_clean_error(call, argument: str) -> None:
    """``call()`` raises a clean error (:data:`CLEAN_ERRORS`) whose message names ``argument`` (as a
    whole word: ``k`` is not named by "takes")."""
    with pytest.raises(CLEAN_ERRORS) as info:
        call()
    named = re.search(rf"(?<!\w){re.escape(argument)}(?!\w)", str(info.value))
    assert named, f"the error does not name {argument!r}: {type(info.value).__name__}: {info.value}"


def bn_model(dtype=torch.float64) -> nn.Module:
    """A small CNN with BatchNorm and Dropout on (1, 6, 6) inputs, 3 classes, in training mode,
    whose running statistics have been updated once (so that a change is visible)."""
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Sigmoid(), nn.Flatten(), nn.Dropout(0.0), nn.Linear(2 * 4 * 4, 3),
    ).to(dtype)
    with torch.no_grad():
        model(torch.randn(4, 1, 6, 6, dtype=dtype))
    return model.train()


def snapshot(*objects) -> list:
    """Everything of ``objects`` (modules and tensors) that a call must not change."""
    state = []
    for obj in objects:
        if isinstance(obj, nn.Module):
            tensors = list(obj.state_dict(keep_vars=True).items())
            state.append([(k, t.dtype, t.device, t.requires_grad, t.detach().clone()) for k, t in tensors])
            state.append([m.training for m in obj.modules()])
        else:
            state.append((obj.dtype, obj.device, obj.requires_grad, obj.detach().clone()))
    return state


def assert_unchanged(before: list, *objects) -> None:
    """``objects`` match :func:`snapshot`'s ``before`` exactly (NaN-aware)."""
    after = snapshot(*objects)
    for old, new in zip(before, after):
        if isinstance(old, tuple):
            old, new = [("", *old)], [("", *new)]
        elif old and not isinstance(old[0], tuple):  # training flags
            assert old == new, "training flags changed"
            continue
        for (k, *meta_old, v_old), (_, *meta_new, v_new) in zip(old, new):
            assert meta_old == meta_new, f"{k}: dtype/device/requires_grad changed"
            assert torch.equal(v_old, v_new) or bool(((v_old == v_new) | (v_old.isnan() & v_new.isnan())).all()), f"{k}: values changed"
