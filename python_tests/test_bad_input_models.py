"""Bad input to i2f_fast.models: a clean error naming the argument."""
import pytest

from bad_input import check_clean_error
from i2f_fast import models

CASES = [
    pytest.param(lambda: models.lenet(num_classes=2.0), "num_classes", id="lenet-num_classes-float"),
    pytest.param(lambda: models.lenet(num_classes=0), "num_classes", id="lenet-num_classes-0"),
    pytest.param(lambda: models.lenet(in_channels=True), "in_channels", id="lenet-in_channels-bool"),
    pytest.param(lambda: models.lenet(image_size="28"), "image_size", id="lenet-image_size-string"),
    pytest.param(lambda: models.lenet(activation="swish"), "activation", id="lenet-activation-unknown"),
    pytest.param(lambda: models.mlp((1, 28, 28), hidden="64"), "hidden", id="mlp-hidden-string"),
    pytest.param(lambda: models.mlp((1, 28, 28), hidden=(64, -1)), "hidden", id="mlp-hidden-negative"),
    pytest.param(lambda: models.linear((1, 0, 28)), "input_shape", id="linear-input_shape-zero"),
    pytest.param(lambda: models.resnet18(num_classes=1.5), "num_classes", id="resnet18-num_classes-float"),
    pytest.param(lambda: models.build_model("vgg", (3, 32, 32)), "name", id="build-name-unknown"),
    pytest.param(lambda: models.build_model("lenet", (1, 28)), "input_shape", id="build-input_shape-2"),
    pytest.param(lambda: models.build_model("lenet", (1, 28, 28), seed="a"), "seed", id="build-seed-string"),
    pytest.param(lambda: models.build_model("lenet", (1, 28, 28), init="he"), "init", id="build-init-unknown"),
    pytest.param(lambda: models.initialize("model", "uniform"), "model", id="initialize-model-string"),
    pytest.param(lambda: models.initialize(models.lenet(), "orthogonal"), "scheme", id="initialize-scheme-unknown"),
    pytest.param(lambda: models.initialize(models.lenet(), "uniform", generator=3), "generator", id="initialize-generator-int"),
]


@pytest.mark.parametrize("call, argument", CASES)
def test_bad_input_gets_a_clean_error_naming_the_argument(call, argument):
    check_clean_error(call, argument)
