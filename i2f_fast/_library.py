"""Every op schema of i2f_fast, defined once with ``torch.library``.

The schemas exist without any compiled ``.so``: the implementations are registered by the modules in
``i2f_fast/ops/`` (reference kernels) and, when built, by the C++/CUDA extensions.
"""
import torch

lib = torch.library.Library("i2f_fast", "DEF")

# One iteration of B independent conjugate-gradient systems (see i2f_fast/ops/cg_step.py).
# Mutates x, r, p in place; returns (rr_new, active_new) as new tensors.
lib.define(
    "cg_step(Tensor(a!) x, Tensor(b!) r, Tensor(c!) p, Tensor Ap, Tensor rr, Tensor active)"
    " -> (Tensor, Tensor)"
)

# The structured JᵀJ engine's kernels (ENGINE.md; see i2f_fast/ops/dual_act.py, ce_hvp.py,
# gram_apply.py). Pure functions: they return new tensors and mutate nothing.
lib.define(
    "dual_act(Tensor z, Tensor t, Tensor? s, Tensor? da, str act, float alpha, float threshold) -> Tensor"
)
lib.define("ce_hvp(Tensor p, Tensor u, float scale) -> Tensor")
lib.define("gram_apply(Tensor a, Tensor e, Tensor adot, Tensor edot, bool bias) -> (Tensor, Tensor)")
# The attack loop's fused ops (see i2f_fast/ops/grad_match.py, tv.py, attack_step.py).
# Matching loss of R trial gradients (R, P) against one target (P,) and its gradient (R, P).
lib.define("grad_match(Tensor trial, Tensor target, Tensor? weights, str kind) -> (Tensor, Tensor)")
# Anisotropic total variation of (R, N, C, H, W) images: value (R,) and gradient (R, N, C, H, W).
lib.define("tv(Tensor x) -> (Tensor, Tensor)")
# One (signed) Adam step + box projection; mutates x, exp_avg, exp_avg_sq in place.
lib.define(
    "attack_step(Tensor(a!) x, Tensor grad, Tensor(b!) exp_avg, Tensor(c!) exp_avg_sq, Tensor lr,"
    " Tensor bias_correction1, Tensor bias_correction2, float beta1, float beta2, float eps, bool signed,"
    " Tensor? lower, Tensor? upper) -> ()"
)
