"""Fake (meta) kernels and autograd formulas of the fused ops, defined once (DESIGN.md §4).

Both the library ops ``i2f_fast::<op>`` (registered by ``ops/<op>.py``) and their Triton custom ops
``i2f_fast::<op>_triton`` (``triton/<op>.py``) take the same arguments and return the same
outputs, so they share these formulas through :func:`register`. This module sits below both
``ops/`` and ``triton/`` and imports neither (no import circle).

Fake kernels describe output shapes, dtypes and devices for ``torch.compile`` and
``torch.library.opcheck``; autograd formulas exist for the differentiable ops (``grad_match``:
the loss in the trial and target gradients; ``tv``: the value in ``x``).
"""
from __future__ import annotations

import torch


# ----------------------------------------------------------------------------------- fakes
def _attack_step_fake(x, grad, exp_avg, exp_avg_sq, lr, bias_correction1, bias_correction2, beta1, beta2, eps,
                      signed, lower, upper):
    return None  # updates x, exp_avg, exp_avg_sq in place


def _ce_hvp_fake(p, u, scale):
    return torch.empty_like(u, memory_format=torch.contiguous_format)


def _cg_step_fake(x, r, p, Ap, rr, active):
    return torch.empty_like(rr), torch.empty_like(active)


def _dual_act_fake(z, t, s, da, act, alpha, threshold):
    return torch.empty_like(t, memory_format=torch.contiguous_format)


def _grad_match_fake(trial, target, weights, kind):
    return trial.new_empty(trial.shape[0]), torch.empty_like(trial)


def _gram_apply_fake(a, e, adot, edot, bias):
    k, (G, S, I), O = adot.shape[0], a.shape, e.shape[2]
    return a.new_empty((k, G, S, O)), a.new_empty((k, G, S, I))


def _tv_fake(x):
    return x.new_empty(x.shape[0]), torch.empty_like(x)


# ------------------------------------------------------------------------- autograd formulas
def _grad_match_setup(ctx, inputs, output):
    trial, target, weights, kind = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(trial, target, weights, output[1])
    ctx.kind = kind


def _grad_match_backward(ctx, grad_loss, _grad_of_grad):
    """Gradients of ``loss`` with respect to ``trial`` (the fused ``grad`` output) and ``target``;
    ``weights`` and ``kind`` are not differentiable."""
    trial, target, weights, grad = ctx.saved_tensors
    d_trial = grad_loss.unsqueeze(1) * grad if ctx.needs_input_grad[0] else None
    d_target = None
    if ctx.needs_input_grad[1]:
        if ctx.kind == "l2":
            d_target = -(grad_loss @ grad)
        else:  # ∂loss_r/∂g = −scale_r · w ⊙ (g'_r − (⟨g'_r, g⟩_w / ‖g‖²_w) g) on rows with a defined cosine
            wt = target if weights is None else weights * target
            wtrial = trial if weights is None else weights * trial
            dot, trial_sq, target_sq = trial @ wt, (wtrial * trial).sum(dim=1), wt @ target
            defined = (trial_sq > 0) & (target_sq > 0)
            scale = torch.where(defined, (torch.where(defined, trial_sq * target_sq, 1)).rsqrt(), 0) * grad_loss
            ratio = dot / torch.where(target_sq > 0, target_sq, 1)
            d_target = -(scale @ wtrial) + (scale * ratio).sum() * wt
    return d_trial, d_target, None, None


def _tv_setup(ctx, inputs, output):
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1])


def _tv_backward(ctx, grad_value, _grad_of_grad):
    (grad,) = ctx.saved_tensors
    return grad_value.view(-1, 1, 1, 1, 1) * grad


FAKES = {
    "attack_step": _attack_step_fake,
    "ce_hvp": _ce_hvp_fake,
    "cg_step": _cg_step_fake,
    "dual_act": _dual_act_fake,
    "grad_match": _grad_match_fake,
    "gram_apply": _gram_apply_fake,
    "tv": _tv_fake,
}
"""Op name → its fake kernel."""

AUTOGRAD = {
    "grad_match": (_grad_match_backward, _grad_match_setup),
    "tv": (_tv_backward, _tv_setup),
}
"""Op name → ``(backward, setup_context)`` for the differentiable ops."""


def register(op: str, custom_op=None) -> None:
    """Register ``op``'s fake kernel (and autograd formula, when it has one) on the library op
    ``i2f_fast::<op>`` (``custom_op`` None) or on a custom op object such as a Triton op."""
    if custom_op is None:
        torch.library.register_fake(f"i2f_fast::{op}")(FAKES[op])
        if op in AUTOGRAD:
            backward, setup = AUTOGRAD[op]
            torch.library.register_autograd(f"i2f_fast::{op}", backward, setup_context=setup)
        return
    custom_op.register_fake(FAKES[op])
    if op in AUTOGRAD:
        backward, setup = AUTOGRAD[op]
        custom_op.register_autograd(backward, setup_context=setup)
