"""``invert``: reconstruct a private batch from its (possibly defended) shared gradient; the
arguments are checked at the front door, then the objective and the optimiser loop run."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import conv_kernels, cuda_graphs, frontdoor
from ..backend import requested_backend, use_backend
from ..operators import LossFn
from .labels import infer_labels
from .loops import _LoopOptions, _run_adam, _run_lbfgs
from .objective import _Objective
from .presets import ATTACKS, INITS, LBFGS_LR, LINE_SEARCHES, OPTIMIZERS, PRESETS, AttackConfig


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


def _check_model(model) -> list[tuple[str, nn.Parameter]]:
    named = frontdoor.model_parameters(model)
    stateful = frontdoor.training_module(model, stateful_only=True)
    if stateful is not None:
        raise ValueError(
            f"model: module '{stateful}' is in training mode (BatchNorm statistics / Dropout): the vectorised attack "
            "needs a functional forward; call model.eval() first"
        )
    return named


# ------------------------------------------------------------------------------ label inference


def _init_candidates(init: str, shape, generator, dtype, device) -> torch.Tensor:
    if init == "zeros":
        return torch.zeros(shape, dtype=dtype, device=device)
    draw = torch.randn if init == "randn" else torch.rand
    x = draw(shape, generator=generator, dtype=dtype, device="cpu" if generator is None else generator.device)
    x = x.to(device)
    return x if init == "randn" else 2 * x - 1


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
    frontdoor.choice(attack, "attack", ATTACKS)
    if not isinstance(init, torch.Tensor):
        frontdoor.choice(init, "init", INITS)
    frontdoor.choice(optimizer, "optimizer", OPTIMIZERS)
    iterations = frontdoor.positive_int(iterations, "iterations")
    restarts = frontdoor.positive_int(restarts, "restarts")
    history_every = frontdoor.positive_int(history_every, "history_every")
    for flag, value in (("signed", signed), ("decay", decay), ("onednn", onednn), ("cuda_graph", cuda_graph)):
        frontdoor.boolean(value, flag, optional=True)
    frontdoor.boolean(progress, "progress")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable loss_fn(logits, labels) -> scalar or None, got {type(loss_fn).__name__}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    preset = PRESETS[attack]
    config = AttackConfig(
        match=preset.match,
        signed=preset.signed if signed is None else signed,
        decay=preset.decay if decay is None else decay,
        lr=(LBFGS_LR if optimizer == "lbfgs" else preset.lr) if lr is None else frontdoor.number(lr, "lr", positive=True),
        tv=preset.tv if tv is None else frontdoor.number(tv, "tv", minimum=0),
    )
    if optimizer == "lbfgs" and (config.signed or config.decay):
        raise ValueError("optimizer='lbfgs' takes neither signed gradients nor step decay: pass signed=False, decay=False")
    if line_search not in LINE_SEARCHES:
        raise ValueError(f"line_search must be one of {LINE_SEARCHES}, got {line_search!r}")
    if grad_tol is not None:
        grad_tol = frontdoor.number(grad_tol, "grad_tol", minimum=0)
    if optimizer != "lbfgs" and (line_search is not None or grad_tol is not None):
        raise ValueError("line_search and grad_tol apply to optimizer='lbfgs'")

    named = _check_model(model)
    first = named[0][1]
    dtype, device = first.dtype, first.device
    graphed = cuda_graphs.wanted(device, cuda_graph)
    if optimizer == "lbfgs" and cuda_graph:
        raise ValueError("cuda_graph=True applies to optimizer='adam' (L-BFGS reads the host every step)")
    layout = frontdoor.layout_of(named)
    shapes = layout.shapes
    target = frontdoor.parameter_vectors(target_grads, layout, "target_grads").detach().to(dtype=dtype, device=device)
    shape = frontdoor.batch_shape(shape, "shape")
    classes = frontdoor.output_classes(model, torch.zeros(shape, dtype=dtype, device=device), "shape")
    if labels is None:
        labels = infer_labels(model, target, shape[0], label_strategy).to(device)
    else:
        labels = frontdoor.labels(labels, "labels", shape[0], classes).to(device)
    lower, upper = _check_bounds(bounds, shape, dtype, device)
    weights = frontdoor.element_weights(layer_weights, layers, shapes, dtype, device)
    objective = _Objective(
        model, named, labels, F.cross_entropy if loss_fn is None else loss_fn, target, config.match, weights, config.tv
    )

    if isinstance(init, torch.Tensor):
        frontdoor.float_tensor(init, "init")
        if init.shape != (restarts, *shape):
            raise ValueError(f"init must be a finite tensor of shape {(restarts, *shape)} (restarts, *shape), got {tuple(init.shape)}")
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
    lower, upper = (
        frontdoor.float_tensor(b if isinstance(b, torch.Tensor) else torch.tensor(frontdoor.number(b, f"bounds[{i}]")),
                               f"bounds[{i}]").to(dtype=dtype, device=device)
        for i, b in enumerate(bounds)
    )
    try:  # expand, not torch.broadcast_shapes: that one imports sympy on first use (1.7 s of a first call)
        for b in (lower, upper):
            b.expand(shape)  # fails when b does not broadcast to shape, or would enlarge it
    except RuntimeError as err:
        raise ValueError(f"bounds do not broadcast to shape {shape}: {err}") from err
    if not (lower < upper).all():
        raise ValueError("bounds: lower must be < upper everywhere")
    return lower, upper
