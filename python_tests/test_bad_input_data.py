"""Bad input to i2f_fast.data (loaders and ImageBatch): a clean error naming the argument."""
import pytest
import torch

from bad_input import check_clean_error
from i2f_fast import data


def batch(**kw):
    args = dict(images=torch.zeros(2, 1, 4, 4), labels=torch.tensor([0, 1]), mean=(0.5,), std=(0.25,), name="x",
                num_classes=10)
    args.update(kw)
    return lambda: data.ImageBatch(**args)


CASES = [
    pytest.param(lambda: data.digits(n="3"), "n", id="digits-n-string"),
    pytest.param(lambda: data.digits(n=0), "n", id="digits-n-0"),
    pytest.param(lambda: data.digits(n=1, start=-1), "start", id="digits-start-negative"),
    pytest.param(lambda: data.digits(n=1, image_size=2.5), "image_size", id="digits-image_size-float"),
    pytest.param(lambda: data.digits(n=1, image_size=0), "image_size", id="digits-image_size-0"),
    pytest.param(lambda: data.natural(n=1, seed=1.5), "seed", id="natural-seed-float"),
    pytest.param(lambda: data.natural(n=1, seed=-1), "seed", id="natural-seed-negative"),
    pytest.param(lambda: data.load_dataset("svhn"), "name", id="load-unknown"),
    pytest.param(lambda: data.load_dataset("digits", n=10_000), "n", id="load-n-too-large"),
    pytest.param(batch(images=torch.zeros(2, 1, 4, 4, dtype=torch.long)), "images", id="batch-images-int"),
    pytest.param(batch(images=torch.zeros(2, 16)), "images", id="batch-images-2d"),
    pytest.param(batch(images=torch.full((2, 1, 4, 4), float("nan"))), "images", id="batch-images-nan"),
    pytest.param(batch(labels=torch.tensor([0.0, 1.0])), "labels", id="batch-labels-float"),
    pytest.param(batch(labels=torch.tensor([0, 10])), "labels", id="batch-labels-out-of-range"),
    pytest.param(batch(labels=torch.tensor([0])), "labels", id="batch-labels-count"),
    pytest.param(batch(mean=(0.5, 0.5)), "mean", id="batch-mean-length"),
    pytest.param(batch(std=(0.0,)), "std[0]", id="batch-std-zero"),
    pytest.param(batch(mean=(float("inf"),)), "mean[0]", id="batch-mean-inf"),
    pytest.param(batch(num_classes=0), "num_classes", id="batch-num_classes-0"),
    pytest.param(lambda: data.digits(n=1).normalize(torch.zeros(3, 4, 4)), "x", id="normalize-channels"),
]


@pytest.mark.parametrize("call, argument", CASES)
def test_bad_input_gets_a_clean_error_naming_the_argument(call, argument):
    check_clean_error(call, argument)
