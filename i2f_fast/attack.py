"""Gradient-inversion attacks: recover a private batch from its shared gradient.

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

**Restarts run together.** The R restarts are one ``(R, *shape)`` tensor; per-restart trial
gradients come from ``torch.func`` (``vmap`` of ``grad`` over ``functional_call``), so one batched
forward/backward serves all restarts. Each iteration is composed of separable pieces, each a
pure-PyTorch reference kernel that a fused op can replace without changing this API:

1. trial gradients ``g'`` ``(R, P)`` and the closure of their vjp (forward + create-graph backward);
2. :func:`~i2f_fast.reference.grad_match.grad_match_ref`: matching loss ``(R,)`` and
   ``w = ∂dist/∂g'`` ``(R, P)`` in closed form;
3. the input gradient ``Jᵀw = ∇_x⟨∇_θ L(x'), w⟩`` (one backward through the cached graph; the same
   mixed product as I²F's, DESIGN.md §1) plus ``α_TV ∇TV`` from :func:`~i2f_fast.reference.tv.tv_ref`;
4. :func:`~i2f_fast.reference.attack_step.attack_step_ref`: (signed) Adam step and box projection
   on all restarts at once.

The best restart is the one with the smallest matching loss at its final iterate.
"""
from __future__ import annotations

import math
import operator
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vjp, vmap

from . import conv_kernels
from ._checks import positive_int
from .operators import LossFn, _stateful_in_training, trainable_parameters
from .reference.attack_step import attack_step_ref
from .reference.grad_match import grad_match_ref
from .reference.tv import tv_ref

ATTACKS = ("gs", "dlg")
"""Names accepted by :func:`invert`'s ``attack``."""

INITS = ("randn", "rand", "zeros")
"""Initialisations of the candidate images: N(0, 1), U(−1, 1) (breaching's ``rand``), zeros."""

OPTIMIZERS = ("adam", "lbfgs")
LBFGS_LR = 1.0  # the original DLG's L-BFGS step (PyTorch's default)

LABEL_STRATEGIES = ("auto", "idlg", "yin")
"""Label inference rules of :func:`infer_labels` (``auto``: iDLG for one sample, Yin for a batch)."""


@dataclass(frozen=True)
class AttackConfig:
    """The settings that define an attack (see the module docstring).

    Attributes:
        match: ``"l2"`` or ``"cosine"`` (the :func:`grad_match_ref` kind).
        signed: Adam on the sign of the gradient.
        decay: step size ×0.1 at ⌊T/2.667⌋, ⌊T/1.6⌋, ⌊T/1.142⌋.
        lr: Adam step size.
        tv: weight α_TV of the total-variation prior.
    """

    match: str
    signed: bool
    decay: bool
    lr: float
    tv: float


PRESETS = {
    # DLG as run by the paper's code (--inv_goal l2): Adam lr 0.1, no sign, no decay, TV 0.
    "dlg": AttackConfig(match="l2", signed=False, decay=False, lr=0.1, tv=0.0),
    # Inverting Gradients (--inv_goal sim): TV 0 is the paper scripts' default (PAPER.md §1.2).
    "gs": AttackConfig(match="cosine", signed=True, decay=True, lr=0.1, tv=0.0),
}
"""Attack name → its default :class:`AttackConfig`; every field can be overridden in :func:`invert`."""


@dataclass
class AttackResult:
    """Result of :func:`invert`.

    Attributes:
        x: ``shape`` (e.g. ``(N, C, H, W)``): the best reconstruction (smallest final matching loss).
        loss: its final matching loss (without the TV term), a float.
        losses: ``(R,)`` final matching loss of every restart.
        labels: ``(N,)`` int64: the labels used (given or inferred).
        restarts: ``(R, *shape)`` the final iterate of every restart (``x = restarts[best]``).
        best: index of the best restart.
        history_steps: ``(H,)`` int64 iteration numbers at which ``history`` was recorded.
        history: ``(H, R)`` objective (matching loss + α_TV·TV) of every restart at those iterations.
        config: the :class:`AttackConfig` used.
        iterations: iterations run.
    """

    x: torch.Tensor
    loss: float
    losses: torch.Tensor
    labels: torch.Tensor
    restarts: torch.Tensor
    best: int
    history_steps: torch.Tensor
    history: torch.Tensor
    config: AttackConfig
    iterations: int


# ----------------------------------------------------------------------------------- checks
def _nonnegative(value, argument: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{argument} must be a finite number >= 0, got {value!r}")
    return float(value)


def flat_gradient(grads, shapes: Sequence[torch.Size], argument: str = "target_grads") -> torch.Tensor:
    """A flat ``(P,)`` gradient from a flat tensor or a list of parameter-shaped tensors.

    Args:
        grads: ``(P,)`` tensor, or a list of tensors shaped like ``shapes``.
        shapes: the trainable parameters' shapes, in ``model.parameters()`` order.
        argument: name used in error messages.

    Raises:
        TypeError: not a tensor or a list of tensors.
        ValueError: wrong count, shape or length, naming ``argument``.
    """
    P = sum(math.prod(s) for s in shapes)
    if isinstance(grads, (list, tuple)):
        if len(grads) != len(shapes):
            raise ValueError(f"{argument} has {len(grads)} tensors, the model has {len(shapes)} trainable parameters")
        for i, (g, s) in enumerate(zip(grads, shapes)):
            if not isinstance(g, torch.Tensor):
                raise TypeError(f"{argument}[{i}] must be a tensor, got {type(g).__name__}")
            if g.shape != s:
                raise ValueError(f"{argument}[{i}] has shape {tuple(g.shape)}, the parameter has {tuple(s)}")
        return torch.cat([g.reshape(-1) for g in grads])
    if not isinstance(grads, torch.Tensor):
        raise TypeError(f"{argument} must be a flat tensor (P,) or a list of parameter-shaped tensors")
    if grads.shape != (P,):
        raise ValueError(f"{argument} must have shape ({P},) (the model's parameter count), got {tuple(grads.shape)}")
    return grads


def _check_model(model) -> list[tuple[str, nn.Parameter]]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    named = trainable_parameters(model)
    if not named:
        raise ValueError("model has no trainable parameters (none with requires_grad=True)")
    stateful = _stateful_in_training(model)
    if stateful is not None:
        raise ValueError(
            f"module '{stateful}' is in training mode (BatchNorm statistics / Dropout): the vectorised attack "
            "needs a functional forward; call model.eval() first"
        )
    return named


def _num_classes(model: nn.Module, shape: tuple[int, ...], dtype, device) -> int:
    """Probe the model on zeros of ``shape``; ValueError naming ``shape`` if it does not fit."""
    try:
        with torch.no_grad():
            out = model(torch.zeros(shape, dtype=dtype, device=device))
    except (RuntimeError, ValueError, IndexError) as err:
        raise ValueError(f"shape {shape} does not match the model's input: {err}") from err
    if out.dim() != 2 or out.shape[0] != shape[0]:
        raise ValueError(f"shape {shape}: the model maps it to {tuple(out.shape)}, expected logits ({shape[0]}, classes)")
    return out.shape[1]


def _element_weights(layer_weights, layers, shapes, dtype, device) -> torch.Tensor | None:
    """Per-element ``(P,)`` weights from per-layer weights and/or a subset of layer indices."""
    L = len(shapes)
    if layer_weights is None and layers is None:
        return None
    per_layer = torch.ones(L, dtype=dtype, device=device)
    if layer_weights is not None:
        values = torch.as_tensor(layer_weights, dtype=dtype, device=device).reshape(-1)
        if values.numel() != L or not torch.isfinite(values).all() or (values < 0).any():
            raise ValueError(f"layer_weights must be {L} finite numbers >= 0 (one per parameter tensor)")
        per_layer = values
    if layers is not None:
        indices = [operator.index(i) for i in layers]
        if not indices or any(not -L <= i < L for i in indices):
            raise ValueError(f"layers must be a non-empty list of parameter-tensor indices in [-{L}, {L}), got {layers!r}")
        mask = torch.zeros(L, dtype=dtype, device=device)
        mask[[i % L for i in indices]] = 1
        per_layer = per_layer * mask
    if not (per_layer > 0).any():
        raise ValueError("layer_weights / layers leave no layer with a positive weight")
    sizes = torch.tensor([math.prod(s) for s in shapes], device=device)
    return per_layer.repeat_interleave(sizes)


# ------------------------------------------------------------------------------ label inference
def infer_labels(model: nn.Module, target_grads, num_samples: int, strategy: str = "auto") -> torch.Tensor:
    """Labels of a private batch from its cross-entropy gradient, read off the last layer.

    Uses the last trainable 2-D parameter whose rows match the classes (the final Linear weight
    ``W``, ``(K, F)``): its gradient row ``k`` is ``Σ_n (p_nk − y_nk) h_n / N``, negative only for
    labels present when the features ``h`` are non-negative (after a sigmoid or ReLU).

    * ``"idlg"`` (Zhao et al. 2020, one sample): ``argmin_k Σ_f ∂L/∂W_kf``.
    * ``"yin"`` (Yin et al. 2021, a batch, as breaching's ``yin``): the ``N`` classes with the most
      negative ``min_f ∂L/∂W_kf`` (assumes distinct labels).
    * ``"auto"``: ``idlg`` for one sample, ``yin`` otherwise.

    Args:
        model: the classifier; its last 2-D trainable parameter must be the ``(K, F)`` output weight.
        target_grads: flat ``(P,)`` or list of parameter-shaped tensors.
        num_samples: N, the batch size (≤ K for ``yin``).
        strategy: one of :data:`LABEL_STRATEGIES`.

    Returns:
        ``(N,)`` int64 labels (for ``yin``, in order of decreasing evidence).

    Raises:
        ValueError: unknown strategy, no output weight, N > K, or ``idlg`` with N > 1.
    """
    if strategy not in LABEL_STRATEGIES:
        raise ValueError(f"strategy must be one of {LABEL_STRATEGIES}, got {strategy!r}")
    named = trainable_parameters(model)
    shapes = [p.shape for _, p in named]
    grads = flat_gradient(target_grads, shapes).split([math.prod(s) for s in shapes])
    weights = [i for i, s in enumerate(shapes) if len(s) == 2]
    if not weights:
        raise ValueError("label inference needs a final Linear layer (a 2-D weight); pass labels instead")
    last = weights[-1]
    w_grad = grads[last].reshape(shapes[last])
    classes = w_grad.shape[0]
    num_samples = positive_int(num_samples, "num_samples")
    if num_samples > classes:
        raise ValueError(f"cannot infer {num_samples} labels from a {classes}-class output layer; pass labels")
    if strategy == "auto":
        strategy = "idlg" if num_samples == 1 else "yin"
    if strategy == "idlg":
        if num_samples != 1:
            raise ValueError("the iDLG rule recovers the label of one sample; use strategy='yin' for a batch")
        return w_grad.sum(dim=1).argmin().reshape(1)
    return w_grad.min(dim=1).values.argsort()[:num_samples]


# ------------------------------------------------------------------------------------ attack
def _milestones(iterations: int) -> set[int]:
    """inversefed's MultiStepLR milestones: the iterations from which the step is ×0.1 smaller."""
    return {int(iterations // 2.667), int(iterations // 1.6), int(iterations // 1.142)}


class _Objective:
    """Trial gradients of R restarts and the pieces of the attack's input gradient.

    ``value_and_grad(xs)`` with ``xs`` ``(R, *shape)`` returns the matching loss ``(R,)``, the
    TV value ``(R,)`` and ``∇_x (dist + α_TV·TV)`` ``(R, *shape)``.
    """

    def __init__(self, model, named, labels, loss_fn, target, match, weights, tv):
        self.names = [n for n, _ in named]
        self.live = [p for _, p in named]  # the module's own parameters, for the autograd path
        self.sizes = [p.numel() for p in self.live]
        self.params = {n: p.detach() for n, p in named}
        self.model, self.labels, self.loss_fn = model, labels, loss_fn
        self.target, self.match, self.weights, self.tv = target, match, weights, tv

    def _flat_grad(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (one restart, ``shape``) → flat ``∇_θ L(x)`` ``(P,)``."""
        g = grad(lambda p: self.loss_fn(functional_call(self.model, p, (x,)), self.labels))(self.params)
        return torch.cat([g[n].reshape(-1) for n in self.names])

    def trial_gradients(self, xs: torch.Tensor) -> torch.Tensor:
        """``(R, *shape)`` → ``(R, P)`` per-restart gradients, without building a graph (R = 1:
        plain autograd, which skips ~2 ms of functorch set-up per call on LeNet)."""
        if xs.shape[0] > 1:
            return vmap(self._flat_grad)(xs)
        with torch.enable_grad():
            loss = self.loss_fn(self.model(xs[0]), self.labels)
            grads = torch.autograd.grad(loss, self.live)
        return torch.cat([g.reshape(-1) for g in grads]).unsqueeze(0)

    def matching_loss(self, xs: torch.Tensor) -> torch.Tensor:
        """``(R,)`` matching loss of the restarts at ``xs`` (no TV)."""
        return grad_match_ref(self.trial_gradients(xs), self.target, self.match, self.weights)[0]

    def _trial_with_pullback(self, xs: torch.Tensor):
        """Trial gradients ``(R, P)`` and ``pullback(w) = Jᵀw`` ``(R, *shape)`` through their graph.

        R > 1: ``torch.func`` (``vjp`` of the ``vmap``-ed per-restart gradient), one batched
        forward/backward for all restarts. R = 1: plain autograd (forward, create-graph backward),
        the same products without the functorch dispatch, ~1.7× faster per iteration on the
        paper's LeNet (``benchmarks/bench_attack.py``).
        """
        if xs.shape[0] > 1:
            trial, pullback = vjp(vmap(self._flat_grad), xs)
            return trial, lambda w: pullback(w)[0]
        leaf = xs[0].detach().requires_grad_(True)
        grads = torch.autograd.grad(self.loss_fn(self.model(leaf), self.labels), self.live, create_graph=True)
        trial = torch.cat([g.detach().reshape(-1) for g in grads])

        def pullback(w):
            w_parts = [part.view_as(g) for part, g in zip(w[0].split(self.sizes), grads)]
            (gx,) = torch.autograd.grad(grads, leaf, w_parts, allow_unused=True)
            return (torch.zeros_like(leaf) if gx is None else gx).unsqueeze(0)

        return trial.unsqueeze(0), pullback

    def value_and_grad(self, xs: torch.Tensor):
        trial, pullback = self._trial_with_pullback(xs)  # forward + create-graph backward
        loss, w = grad_match_ref(trial, self.target, self.match, self.weights)  # w = ∂dist/∂g'
        gx = pullback(w)  # Jᵀw: one backward through the cached graph
        if self.tv > 0:
            tv_value, tv_grad = tv_ref(xs)
            gx.add_(tv_grad, alpha=self.tv)
        else:
            tv_value = torch.zeros_like(loss)
        return loss, tv_value, gx


def _init_candidates(init: str, shape, generator, dtype, device) -> torch.Tensor:
    if init == "zeros":
        return torch.zeros(shape, dtype=dtype, device=device)
    draw = torch.randn if init == "randn" else torch.rand
    x = draw(shape, generator=generator, dtype=dtype, device="cpu" if generator is None else generator.device)
    x = x.to(device)
    return x if init == "randn" else 2 * x - 1


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="it", file=sys.stderr, leave=False, disable=not enabled)


def invert(
    model: nn.Module,
    target_grads,
    labels: torch.Tensor | None,
    shape: Sequence[int],
    attack: str = "gs",
    iterations: int = 4000,
    restarts: int = 1,
    *,
    tv: float | None = None,
    lr: float | None = None,
    signed: bool | None = None,
    decay: bool | None = None,
    optimizer: str = "adam",
    bounds: tuple | None = None,
    layer_weights: Sequence[float] | None = None,
    layers: Sequence[int] | None = None,
    init: str | torch.Tensor = "randn",
    label_strategy: str = "auto",
    loss_fn: LossFn | None = None,
    generator: torch.Generator | None = None,
    history_every: int = 10,
    progress: bool = True,
    onednn: bool | None = None,
) -> AttackResult:
    """Reconstruct a private batch from its (possibly defended) shared gradient.

    Args:
        model: the attacked model, used as given (``eval()`` mode for BatchNorm / Dropout models).
        target_grads: the shared gradient: flat ``(P,)`` in ``model.parameters()`` order (trainable
            parameters only) or a list of parameter-shaped tensors.
        labels: ``(N,)`` int64 labels (known to the attacker, the paper's setting), or None to infer
            them with :func:`infer_labels` (``label_strategy``).
        shape: shape of the private batch, ``(N, *input_shape)``, e.g. ``(1, 1, 28, 28)``.
        attack: ``"gs"`` or ``"dlg"`` (:data:`PRESETS`).
        iterations: optimiser iterations (the paper's scripts: 24,000).
        restarts: R independent random starts, optimised together; the best is returned.
        tv, lr, signed, decay: override the preset's α_TV, step size, signed gradients, step decay.
        optimizer: ``"adam"`` (default) or ``"lbfgs"`` (DLG's original optimiser: lr 1 unless ``lr``, no line
            search, history 100; the R restarts form one separable problem whose L-BFGS curvature
            memory is shared). L-BFGS takes neither ``signed`` nor ``decay``.
        bounds: ``(lower, upper)`` tensors broadcastable to ``shape`` (e.g.
            ``ImageBatch.pixel_bounds``, each ``(C, 1, 1)``): every step projects onto this box
            (GS's box constraint). None: no projection.
        layer_weights: one non-negative weight per trainable parameter tensor (default equal).
        layers: indices of the parameter tensors to match (the others get weight 0); default all.
        init: one of :data:`INITS`, drawn in the normalised space, or a tensor ``(R, *shape)`` of
            starting points (e.g. to continue an attack or to start every restart from a given image).
        label_strategy: rule used when ``labels`` is None (see :func:`infer_labels`).
        loss_fn: ``loss_fn(logits, labels) -> scalar``; default cross-entropy, mean over the batch.
        generator: ``torch.Generator`` for the initial draws (reproducible runs).
        history_every: record the objective every this many iterations (each record syncs the host).
        progress: show a tqdm bar on stderr with the iteration and the best current objective.
        onednn: CPU convolution kernels for the loop: ``True`` oneDNN, ``False`` PyTorch's native
            kernels, None (default) the faster of the two, timed once per model, shape, restart
            count and thread count (:mod:`i2f_fast.conv_kernels`; a few extra iterations' work).

    Returns:
        :class:`AttackResult`.

    Raises:
        TypeError / ValueError naming the argument: ``model`` not a module; ``target_grads`` not
        matching the parameters (count, shapes or length) or not finite; ``shape`` not accepted by
        the model; bad ``labels``; unknown ``attack``, ``init``, ``optimizer`` or
        ``label_strategy``; non-positive ``iterations`` / ``restarts``; bad ``bounds``.
    """
    if attack not in PRESETS:
        raise ValueError(f"attack must be one of {ATTACKS}, got {attack!r}")
    if not isinstance(init, torch.Tensor) and init not in INITS:
        raise ValueError(f"init must be one of {INITS} or a tensor (restarts, *shape), got {init!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    iterations = positive_int(iterations, "iterations")
    restarts = positive_int(restarts, "restarts")
    history_every = positive_int(history_every, "history_every")
    preset = PRESETS[attack]
    config = AttackConfig(
        match=preset.match,
        signed=preset.signed if signed is None else bool(signed),
        decay=preset.decay if decay is None else bool(decay),
        lr=(LBFGS_LR if optimizer == "lbfgs" else preset.lr) if lr is None else _nonnegative(lr, "lr"),
        tv=preset.tv if tv is None else _nonnegative(tv, "tv"),
    )
    if optimizer == "lbfgs" and (config.signed or config.decay):
        raise ValueError("optimizer='lbfgs' takes neither signed gradients nor step decay: pass signed=False, decay=False")

    named = _check_model(model)
    first = named[0][1]
    dtype, device = first.dtype, first.device
    shapes = [p.shape for _, p in named]
    target = flat_gradient(target_grads, shapes)
    if not target.is_floating_point():
        raise TypeError(f"target_grads must be floating point, got {target.dtype}")
    if not torch.isfinite(target).all():
        raise ValueError("target_grads contains NaN or Inf")
    target = target.detach().to(dtype=dtype, device=device)
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or len(shape) < 2:
        raise ValueError(f"shape must be (N, *input_shape) with a batch dimension, got {shape!r}")
    shape = tuple(positive_int(s, "shape") for s in shape)
    classes = _num_classes(model, shape, dtype, device)
    if labels is None:
        labels = infer_labels(model, target, shape[0], label_strategy).to(device)
    else:
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.shape != shape[:1]:
            raise ValueError(f"labels must be an int64 tensor of shape ({shape[0]},) or None, got {labels!r}")
        if (labels < 0).any() or (labels >= classes).any():
            raise ValueError(f"labels must lie in [0, {classes}) for a model with {classes} outputs")
        labels = labels.to(device)
    lower, upper = _check_bounds(bounds, shape, dtype, device)
    weights = _element_weights(layer_weights, layers, shapes, dtype, device)
    objective = _Objective(
        model, named, labels, F.cross_entropy if loss_fn is None else loss_fn, target, config.match, weights, config.tv
    )

    if isinstance(init, torch.Tensor):
        if init.shape != (restarts, *shape) or not torch.isfinite(init).all():
            raise ValueError(f"init must be a finite tensor of shape {(restarts, *shape)} (restarts, *shape)")
        xs = init.detach().to(dtype=dtype, device=device).clone()
    else:
        xs = _init_candidates(init, (restarts, *shape), generator, dtype, device)
    if lower is not None:
        xs.clamp_(lower, upper)
    run = _run_lbfgs if optimizer == "lbfgs" else _run_adam
    with conv_kernels.kernels(_choose_onednn(onednn, objective, xs, shapes)):
        steps, history = run(objective, xs, config, iterations, history_every, (lower, upper), progress, attack)
        with torch.no_grad():
            losses = objective.matching_loss(xs)
    finite = torch.where(torch.isfinite(losses), losses, torch.full_like(losses, math.inf))
    best = int(finite.argmin())
    return AttackResult(
        x=xs[best].clone(),
        loss=float(losses[best]),
        losses=losses,
        labels=labels,
        restarts=xs,
        best=best,
        history_steps=torch.tensor(steps, dtype=torch.int64),
        history=torch.stack(history) if history else losses.new_zeros(0, restarts),
        config=config,
        iterations=iterations,
    )


def _choose_onednn(requested: bool | None, objective: _Objective, xs: torch.Tensor, shapes) -> bool:
    """oneDNN (True) or native (False) CPU convolutions for the loop; see :mod:`i2f_fast.conv_kernels`."""
    key = (
        "invert", type(objective.model).__qualname__, tuple(map(tuple, shapes)), tuple(xs.shape), xs.dtype,
        torch.get_num_threads(),
    )
    return conv_kernels.choose(objective.model, xs.device, requested, key, lambda: objective.value_and_grad(xs))


def _check_bounds(bounds, shape, dtype, device):
    if bounds is None:
        return None, None
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise ValueError("bounds must be a pair (lower, upper) of tensors broadcastable to the input, or None")
    lower, upper = (torch.as_tensor(b, dtype=dtype, device=device) for b in bounds)
    try:
        torch.broadcast_shapes(lower.shape, upper.shape, shape)
    except RuntimeError as err:
        raise ValueError(f"bounds do not broadcast to shape {shape}: {err}") from err
    if not (lower < upper).all():
        raise ValueError("bounds: lower must be < upper everywhere")
    return lower, upper


def _run_adam(objective: _Objective, xs, config: AttackConfig, iterations, history_every, box, progress, attack):
    """Adam (or signed Adam) with the optional box, in place on ``xs``; returns the history."""
    beta1, beta2 = 0.9, 0.999
    exp_avg, exp_avg_sq = torch.zeros_like(xs), torch.zeros_like(xs)
    lr = torch.tensor(config.lr, dtype=xs.dtype, device=xs.device)
    pow1, pow2 = torch.ones_like(lr), torch.ones_like(lr)
    milestones = _milestones(iterations) if config.decay else set()
    steps, history = [], []
    bar = _progress(iterations, progress, f"{attack} attack")
    for it in range(iterations):
        if it in milestones:
            lr.mul_(0.1)
        loss, tv_value, gx = objective.value_and_grad(xs)
        if it % history_every == 0:
            steps.append(it)
            history.append((loss + config.tv * tv_value).detach())
            bar.set_postfix_str(f"loss {history[-1].min().item():.4g}")
        pow1.mul_(beta1)
        pow2.mul_(beta2)
        attack_step_ref(
            xs, gx, exp_avg, exp_avg_sq, lr, 1 - pow1, 1 - pow2,
            beta1=beta1, beta2=beta2, signed=config.signed, lower=box[0], upper=box[1],
        )
        bar.update()
    bar.close()
    return steps, history


def _run_lbfgs(objective: _Objective, xs, config: AttackConfig, iterations, history_every, box, progress, attack):
    """L-BFGS (DLG's optimiser) on the sum of the restarts' objectives; returns the history."""
    leaf = xs.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([leaf], lr=config.lr, max_iter=1, history_size=100)
    last: dict[str, torch.Tensor] = {}

    def closure():
        loss, tv_value, gx = objective.value_and_grad(leaf.detach())
        leaf.grad = gx
        last["objective"] = (loss + config.tv * tv_value).detach()
        return last["objective"].sum()

    steps, history = [], []
    bar = _progress(iterations, progress, f"{attack} attack (L-BFGS)")
    for it in range(iterations):
        opt.step(closure)
        if box[0] is not None:
            with torch.no_grad():
                leaf.clamp_(box[0], box[1])
        if it % history_every == 0:
            steps.append(it)
            history.append(last["objective"])
            bar.set_postfix_str(f"loss {history[-1].min().item():.4g}")
        bar.update()
    bar.close()
    xs.copy_(leaf.detach())
    return steps, history
