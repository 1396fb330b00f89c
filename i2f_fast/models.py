"""Models of the I²F experiments and the initialisation schemes the paper compares.

Every constructor returns a plain ``nn.Module`` whose ``parameters()`` order is the order gradients
are flattened in (DESIGN.md §1). Inputs are NCHW float tensors, outputs are (N, num_classes) logits.

- ``lenet``: the DLG-style ConvNet the paper calls "LeNet" (4 × Conv k5 + Sigmoid, then FC;
  17,038 parameters on 1×28×28, 19,438 on 3×32×32). Default init U(−0.5, 0.5), as in DLG.
- ``linear``: Flatten → Linear (the paper's "Linear" panel on MNIST).
- ``mlp``: Flatten → [Linear → activation] × len(hidden) → Linear.
- ``resnet18``: CIFAR-style ResNet18 (3×3 stride-1 stem, no max-pool, BasicBlock [2, 2, 2, 2]).

``initialize`` re-draws the weights of an existing model with one of the schemes of the paper's
initialisation experiment (uniform, normal, kaiming, xavier), all draws through one
``torch.Generator``. ``build_model`` builds a registered model from an input shape and a seed and
returns it in ``eval()`` mode, the mode the paper computes gradients and Jacobians in.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence

import torch
from torch import nn

from .frontdoor import integer, positive_int

INIT_SCHEMES = ("uniform", "normal", "kaiming", "xavier", "default")
"""Names accepted by :func:`initialize` (and by the ``init`` argument of every constructor)."""

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}
"""Activation name → module class, for the ``activation`` argument of ``lenet`` and ``mlp``."""

_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_NONLINEARITY_OF = {nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.ReLU: "relu"}


def _check_choice(value: str, choices, argument: str) -> None:
    """Raise ValueError naming ``argument`` when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{argument} must be one of {sorted(choices)}, got {value!r}")


def _as_shape(values, argument: str, length: int | None = None, min_length: int = 1) -> tuple[int, ...]:
    """``values`` as a tuple of positive ints (exactly ``length`` of them, or at least
    ``min_length`` when ``length`` is None), or ValueError naming ``argument``."""
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise ValueError(f"{argument} must be a sequence of positive ints, got {values!r}")
    if (length is not None and len(values) != length) or len(values) < min_length:
        expected = f"{length}" if length is not None else f"at least {min_length}"
        raise ValueError(f"{argument} must have {expected} entries, got {values!r}")
    return tuple(positive_int(size, argument) for size in values)


def _model_nonlinearity(model: nn.Module) -> str:
    """Name of the first activation module in ``model`` for the kaiming gain ('linear' if none)."""
    for module in model.modules():
        for activation_class, name in _NONLINEARITY_OF.items():
            if isinstance(module, activation_class):
                return name
    return "linear"


def _fan_in(weight: torch.Tensor) -> int:
    """Input fan of a Linear (out, in) or Conv (out, in, *kernel) weight."""
    return weight.shape[1] * math.prod(weight.shape[2:])


def initialize(model: nn.Module, scheme: str, generator: torch.Generator | None = None) -> nn.Module:
    """Re-draw the parameters of ``model`` in place with one initialisation scheme.

    Args:
        model: any module; its Linear / Conv1d-3d layers are re-drawn, its BatchNorm layers are
            reset (weight 1, bias 0, running statistics cleared), other parameters are left alone.
        scheme: one of :data:`INIT_SCHEMES`:

            - ``"uniform"``: every weight and bias U(−0.5, 0.5) (the DLG init, riskiest in the paper);
            - ``"normal"``: weights N(0, 0.5²), biases U(−0.5, 0.5) (the paper's code re-drew the
              weight in the bias branch; here the bias is drawn);
            - ``"kaiming"``: ``kaiming_uniform_`` with the gain of the model's activation (the first
              Sigmoid / Tanh / ReLU module found; 'linear' when there is none);
            - ``"xavier"``: ``xavier_uniform_``;
            - ``"default"``: leave the parameters as they are (PyTorch's own init after construction).

            For kaiming and xavier the biases follow PyTorch's default rule U(−1/√fan_in, 1/√fan_in).
        generator: CPU ``torch.Generator`` every draw goes through; None uses the global RNG.

    Returns:
        ``model`` itself.

    Raises:
        ValueError: ``scheme`` is not one of :data:`INIT_SCHEMES`; TypeError: ``model`` is not a
        module or ``generator`` not a ``torch.Generator``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    _check_choice(scheme, INIT_SCHEMES, "scheme")
    if scheme == "default":
        return model
    nonlinearity = _model_nonlinearity(model)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _NORM_LAYERS):
                module.reset_parameters()
            if not isinstance(module, _WEIGHT_LAYERS):
                continue
            weight, bias = module.weight, module.bias
            if scheme == "uniform":
                nn.init.uniform_(weight, -0.5, 0.5, generator=generator)
            elif scheme == "normal":
                nn.init.normal_(weight, 0.0, 0.5, generator=generator)
            elif scheme == "kaiming":
                nn.init.kaiming_uniform_(weight, nonlinearity=nonlinearity, generator=generator)
            else:
                nn.init.xavier_uniform_(weight, generator=generator)
            if bias is not None:
                bound = 0.5 if scheme in ("uniform", "normal") else 1.0 / math.sqrt(_fan_in(weight))
                nn.init.uniform_(bias, -bound, bound, generator=generator)
    return model


def lenet(
    in_channels: int = 1,
    image_size: int | Sequence[int] = 28,
    num_classes: int = 10,
    activation: str = "sigmoid",
    init: str = "uniform",
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """The DLG-style ConvNet the paper calls "LeNet".

    Four Conv2d(kernel 5, 12 channels, padding 2) with strides 2, 2, 1, 1, each followed by the
    activation, then Flatten and Linear(12·⌈H/4⌉·⌈W/4⌉ → num_classes).

    Args:
        in_channels: C of the (N, C, H, W) input.
        image_size: H = W as an int, or (H, W).
        num_classes: number of logits.
        activation: one of :data:`ACTIVATIONS` (the paper uses sigmoid).
        init: scheme for :func:`initialize`; the DLG default is U(−0.5, 0.5).
        generator: CPU generator for the init draws; None uses the global RNG.

    Returns:
        ``nn.Sequential`` mapping (N, C, H, W) → (N, num_classes); 17,038 parameters for
        1×28×28 / 10 classes, 19,438 for 3×32×32 / 10 classes.

    Raises:
        ValueError: a size is not a positive int, or ``activation`` / ``init`` is unknown.
    """
    in_channels = positive_int(in_channels, "in_channels")
    num_classes = positive_int(num_classes, "num_classes")
    sizes = (image_size, image_size) if isinstance(image_size, int) else image_size
    height, width = _as_shape(sizes, "image_size", length=2)
    _check_choice(activation, ACTIVATIONS, "activation")
    _check_choice(init, INIT_SCHEMES, "init")
    layers: list[nn.Module] = []
    channels = in_channels
    for stride in (2, 2, 1, 1):
        layers += [nn.Conv2d(channels, 12, kernel_size=5, stride=stride, padding=2), ACTIVATIONS[activation]()]
        channels = 12
    features = 12 * math.ceil(height / 4) * math.ceil(width / 4)
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(features, num_classes))
    return initialize(model, init, generator)


def linear(
    input_shape: Sequence[int],
    num_classes: int = 10,
    init: str = "default",
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """Flatten → Linear(D → num_classes), D = prod(input_shape).

    Args:
        input_shape: per-sample shape, e.g. (C, H, W).
        num_classes: number of logits.
        init: scheme for :func:`initialize` (default: PyTorch's own init).
        generator: CPU generator for the init draws; None uses the global RNG.

    Returns:
        ``nn.Sequential`` mapping (N, *input_shape) → (N, num_classes).

    Raises:
        ValueError: a size is not a positive int, or ``init`` is unknown.
    """
    shape = _as_shape(input_shape, "input_shape")
    num_classes = positive_int(num_classes, "num_classes")
    _check_choice(init, INIT_SCHEMES, "init")
    model = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), num_classes))
    return initialize(model, init, generator)


def mlp(
    input_shape: Sequence[int],
    num_classes: int = 10,
    hidden: Sequence[int] = (256, 256),
    activation: str = "sigmoid",
    init: str = "default",
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """Flatten → [Linear → activation] per hidden width → Linear(→ num_classes).

    Args:
        input_shape: per-sample shape, e.g. (C, H, W).
        num_classes: number of logits.
        hidden: widths of the hidden layers (may be empty: then this is :func:`linear`).
        activation: one of :data:`ACTIVATIONS`.
        init: scheme for :func:`initialize` (default: PyTorch's own init).
        generator: CPU generator for the init draws; None uses the global RNG.

    Returns:
        ``nn.Sequential`` mapping (N, *input_shape) → (N, num_classes).

    Raises:
        ValueError: a size is not a positive int, or ``activation`` / ``init`` is unknown.
    """
    shape = _as_shape(input_shape, "input_shape")
    widths = _as_shape(hidden, "hidden", min_length=0)
    num_classes = positive_int(num_classes, "num_classes")
    _check_choice(activation, ACTIVATIONS, "activation")
    _check_choice(init, INIT_SCHEMES, "init")
    layers: list[nn.Module] = [nn.Flatten()]
    features = math.prod(shape)
    for width in widths:
        layers += [nn.Linear(features, width), ACTIVATIONS[activation]()]
        features = width
    model = nn.Sequential(*layers, nn.Linear(features, num_classes))
    return initialize(model, init, generator)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 conv + BN, ReLU, identity or 1×1 conv + BN shortcut.

    Maps (N, in_channels, H, W) → (N, out_channels, ⌈H/stride⌉, ⌈W/stride⌉).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) → (N, out_channels, ⌈H/stride⌉, ⌈W/stride⌉)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def resnet18(
    in_channels: int = 3,
    num_classes: int = 10,
    init: str = "kaiming",
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """CIFAR-style ResNet18.

    3×3 stride-1 stem conv (64 channels, no bias) + BN + ReLU, no max-pool, four stages of two
    :class:`BasicBlock` with widths 64, 128, 256, 512 (stride 2 entering stages 2–4), adaptive
    average pool, Linear(512 → num_classes). 11,173,962 parameters for 3 channels / 10 classes.

    Args:
        in_channels: C of the (N, C, H, W) input (any H, W ≥ 1).
        num_classes: number of logits.
        init: scheme for :func:`initialize` (default kaiming with the ReLU gain).
        generator: CPU generator for the init draws; None uses the global RNG.

    Returns:
        ``nn.Sequential`` mapping (N, C, H, W) → (N, num_classes).

    Raises:
        ValueError: a size is not a positive int, or ``init`` is unknown.
    """
    in_channels = positive_int(in_channels, "in_channels")
    num_classes = positive_int(num_classes, "num_classes")
    _check_choice(init, INIT_SCHEMES, "init")
    stages: list[nn.Module] = []
    channels = 64
    for index, width in enumerate((64, 128, 256, 512)):
        stride = 1 if index == 0 else 2
        stages.append(nn.Sequential(BasicBlock(channels, width, stride), BasicBlock(width, width, 1)))
        channels = width
    model = nn.Sequential(
        nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        *stages,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(512, num_classes),
    )
    return initialize(model, init, generator)


MODELS = {"lenet": lenet, "linear": linear, "mlp": mlp, "resnet18": resnet18}
"""Model name → constructor. Each takes its input shape either as ``input_shape`` or as
``in_channels`` (and ``image_size``); :func:`build_model` maps (C, H, W) onto whichever it has."""


def _shape_kwargs(constructor, input_shape: tuple[int, int, int]) -> dict:
    """Map (C, H, W) onto the constructor's shape arguments."""
    parameters = inspect.signature(constructor).parameters
    if "input_shape" in parameters:
        return {"input_shape": input_shape}
    kwargs = {"in_channels": input_shape[0]}
    if "image_size" in parameters:
        kwargs["image_size"] = input_shape[1:]
    return kwargs


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int = 10,
    init: str | None = None,
    seed: int = 0,
) -> nn.Module:
    """Build a registered model for (C, H, W) inputs, reproducibly, in ``eval()`` mode.

    Construction runs under a forked global RNG seeded with ``seed`` and every init draw goes
    through a generator seeded with ``seed``, so the same arguments give the same parameters
    (``"default"`` init included) and the caller's global RNG state is left untouched.

    Args:
        name: one of :data:`MODELS` ("lenet", "linear", "mlp", "resnet18").
        input_shape: (C, H, W) of one sample.
        num_classes: number of logits.
        init: scheme for :func:`initialize`; None means the model's own default
            (lenet: "uniform", linear / mlp: "default", resnet18: "kaiming").
        seed: seed of the parameter draws.

    Returns:
        The model on the CPU, float32, in ``eval()`` mode, mapping (N, C, H, W) → (N, num_classes).

    Raises:
        ValueError: unknown ``name`` or ``init``, or ``input_shape`` is not three positive ints;
        TypeError: ``seed`` is not an int.
    """
    _check_choice(name, MODELS, "name")
    seed = integer(seed, "seed")
    shape = _as_shape(input_shape, "input_shape", length=3)
    constructor = MODELS[name]
    kwargs = _shape_kwargs(constructor, shape)
    if init is not None:
        kwargs["init"] = init
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = constructor(num_classes=num_classes, generator=generator, **kwargs)
    return model.eval()
