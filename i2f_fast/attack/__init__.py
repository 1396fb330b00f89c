"""Gradient-inversion attacks: recover a private batch from its shared gradient.

A package: :mod:`.presets` (attack names, :class:`AttackConfig`, the Adam schedule),
:mod:`.labels` (label inference), :mod:`.objective` (trial gradients, matching loss, ``Jᵀw``),
:mod:`.loops` (Adam / L-BFGS) and :mod:`.invert` (the checked entry point).

Given the model, a (possibly defended) gradient ``g`` of the cross-entropy loss of a private batch
and the batch shape, :func:`invert` searches for ``x'`` whose gradient matches ``g``::

    min_x'  dist(∇_θ L(x', y), g) + α_TV · TV(x')

* ``attack="dlg"`` (Deep Leakage from Gradients, Zhu et al. 2019): ``dist`` = squared L2 distance,
  Adam (lr 0.1, the paper's code) or L-BFGS (``optimizer="lbfgs"``, as in the original DLG); no
  sign, no box, constant step.
* ``attack="gs"`` (Inverting Gradients, Geiping et al. 2020): ``dist`` = 1 − global cosine
  similarity over all layers, signed gradients, Adam lr 0.1, projection onto the box ``bounds``
  (the valid normalised image range, e.g. ``ImageBatch.pixel_bounds``) after every step, step size
  ×0.1 at ⌊T/2.667⌋, ⌊T/1.6⌋, ⌊T/1.142⌋ (≈ 3/8, 5/8, 7/8 of T iterations), as in inversefed.

**Restarts run together.** The R restarts are one ``(R, *shape)`` tensor, and each restart has
its own Jacobian ``J_r``: on the CPU their samples go through the structured product engine in
per-sample mode (:mod:`i2f_fast.engine`, the engine I²F uses), so one batched forward/backward
gives every restart's trial gradient and one transpose sweep every ``Jᵀ_r w_r``; a single restart
uses plain autograd, and models the engine cannot represent (and CUDA tensors) ``torch.func``
(:mod:`.objective`). Each iteration is the model's own work plus three fused ops
(:mod:`i2f_fast.ops`), each with a pure-PyTorch reference kernel that it replaces one to one:

1. trial gradients ``g'`` ``(R, P)``, written into one flat buffer (:class:`~i2f_fast.flat.FlatLayout`),
   and the pullback ``w ↦ Jᵀw`` (engine: the primal cached by the node rules; autograd: the
   create-graph backward);
2. :func:`~i2f_fast.ops.grad_match`: matching loss ``(R,)`` and ``w = ∂dist/∂g'`` ``(R, P)`` in
   one pass over the flat buffer;
3. the input gradient ``Jᵀw = ∇_x⟨∇_θ L(x'), w⟩`` (the same mixed product as I²F's, DESIGN.md §1)
   plus ``α_TV ∇TV`` from :func:`~i2f_fast.ops.tv`;
4. :func:`~i2f_fast.ops.attack_step`: (signed) Adam step and box projection on all restarts at once,
   with the step size and bias corrections read from a precomputed device table.

``invert(..., backend=...)`` picks the kernels (:mod:`i2f_fast.backend`; by default the fused
C++/CUDA kernels when built); ``backend="reference"`` runs the reference loop, whose results the
fused loop matches within rounding (``python_tests/test_fused_attack.py``). The loop reads the
host only for the progress bar, every ``max(history_every, 10)`` iterations. On CUDA one
iteration is captured as a CUDA graph and replayed (:mod:`i2f_fast.cuda_graphs`), falling back to
eager execution, with the reason logged, when the model cannot be captured.

The best restart is the one with the smallest matching loss at its final iterate.
"""
from .invert import AttackResult, _choose_onednn, invert  # noqa: F401 (_choose_onednn: benchmarks)
from .labels import LABEL_STRATEGIES, infer_labels
from .objective import _Objective  # noqa: F401 (tests and benchmarks)
from .presets import ATTACKS, INITS, LBFGS_LR, OPTIMIZERS, PRESETS, AttackConfig

__all__ = [
    "ATTACKS", "INITS", "LABEL_STRATEGIES", "LBFGS_LR", "OPTIMIZERS", "PRESETS", "AttackConfig", "AttackResult",
    "infer_labels", "invert",
]
