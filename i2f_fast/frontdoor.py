"""The front door: every argument a user passes is parsed and checked here, once (DESIGN.md §2).

Below every layer that takes user input (attack, influence, operators, defenses, compat, metrics,
experiments); imports nothing of the package but :mod:`i2f_fast.flat`. Every check raises
``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, wrong value) with a message
that names the argument and says what was expected; inner layers trust what comes out of here.

Contents:

* numbers, ints, booleans, choices: :func:`number`, :func:`integer`, :func:`positive_int`,
  :func:`boolean`, :func:`choice`;
* tensors: :func:`float_tensor` (dtype, device, dims, finiteness), :func:`labels` (int64 class
  labels only: a float label such as 0.7 is refused, never truncated), :func:`batch_shape`;
* models: :func:`model_parameters` (the trainable parameters, ``requires_grad``, in
  ``parameters()`` order), :func:`training_module` / :func:`require_functional` (BatchNorm
  with batch statistics, Dropout), :func:`private_buffers` (a training-mode forward that cannot
  change the caller's buffers), :func:`output_classes` (a shape probe that names the argument),
  :func:`functional_loss` / :func:`parameter_gradient` (the gradient through
  ``functional_call``, the one implementation every layer uses);
* parameter-shaped input: :func:`parameter_vectors`, the one parser of "flat ``(..., P)`` or a
  list of parameter-shaped tensors" on a :class:`~i2f_fast.flat.FlatLayout`: shapes are checked
  tensor by tensor (a transposed weight with the right element count is refused), the result is
  flat and a list is flattened exactly once.
"""
from __future__ import annotations

import math
import numbers
import operator
from typing import Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad

from .flat import FlatLayout

FLOAT_DTYPES = (torch.float32, torch.float64)
"""dtypes the products, solvers and attack run in (half precision is refused with the reason)."""


# ------------------------------------------------------------------------------- plain values
def number(
    value,
    argument: str,
    *,
    minimum: float | None = None,
    positive: bool = False,
    maximum: float | None = None,
) -> float:
    """``value`` as a finite float (a bool is not a number).

    Args:
        minimum: smallest allowed value (inclusive); ``positive=True`` demands ``> 0`` instead.
        maximum: largest allowed value (inclusive).

    Raises:
        TypeError: not a real number (or a bool); ValueError: not finite or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{argument} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{argument} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{argument} must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{argument} must be >= {minimum:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{argument} must be <= {maximum:g}, got {value!r}")
    return value


def integer(value, argument: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int (anything with ``__index__``; a bool or a float is not one).

    Raises:
        TypeError: not an integer; ValueError: out of ``[minimum, maximum]``.
    """
    if isinstance(value, bool):
        raise TypeError(f"{argument} must be an int, got bool {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{argument} must be an int, got {type(value).__name__} {value!r}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{argument} must be an int >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{argument} must be an int <= {maximum}, got {value!r}")
    return value


def positive_int(value, argument: str) -> int:
    """``value`` as an int ≥ 1 (see :func:`integer`)."""
    return integer(value, argument, minimum=1)


def boolean(value, argument: str, *, optional: bool = False) -> bool | None:
    """``value`` if it is a bool (``True``/``False``; ``None`` too when ``optional``).

    A string such as ``"no"`` is refused: it is truthy, and accepting it would silently mean yes.

    Raises:
        TypeError: anything else.
    """
    if isinstance(value, bool) or (optional and value is None):
        return value
    allowed = "True, False or None" if optional else "True or False"
    raise TypeError(f"{argument} must be {allowed}, got {type(value).__name__} {value!r}")


def choice(value, argument: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``.

    Raises:
        ValueError: otherwise, listing the choices.
    """
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{argument} must be one of {choices}, got {value!r}")
    return value


def batch_shape(value, argument: str) -> tuple[int, ...]:
    """``(N, *input_shape)`` as a tuple of positive ints with at least two entries.

    Raises:
        TypeError / ValueError naming ``argument``.
    """
    if isinstance(value, torch.Size):
        value = tuple(value)
    if not isinstance(value, (tuple, list)) or len(value) < 2:
        raise ValueError(f"{argument} must be (N, *input_shape) with a batch dimension, got {value!r}")
    return tuple(positive_int(s, argument) for s in value)


def device(value, argument: str) -> torch.device:
    """``value`` (a ``torch.device`` or a string such as ``"cpu"``, ``"cuda:0"``) as a device.

    Raises:
        ValueError: not a device name, naming ``argument``.
    """
    try:
        return torch.device(value)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ValueError(f"{argument} must be a torch.device or a device name such as 'cpu', got {value!r}") from err


# ------------------------------------------------------------------------------------ tensors
def float_tensor(
    value,
    argument: str,
    *,
    dims: int | Sequence[int] | None = None,
    min_dims: int | None = None,
    finite: bool = True,
    like: torch.Tensor | None = None,
) -> torch.Tensor:
    """``value`` if it is a float32/float64 tensor of the expected rank (and finite by default).

    Args:
        dims: allowed ``dim()`` values; ``min_dims``: smallest allowed ``dim()``.
        finite: refuse NaN / ±inf entries.
        like: when given, the tensor must have ``like``'s dtype and device.

    Raises:
        TypeError: not a tensor, not float32/float64 (half precision: the products lose too much
        precision and most kernels lack it), or not ``like``'s dtype; ValueError: wrong rank,
        non-finite entries, or not on ``like``'s device.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{argument} must be a tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{argument} must be float32 or float64, got {value.dtype}"
            + (" (half precision is not supported: convert with .float())" if value.is_floating_point() else "")
        )
    if dims is not None:
        allowed = (dims,) if isinstance(dims, int) else tuple(dims)
        if value.dim() not in allowed:
            raise ValueError(f"{argument} must have {' or '.join(map(str, allowed))} dimensions, got shape {tuple(value.shape)}")
    if min_dims is not None and value.dim() < min_dims:
        batch = " (N, ...) with a batch dimension first" if min_dims >= 2 else ""
        raise ValueError(f"{argument} must have at least {min_dims} dimensions{batch}, got shape {tuple(value.shape)}")
    if like is not None:
        if value.dtype != like.dtype:
            raise TypeError(f"{argument} is {value.dtype}, expected {like.dtype} (the model's dtype); convert one of them")
        if value.device != like.device:
            raise ValueError(f"{argument} is on {value.device}, expected {like.device} (the model's device)")
    if finite and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{argument} contains NaN or Inf")
    return value


def labels(value, argument: str, num_samples: int, classes: int | None = None) -> torch.Tensor:
    """Class labels: an int64 tensor ``(N,)`` (a Python int or list of ints is converted), each in
    ``[0, classes)`` when ``classes`` is given. Floats are refused (``0.7`` is not label 0).

    Raises:
        TypeError: not integers; ValueError: wrong shape or out of range.
    """
    if isinstance(value, bool):
        raise TypeError(f"{argument} must be int64 class labels, got bool {value!r}")
    if not isinstance(value, torch.Tensor):
        if isinstance(value, numbers.Integral):
            value = torch.tensor([int(value)])
        elif isinstance(value, (list, tuple)) and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
            value = torch.tensor([int(v) for v in value], dtype=torch.int64)
        else:
            raise TypeError(f"{argument} must be int64 class labels (a tensor, an int or a list of ints), got {value!r}")
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{argument} must be integer class labels, got {value.dtype}")
    if value.dim() == 0:
        value = value.reshape(1)
    if value.shape != (num_samples,):
        raise ValueError(f"{argument} must have shape ({num_samples},) (one label per sample), got {tuple(value.shape)}")
    value = value.to(torch.int64)
    if classes is not None and ((value < 0).any() or (value >= classes).any()):
        raise ValueError(f"{argument} must lie in [0, {classes}) for a model with {classes} outputs, got {value.tolist()}")
    return value


# ------------------------------------------------------------------------------------- models
def model_parameters(model, argument: str = "model") -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of ``model``'s trainable parameters (``requires_grad``), in
    ``model.parameters()`` order.

    Raises:
        TypeError: not an ``nn.Module``, or parameters of mixed / half-precision dtypes;
        ValueError: no trainable parameter, or parameters on several devices.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"{argument} must be a torch.nn.Module, got {type(model).__name__}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError(f"{argument} has no trainable parameters (none with requires_grad=True)")
    dtypes = {p.dtype for _, p in named}
    if len(dtypes) != 1:
        raise TypeError(f"{argument}: the trainable parameters mix dtypes {sorted(map(str, dtypes))}; convert with .to(dtype)")
    dtype = dtypes.pop()
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{argument}'s parameters must be float32 or float64, got {dtype} (convert with .float())")
    if len({p.device for _, p in named}) != 1:
        raise ValueError(f"{argument}: the trainable parameters lie on several devices")
    return named


def layout_of(named: Sequence[tuple[str, torch.Tensor]]) -> FlatLayout:
    """The :class:`FlatLayout` of ``(name, parameter)`` pairs (from :func:`model_parameters`)."""
    return FlatLayout([p.shape for _, p in named])


def training_module(model: nn.Module, *, stateful_only: bool = False) -> str | None:
    """Name of a module in training mode whose forward couples the samples, mutates state or
    draws randomness (BatchNorm with batch statistics, Dropout with ``p > 0``); None if none.

    Args:
        stateful_only: count only forwards that cannot run under ``torch.func`` transforms:
            BatchNorm updating running statistics in place, Dropout drawing a mask per call
            (a BatchNorm with ``track_running_stats=False`` is then not counted).
    """
    for name, m in model.named_modules():
        if not m.training:
            continue
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.track_running_stats or not stateful_only):
            return name
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return name
    return None


def require_functional(model: nn.Module, why: str, argument: str = "model") -> None:
    """Refuse a model in training mode with BatchNorm / Dropout where ``why`` needs a functional,
    per-sample forward.

    Raises:
        ValueError: naming the module and ``argument``.
    """
    name = training_module(model)
    if name is not None:
        kind = "BatchNorm" if isinstance(model.get_submodule(name), nn.modules.batchnorm._BatchNorm) else "Dropout"
        raise ValueError(
            f"{argument}: {kind} layer '{name}' in training mode (batch statistics couple the samples, Dropout draws "
            f"a mask per call), but {why} needs a per-sample functional forward; call model.eval() first"
        )


def private_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of ``model``'s buffers to pass to :func:`functional_loss` when a training-mode
    forward would update them in place (BatchNorm's running statistics and
    ``num_batches_tracked``): the forward then updates the copies and the caller's model keeps its
    state. Empty (no copy made) when no module would change its buffers."""
    if training_module(model, stateful_only=True) is None:
        return {}
    return {name: b.clone() for name, b in model.named_buffers()}


def output_classes(model: nn.Module, x: torch.Tensor, argument: str) -> int:
    """Run ``model`` on the first sample of ``x`` (eval mode, no gradient, buffers untouched) and
    return the size of the output's last dimension (the classes of a classifier).

    Raises:
        ValueError: the model cannot take ``x`` (wrong shape, channels, ...), naming ``argument``
        and carrying torch's reason, instead of an error deep inside ``F.linear`` / ``conv2d``.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()  # shape probe only: no BatchNorm statistics update, a batch of one allowed
    try:
        with torch.no_grad():
            out = model(x[:1])
    except (RuntimeError, ValueError, IndexError, TypeError) as err:
        raise ValueError(f"{argument} of shape {tuple(x.shape)} does not fit the model: {err}") from err
    finally:
        for module, training in modes:
            module.training = training
    if not isinstance(out, torch.Tensor) or out.dim() < 1:
        raise ValueError(f"{argument}: the model must return a tensor of outputs (N, ...), got {type(out).__name__}")
    return out.shape[-1]


def functional_loss(model: nn.Module, loss_fn: Callable, params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``loss_fn(model(x; params), y)`` through ``torch.func.functional_call`` (``params``: name →
    tensor, any subset of the model's parameters; the others are the module's own)."""
    return loss_fn(functional_call(model, params, (x,)), y)


def sample_loss(model: nn.Module, loss_fn: Callable, params: dict, x_n: torch.Tensor, y_n: torch.Tensor) -> torch.Tensor:
    """:func:`functional_loss` of one sample ``x_n`` (``x.shape[1:]``) as a batch of one."""
    return functional_loss(model, loss_fn, params, x_n.unsqueeze(0), y_n.unsqueeze(0))


def parameter_gradient(model: nn.Module, loss_fn: Callable, params: dict, x: torch.Tensor, y: torch.Tensor) -> dict:
    """``∇_θ loss_fn(model(x; θ), y)`` at ``θ = params`` (name → tensor), via ``torch.func.grad``:
    composable with ``vmap`` (per sample, per restart) and ``vjp`` (the attack's ``Jᵀw``)."""
    return grad(lambda p: functional_loss(model, loss_fn, p, x, y))(params)


def flat_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable | None = None) -> torch.Tensor:
    """Flat ``(P,)`` gradient of ``loss_fn(model(x), y)`` (default: mean cross-entropy) over the trainable
    parameters, in :func:`model_parameters` order: the gradient a client shares for the batch ``(x, y)``."""
    named = model_parameters(model)
    loss_fn = F.cross_entropy if loss_fn is None else loss_fn
    grads = parameter_gradient(model, loss_fn, {n: p.detach() for n, p in named}, x, y)
    return layout_of(named).flatten([grads[n] for n, _ in named])


# ------------------------------------------------------------------- parameter-shaped vectors
def parameter_vectors(
    value,
    layout: FlatLayout,
    argument: str,
    *,
    lead: tuple[int, ...] = (),
    batch: int = 0,
    finite: bool = True,
) -> torch.Tensor:
    """Parse "flat or list" parameter-space input into one flat tensor ``(*b, *lead, P)``.

    Accepted forms, with ``b`` up to ``batch`` leading batch dimensions:

    * a tensor ``(*b, *lead, P)``;
    * a list / tuple of L tensors, tensor ``i`` shaped ``(*b, *lead, *layout.shapes[i])`` with the
      same ``b`` for all (checked tensor by tensor: a transposed weight is refused even when its
      element count is right).

    Args:
        layout: the parameters' :class:`FlatLayout`.
        argument: the name used in error messages.
        lead: fixed leading dims after the batch dims (e.g. ``(N,)`` per sample).
        batch: the most batch dims accepted (0: none).
        finite: refuse NaN / Inf (one host read; pass False inside solver loops, which must not
            sync with the device).

    Returns:
        the flat tensor (a list is flattened once; a flat tensor is returned as given, not copied).

    Raises:
        TypeError: not a tensor / list of tensors, not float32/float64; ValueError: wrong count or
        shape (naming the offending entry), NaN or Inf.
    """
    P = layout.numel
    forms = " or ".join("(" + ", ".join([*"KM"[:b], *map(str, lead), "P"]) + ("," if b + len(lead) == 0 else "") + ")"
                        for b in range(batch + 1))
    if isinstance(value, (list, tuple)):
        if len(value) != len(layout):
            raise ValueError(f"{argument} has {len(value)} tensors, the model has {len(layout)} trainable parameters")
        for i, t in enumerate(value):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{argument}[{i}] must be a tensor, got {type(t).__name__}")
        b = value[0].dim() - len(lead) - len(layout.shapes[0])
        if not 0 <= b <= batch:
            b = 0
        prefix = tuple(value[0].shape[:b])
        for i, (t, shape) in enumerate(zip(value, layout.shapes)):
            expected = (*prefix, *lead, *shape)
            if tuple(t.shape) != expected:
                raise ValueError(f"{argument}[{i}] has shape {tuple(t.shape)}, expected {expected} (the parameter's shape)")
            float_tensor(t, f"{argument}[{i}]", like=value[0], finite=finite)
        return layout.flatten(list(value), batch_dims=b + len(lead))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{argument} must be a flat tensor {forms} or a list of parameter-shaped tensors, got {type(value).__name__}")
    b = value.dim() - len(lead) - 1
    if not 0 <= b <= batch or tuple(value.shape[b:]) != (*lead, P):
        raise ValueError(f"{argument} must have shape {forms} with P={P} (the trainable parameters), got {tuple(value.shape)}")
    return float_tensor(value, argument, finite=finite)


def finite_output(value: torch.Tensor, what: str, hint: str) -> torch.Tensor:
    """``value`` if all finite, else FloatingPointError saying ``what`` overflowed and ``hint``."""
    if not bool(torch.isfinite(value).all()):
        raise FloatingPointError(f"{what} is not finite: {hint}")
    return value


def element_weights(layer_weights, layers, shapes, dtype, device) -> torch.Tensor | None:
    """Per-element ``(P,)`` weights of an attack's objective from per-layer weights (one ``>= 0`` per
    trainable parameter tensor of ``shapes``) and/or a subset of layer indices; None when neither is given.
    Shared by the attack and the prediction of it, so both read ``layer_weights`` the same way."""
    L = len(shapes)
    if layer_weights is None and layers is None:
        return None
    per_layer = torch.ones(L, dtype=dtype, device=device)
    if layer_weights is not None:
        if isinstance(layer_weights, torch.Tensor):
            layer_weights = layer_weights.tolist()
        if not isinstance(layer_weights, (list, tuple)) or len(layer_weights) != L:
            raise ValueError(f"layer_weights must be {L} finite numbers >= 0 (one per parameter tensor), got {layer_weights!r}")
        values = [number(w, f"layer_weights[{i}]", minimum=0) for i, w in enumerate(layer_weights)]
        per_layer = torch.tensor(values, dtype=dtype, device=device)
    if layers is not None:
        if not isinstance(layers, (list, tuple)) or not layers:
            raise ValueError(f"layers must be a non-empty list of parameter-tensor indices in [-{L}, {L}), got {layers!r}")
        indices = [integer(i, f"layers[{j}]", minimum=-L, maximum=L - 1) for j, i in enumerate(layers)]
        mask = torch.zeros(L, dtype=dtype, device=device)
        mask[[i % L for i in indices]] = 1
        per_layer = per_layer * mask
    if not (per_layer > 0).any():
        raise ValueError("layer_weights / layers leave no layer with a positive weight")
    return FlatLayout(shapes).expand_per_tensor(per_layer)
