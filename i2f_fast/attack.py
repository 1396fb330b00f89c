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
forward/backward serves all restarts. Each iteration is the model's own work plus three fused ops
(:mod:`i2f_fast.ops`), each with a pure-PyTorch reference kernel that it replaces one to one:

1. trial gradients ``g'`` ``(R, P)``, written into one flat buffer (:class:`~i2f_fast.flat.FlatLayout`),
   and the closure of their vjp (forward + create-graph backward);
2. :func:`~i2f_fast.ops.grad_match`: matching loss ``(R,)`` and ``w = ∂dist/∂g'`` ``(R, P)`` in
   one pass over the flat buffer;
3. the input gradient ``Jᵀw = ∇_x⟨∇_θ L(x'), w⟩`` (one backward through the cached graph; the same
   mixed product as I²F's, DESIGN.md §1) plus ``α_TV ∇TV`` from :func:`~i2f_fast.ops.tv`;
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
from __future__ import annotations

import math
import operator
import sys
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vjp, vmap

from . import conv_kernels, cuda_graphs
from ._checks import positive_int
from .backend import requested_backend, use_backend
from .flat import FlatLayout
from .operators import LossFn, _stateful_in_training, trainable_parameters
from .ops import attack_step, grad_match, tv

ATTACKS = ("gs", "dlg")
"""Names accepted by :func:`invert`'s ``attack``."""

INITS = ("randn", "rand", "zeros")
"""Initialisations of the candidate images: N(0, 1), U(−1, 1) (breaching's ``rand``), zeros."""

OPTIMIZERS = ("adam", "lbfgs")
LBFGS_LR = 1.0  # the original DLG's L-BFGS step (PyTorch's default)
LINE_SEARCHES = (None, "strong_wolfe")
"""L-BFGS step rules of :func:`invert`: the fixed step ``lr`` (DLG's) or torch's strong-Wolfe line search."""
LINE_SEARCH_EVALS = 25  # objective evaluations a strong-Wolfe line search may spend per iteration

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
        iterations: iterations run (fewer than asked when L-BFGS met ``grad_tol`` or stalled).
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
    layout = FlatLayout(shapes)
    P = layout.numel
    if isinstance(grads, (list, tuple)):
        if len(grads) != len(shapes):
            raise ValueError(f"{argument} has {len(grads)} tensors, the model has {len(shapes)} trainable parameters")
        for i, (g, s) in enumerate(zip(grads, shapes)):
            if not isinstance(g, torch.Tensor):
                raise TypeError(f"{argument}[{i}] must be a tensor, got {type(g).__name__}")
            if g.shape != s:
                raise ValueError(f"{argument}[{i}] has shape {tuple(g.shape)}, the parameter has {tuple(s)}")
        return layout.flatten(list(grads))
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
    return FlatLayout(shapes).expand_per_tensor(per_layer)


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
    grads = FlatLayout(shapes).views(flat_gradient(target_grads, shapes))
    weights = [i for i, s in enumerate(shapes) if len(s) == 2]
    if not weights:
        raise ValueError("label inference needs a final Linear layer (a 2-D weight); pass labels instead")
    last = weights[-1]
    w_grad = grads[last]
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
    TV value ``(R,)`` (None when ``α_TV = 0``) and ``∇_x (dist + α_TV·TV)`` ``(R, *shape)``.
    """

    def __init__(self, model, named, labels, loss_fn, target, match, weights, tv):
        self.names = [n for n, _ in named]
        self.live = [p for _, p in named]  # the module's own parameters, for the autograd path
        self.layout = FlatLayout([p.shape for p in self.live])
        self.params = {n: p.detach() for n, p in named}
        self.model, self.labels, self.loss_fn = model, labels, loss_fn
        self.target, self.match, self.weights, self.tv = target, match, weights, tv
        self._trial = self.layout.empty(1, dtype=target.dtype, device=target.device)  # R = 1 flat buffer

    def _flat_grad(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (one restart, ``shape``) → flat ``∇_θ L(x)`` ``(P,)``."""
        g = grad(lambda p: self.loss_fn(functional_call(self.model, p, (x,)), self.labels))(self.params)
        return self.layout.flatten([g[n] for n in self.names])

    def trial_gradients(self, xs: torch.Tensor) -> torch.Tensor:
        """``(R, *shape)`` → ``(R, P)`` per-restart gradients, without building a graph (R = 1:
        plain autograd, which skips ~2 ms of functorch set-up per call on LeNet)."""
        if xs.shape[0] > 1:
            return vmap(self._flat_grad)(xs)
        with torch.enable_grad():
            loss = self.loss_fn(self.model(xs[0]), self.labels)
            grads = torch.autograd.grad(loss, self.live)
        return self.layout.flatten([g.unsqueeze(0) for g in grads], batch_dims=1)

    def matching_loss(self, xs: torch.Tensor) -> torch.Tensor:
        """``(R,)`` matching loss of the restarts at ``xs`` (no TV)."""
        return grad_match(self.trial_gradients(xs), self.target, self.match, self.weights)[0]

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
        with torch.no_grad():  # one cat into the reused flat buffer
            trial = self.layout.flatten([g.unsqueeze(0) for g in grads], batch_dims=1, out=self._trial)

        def pullback(w):
            (gx,) = torch.autograd.grad(grads, leaf, self.layout.views(w[0]), allow_unused=True)
            return (torch.zeros_like(leaf) if gx is None else gx).unsqueeze(0)

        return trial, pullback

    def value_and_grad(self, xs: torch.Tensor):
        trial, pullback = self._trial_with_pullback(xs)  # forward + create-graph backward
        loss, w = grad_match(trial, self.target, self.match, self.weights)  # w = ∂dist/∂g', fused
        gx = pullback(w)  # Jᵀw: one backward through the cached graph
        tv_value = None
        if self.tv > 0:
            tv_value, tv_grad = tv(xs)
            gx.add_(tv_grad, alpha=self.tv)
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
    line_search: str | None = None,
    grad_tol: float | None = None,
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
    backend: str | None = None,
    cuda_graph: bool | None = None,
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
        line_search: L-BFGS only: None (the fixed step ``lr``) or ``"strong_wolfe"`` (torch's
            strong-Wolfe line search, up to 25 objective evaluations per iteration).
        grad_tol: L-BFGS only: stop once the largest entry of ``|∇_x objective|`` (over all restarts)
            is at most ``grad_tol`` times its value at the start, or once an iteration leaves the
            iterate unchanged (no further progress is possible). None: run all ``iterations``.
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
        history_every: record the objective every this many iterations (a device-side copy; no
            host sync).
        progress: show a tqdm bar on stderr with the iteration and the best current objective
            (read from the device every ``max(history_every, 10)`` iterations).
        onednn: CPU convolution kernels for the loop: ``True`` oneDNN, ``False`` PyTorch's native
            kernels, None (default) the faster of the two, timed once per model, shape, restart
            count and thread count (:mod:`i2f_fast.conv_kernels`; a few extra iterations' work).
        backend: kernels of the loop's fused ops (:mod:`i2f_fast.backend`): ``"auto"``, ``"native"``,
            ``"triton"`` or ``"reference"`` (the reference loop); None (default): the current
            :func:`~i2f_fast.use_backend` / ``I2F_FAST_BACKEND`` choice, ``auto`` unless set.
        cuda_graph: capture one Adam iteration as a CUDA graph and replay it (None: on CUDA
            tensors; True on other devices is an error). Falls back to eager iterations, with a
            warning on the ``i2f_fast`` logger, when capture is impossible (e.g. a model whose
            forward reads the host).

    Returns:
        :class:`AttackResult`.

    Raises:
        TypeError / ValueError naming the argument: ``model`` not a module; ``target_grads`` not
        matching the parameters (count, shapes or length) or not finite; ``shape`` not accepted by
        the model; bad ``labels``; unknown ``attack``, ``init``, ``optimizer``, ``backend`` or
        ``label_strategy`` or ``line_search``; non-positive ``iterations`` / ``restarts``; negative
        ``grad_tol``; ``line_search`` / ``grad_tol`` without L-BFGS; bad ``bounds``;
        ``cuda_graph=True`` off CUDA or with L-BFGS.
    """
    if backend is not None:
        with use_backend(backend):  # validates the name (ValueError naming `backend`)
            pass
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
    if line_search not in LINE_SEARCHES:
        raise ValueError(f"line_search must be one of {LINE_SEARCHES}, got {line_search!r}")
    if grad_tol is not None:
        grad_tol = _nonnegative(grad_tol, "grad_tol")
    if optimizer != "lbfgs" and (line_search is not None or grad_tol is not None):
        raise ValueError("line_search and grad_tol apply to optimizer='lbfgs'")

    named = _check_model(model)
    first = named[0][1]
    dtype, device = first.dtype, first.device
    graphed = cuda_graphs.wanted(device, cuda_graph)
    if optimizer == "lbfgs" and cuda_graph:
        raise ValueError("cuda_graph=True applies to optimizer='adam' (L-BFGS reads the host every step)")
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
    loop = _LoopOptions(iterations, history_every, (lower, upper), progress, attack, graphed, line_search, grad_tol)
    run = _run_lbfgs if optimizer == "lbfgs" else _run_adam
    with use_backend(backend or requested_backend()), conv_kernels.kernels(_choose_onednn(onednn, objective, xs, shapes)):
        steps, history, ran = run(objective, xs, config, loop)
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
        iterations=ran,
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


@dataclass(frozen=True)
class _LoopOptions:
    """How :func:`invert` runs its optimiser loop (see its arguments)."""

    iterations: int
    history_every: int
    box: tuple
    progress: bool
    attack: str
    cuda_graph: bool
    line_search: str | None = None
    grad_tol: float | None = None

    @property
    def check_every(self) -> int:
        """Iterations between host reads (the progress bar's loss)."""
        return max(self.history_every, cuda_graphs.MIN_CHECK_EVERY)


ADAM_BETAS = (0.9, 0.999)


def _adam_schedule(config: AttackConfig, iterations: int, dtype: torch.dtype) -> torch.Tensor:
    """``(T, 3)``: per iteration the step size (×0.1 from each decay milestone on) and the bias
    corrections ``1 − β₁ᵗ``, ``1 − β₂ᵗ`` (t = iteration + 1), formed in ``dtype`` by the same
    sequential products as ``torch.optim.Adam``'s running powers. A table read by the kernels
    makes the schedule free per iteration and lets a captured CUDA graph index it on the device."""
    lr = torch.full((iterations,), config.lr, dtype=dtype)
    for milestone in sorted(_milestones(iterations)) if config.decay else ():
        lr[milestone:] *= 0.1
    powers = [torch.full((iterations,), beta, dtype=dtype).cumprod(0) for beta in ADAM_BETAS]
    return torch.stack([lr, 1 - powers[0], 1 - powers[1]], dim=1)


def _objective_value(loss: torch.Tensor, tv_value: torch.Tensor | None, alpha_tv: float) -> torch.Tensor:
    """Matching loss + α_TV·TV per restart, as a new tensor (safe to keep across iterations)."""
    return loss.clone() if tv_value is None else loss + alpha_tv * tv_value


def _run_adam(objective: _Objective, xs, config: AttackConfig, loop: _LoopOptions):
    """Adam (or signed Adam) with the optional box, in place on ``xs``; returns the history.

    Per iteration outside the model's forward/backward: ``grad_match``, ``tv`` (when α_TV > 0)
    and ``attack_step``, one op each (``python_tests/test_fused_attack.py`` counts them), and no
    host read except the progress bar's every ``loop.check_every`` iterations.
    """
    beta1, beta2 = ADAM_BETAS
    schedule = _adam_schedule(config, loop.iterations, xs.dtype).to(xs.device)
    exp_avg, exp_avg_sq = torch.zeros_like(xs), torch.zeros_like(xs)
    lower, upper = (None if b is None else b.expand(xs.shape[1:]).contiguous() for b in loop.box)

    def iteration(coefficients: torch.Tensor):
        loss, tv_value, gx = objective.value_and_grad(xs)
        attack_step(
            xs, gx, exp_avg, exp_avg_sq, coefficients[0], coefficients[1], coefficients[2],
            beta1=beta1, beta2=beta2, signed=config.signed, lower=lower, upper=upper,
        )
        return loss, tv_value

    run_one = _graphed_iteration(iteration, schedule, xs) if loop.cuda_graph else (lambda it: iteration(schedule[it]))
    steps, history = [], []
    bar = _progress(loop.iterations, loop.progress, f"{loop.attack} attack")
    for it in range(loop.iterations):
        loss, tv_value = run_one(it)
        if it % loop.history_every == 0:
            steps.append(it)
            history.append(_objective_value(loss, tv_value, config.tv))
        if loop.progress and it % loop.check_every == 0:
            bar.set_postfix_str(f"loss {history[-1].min().item():.4g}")
        bar.update()
    bar.close()
    return steps, history, loop.iterations


def _graphed_iteration(iteration, schedule: torch.Tensor, xs: torch.Tensor):
    """``run_one(it)`` that replays one Adam iteration as a CUDA graph (:mod:`i2f_fast.cuda_graphs`).

    The graph reads its row of ``schedule`` through a device-side counter and writes the matching
    loss and TV value into fixed tensors, so replays need nothing from the host.
    """
    counter = torch.zeros(1, dtype=torch.int64, device=xs.device)
    row = schedule[:1].clone()
    static: dict[str, torch.Tensor | None] = {}

    def body():
        torch.index_select(schedule, 0, counter, out=row)
        counter.add_(1)
        loss, tv_value = iteration(row[0])
        if not static:  # first (eager) call: allocate the outputs outside any capture
            static["loss"] = torch.empty_like(loss)
            static["tv"] = None if tv_value is None else torch.empty_like(tv_value)
        static["loss"].copy_(loss)
        if tv_value is not None:
            static["tv"].copy_(tv_value)

    step = cuda_graphs.GraphedStep(body, "attack iteration", xs.device)

    def run_one(_it):
        step()
        return static["loss"], static["tv"]

    return run_one


def _run_lbfgs(objective: _Objective, xs, config: AttackConfig, loop: _LoopOptions):
    """L-BFGS (DLG's optimiser) on the sum of the restarts' objectives; returns the history and
    the iterations run. With ``loop.grad_tol`` it stops once the gradient at the start of an
    iteration is that small relative to the first one, or when an iteration leaves the iterate
    unchanged (one host read per iteration). torch's L-BFGS evaluates the objective at the start of
    every iteration, where the line search usually ended: that evaluation is reused, not repeated."""
    leaf = xs.clone().requires_grad_(True)
    if loop.line_search is None:
        opt = torch.optim.LBFGS([leaf], lr=config.lr, max_iter=1, history_size=100)
    else:  # no absolute tolerances: gradients and losses near the optimum can sit below any fixed one
        opt = torch.optim.LBFGS([leaf], lr=config.lr, max_iter=1, max_eval=1 + LINE_SEARCH_EVALS, history_size=100,
                                tolerance_grad=0.0, tolerance_change=0.0, line_search_fn=loop.line_search)
    last: dict[str, torch.Tensor] = {}
    grad_at_start: list[torch.Tensor] = []  # max |∇_x| where each iteration started

    def closure():
        if "x" not in last or not torch.equal(last["x"], leaf.detach()):
            last["x"] = leaf.detach().clone()
            loss, tv_value, last["grad"] = objective.value_and_grad(last["x"])
            last["objective"] = _objective_value(loss, tv_value, config.tv).detach()
        leaf.grad = last["grad"]
        if len(grad_at_start) <= it:
            grad_at_start.append(last["grad"].abs().max())
        return last["objective"].sum()

    steps, history = [], []
    bar = _progress(loop.iterations, loop.progress, f"{loop.attack} attack (L-BFGS)")
    for it in range(loop.iterations):
        previous = leaf.detach().clone() if loop.grad_tol is not None else None
        opt.step(closure)
        if loop.box[0] is not None:
            with torch.no_grad():
                leaf.clamp_(*loop.box)
        if it % loop.history_every == 0:
            steps.append(it)
            history.append(last["objective"])
        if loop.progress and it % loop.check_every == 0:
            bar.set_postfix_str(f"loss {history[-1].min().item():.4g}")
        bar.update()
        if previous is not None and (
            grad_at_start[it] <= loop.grad_tol * grad_at_start[0] or torch.equal(previous, leaf.detach())
        ):
            break
    bar.close()
    xs.copy_(leaf.detach())
    return steps, history, it + 1
