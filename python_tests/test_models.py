"""Behaviour of i2f_fast.models: architectures, parameter counts, init schemes, the registry."""

import math

import pytest
import torch
from torch import nn

from i2f_fast.models import INIT_SCHEMES, MODELS, build_model, initialize, lenet, linear, mlp, resnet18


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def fan_in(weight: torch.Tensor) -> int:
    return weight.shape[1] * math.prod(weight.shape[2:])


def resnet18_parameter_count(in_channels: int, num_classes: int) -> int:
    """CIFAR ResNet18 count from the architecture, independent of the implementation."""

    def conv(cin, cout, k):
        return cin * cout * k * k

    def bn(c):
        return 2 * c

    total = conv(in_channels, 64, 3) + bn(64)
    cin = 64
    for index, width in enumerate((64, 128, 256, 512)):
        for block in range(2):
            total += conv(cin, width, 3) + bn(width) + conv(width, width, 3) + bn(width)
            if block == 0 and index > 0:
                total += conv(cin, width, 1) + bn(width)
            cin = width
    return total + 512 * num_classes + num_classes


# ---------------------------------------------------------------- architectures


def test_lenet_parameter_counts_match_the_paper():
    assert count(lenet(1, 28)) == 17_038
    assert count(lenet(3, 32)) == 19_438


def test_lenet_layout():
    model = lenet(3, 32)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2), (2, 2), (1, 1), (1, 1)]
    assert all(c.kernel_size == (5, 5) and c.padding == (2, 2) and c.out_channels == 12 for c in convs)
    assert sum(isinstance(m, nn.Sigmoid) for m in model) == 4
    assert model[-1].in_features == 768
    assert sum(isinstance(m, nn.ReLU) for m in lenet(activation="relu")) == 4


@pytest.mark.parametrize("image_size, features", [(28, 588), ((28, 20), 12 * 7 * 5), (15, 12 * 4 * 4)])
def test_lenet_image_size_int_or_pair(image_size, features):
    model = lenet(1, image_size)
    assert model[-1].in_features == features
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    assert model(torch.randn(2, 1, height, width)).shape == (2, 10)


def test_resnet18_parameter_count_and_layout():
    model = resnet18(3, 10)
    assert count(model) == resnet18_parameter_count(3, 10) == 11_173_962
    assert count(resnet18(1, 100)) == resnet18_parameter_count(1, 100)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    stem = model[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1) and stem.bias is None


def test_linear_and_mlp_counts():
    assert count(linear((1, 28, 28))) == 784 * 10 + 10
    assert count(mlp((3, 32, 32), hidden=(256, 256))) == (3072 * 256 + 256) + (256 * 256 + 256) + (256 * 10 + 10)
    assert count(mlp((1, 8, 8), hidden=())) == 64 * 10 + 10


@pytest.mark.parametrize(
    "name, input_shape",
    [("lenet", (1, 28, 28)), ("lenet", (3, 32, 32)), ("linear", (1, 28, 28)), ("mlp", (3, 32, 32)),
     ("resnet18", (3, 32, 32)), ("resnet18", (1, 28, 28))],
)
def test_build_model_output_shape_and_eval_mode(name, input_shape):
    model = build_model(name, input_shape, num_classes=7)
    assert not model.training and not any(m.training for m in model.modules())
    batch = 1 if name == "resnet18" else 3
    out = model(torch.randn(batch, *input_shape))
    assert out.shape == (batch, 7) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_registry_names():
    assert set(MODELS) == {"lenet", "linear", "mlp", "resnet18"}


# ---------------------------------------------------------------- init schemes


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_uniform_init_lies_in_half_unit_box_and_fills_it():
    model = lenet(init="uniform", generator=seeded(0))
    values = flat(model)
    assert values.abs().max() <= 0.5
    assert values.min() < -0.49 and values.max() > 0.49
    biases = torch.cat([layer.bias.detach() for layer in weight_layers(model)])
    assert biases.abs().max() > 0.45
    for layer in weight_layers(model):  # biases drawn too, wider than PyTorch's 1/sqrt(fan_in) default
        assert layer.bias.abs().max() > 1 / math.sqrt(fan_in(layer.weight))


def test_normal_init_draws_weights_and_biases_separately():
    model = lenet(init="normal", generator=seeded(0))
    weights = torch.cat([layer.weight.detach().flatten() for layer in weight_layers(model)])
    assert abs(weights.std().item() - 0.5) < 0.02
    assert abs(weights.mean().item()) < 0.02
    for layer in weight_layers(model):
        bias, weight = layer.bias.detach(), layer.weight.detach().flatten()
        assert bias.abs().max() <= 0.5
        # PyTorch's default bias bound is 1/sqrt(fan_in) ≤ 0.2 here; a drawn bias spreads wider.
        assert bias.abs().max() > 1 / math.sqrt(fan_in(layer.weight))
        assert not torch.isin(bias, weight).any()


@pytest.mark.parametrize("scheme", ["kaiming", "xavier"])
def test_kaiming_and_xavier_bounds(scheme):
    model = lenet(init=scheme, generator=seeded(0))
    gain = 1.0  # sigmoid
    for layer in weight_layers(model):
        weight, fan_out = layer.weight.detach(), layer.weight.shape[0] * math.prod(layer.weight.shape[2:])
        if scheme == "kaiming":
            bound = gain * math.sqrt(3.0 / fan_in(weight))
        else:
            bound = math.sqrt(6.0 / (fan_in(weight) + fan_out))
        assert weight.abs().max() <= bound + 1e-6
        assert weight.abs().max() > 0.9 * bound
        assert layer.bias.detach().abs().max() <= 1 / math.sqrt(fan_in(weight)) + 1e-6


def test_kaiming_uses_relu_gain_for_resnet_and_resets_batchnorm():
    model = resnet18(init="kaiming", generator=seeded(0))
    stem = model[0].weight.detach()
    bound = math.sqrt(2.0) * math.sqrt(3.0 / fan_in(stem))
    assert stem.abs().max() <= bound + 1e-6 and stem.abs().max() > 0.9 * bound
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(3.0)
                m.bias.fill_(2.0)
    initialize(model, "uniform", seeded(1))
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)


def test_schemes_give_different_parameters():
    drawn = {scheme: flat(lenet(init=scheme, generator=seeded(0))) for scheme in INIT_SCHEMES}
    schemes = list(drawn)
    for i, a in enumerate(schemes):
        for b in schemes[i + 1 :]:
            assert not torch.equal(drawn[a], drawn[b]), (a, b)


@pytest.mark.parametrize("scheme", ["uniform", "normal", "kaiming", "xavier"])
def test_init_reproducible_with_generator_seed(scheme):
    first = flat(initialize(lenet(init="default"), scheme, seeded(5)))
    again = flat(initialize(lenet(init="default"), scheme, seeded(5)))
    other = flat(initialize(lenet(init="default"), scheme, seeded(6)))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_default_scheme_leaves_parameters():
    model = lenet(init="uniform", generator=seeded(0))
    before = flat(model).clone()
    assert initialize(model, "default") is model
    assert torch.equal(flat(model), before)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_build_model_reproducible_per_seed_and_leaves_global_rng(name):
    shape = (3, 32, 32) if name == "resnet18" else (1, 28, 28)
    state = torch.get_rng_state()
    a, b, c = (flat(build_model(name, shape, seed=s)) for s in (0, 0, 1))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_build_model_default_inits():
    lenet_params = flat(build_model("lenet", (1, 28, 28)))
    assert lenet_params.abs().max() <= 0.5 and lenet_params.abs().max() > 0.49  # uniform
    assert torch.equal(lenet_params, flat(build_model("lenet", (1, 28, 28), init="uniform")))
    assert not torch.equal(lenet_params, flat(build_model("lenet", (1, 28, 28), init="xavier")))
    linear_weight = build_model("linear", (1, 28, 28))[1].weight.detach()
    assert linear_weight.abs().max() <= 1 / math.sqrt(784) + 1e-6  # PyTorch default bound


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda: initialize(lenet(), "orthogonal"), "scheme"),
        (lambda: lenet(init="he"), "init"),
        (lambda: lenet(activation="gelu"), "activation"),
        (lambda: lenet(in_channels=0), "in_channels"),
        (lambda: lenet(image_size=(28,)), "image_size"),
        (lambda: lenet(image_size=(28, -1)), "image_size"),
        (lambda: lenet(num_classes=True), "num_classes"),
        (lambda: mlp((1, 28, 28), hidden=(0,)), "hidden"),
        (lambda: linear((1, 2.5)), "input_shape"),
        (lambda: resnet18(num_classes=0), "num_classes"),
        (lambda: build_model("vgg", (3, 32, 32)), "name"),
        (lambda: build_model("lenet", (28, 28)), "input_shape"),
        (lambda: build_model("lenet", (1, 28, 28), init="nope"), "init"),
    ],
)
def test_bad_arguments_raise_an_error_naming_them(call, argument):
    with pytest.raises((ValueError, TypeError), match=argument):
        call()


def test_unknown_names_list_the_valid_choices():
    with pytest.raises(ValueError) as scheme_error:
        initialize(lenet(), "orthogonal")
    assert all(s in str(scheme_error.value) for s in INIT_SCHEMES)
    with pytest.raises(ValueError) as name_error:
        build_model("vgg", (3, 32, 32))
    assert all(n in str(name_error.value) for n in MODELS)
