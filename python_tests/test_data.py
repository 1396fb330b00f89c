"""Behaviour of i2f_fast.data: the bundled datasets, ImageBatch, the torchvision loaders' errors."""

import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from i2f_fast import data
from i2f_fast.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    DIGITS_MEAN,
    DIGITS_STD,
    MNIST_MEAN,
    MNIST_STD,
    DatasetUnavailableError,
    ImageBatch,
    digits,
    load_dataset,
    mnist,
    natural,
)

# ---------------------------------------------------------------- digits


def test_digits_shape_dtype_labels_and_order():
    batch = digits(12)
    assert batch.images.shape == (12, 1, 28, 28) and batch.images.dtype == torch.float32
    assert batch.labels.dtype == torch.int64
    assert batch.labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]  # sklearn's natural order
    assert (batch.name, batch.num_classes, len(batch)) == ("digits", 10, 12)
    assert batch.mean == DIGITS_MEAN and batch.std == DIGITS_STD


def test_digits_all_and_start_offset():
    full = digits()
    assert len(full) == 1797 and set(full.labels.tolist()) == set(range(10))
    part = digits(5, start=3)
    assert torch.equal(part.images, full.images[3:8]) and torch.equal(part.labels, full.labels[3:8])
    assert len(digits(start=1790)) == 7


def test_digits_constants_match_the_data():
    """Recompute the hard-coded normalisation constants so they cannot go stale."""
    pixels = torch.as_tensor(load_digits().images, dtype=torch.float64).unsqueeze(1) / 16.0
    resized = F.interpolate(pixels, size=(28, 28), mode="bilinear", align_corners=False).clamp(0, 1)
    assert abs(resized.mean().item() - DIGITS_MEAN[0]) < 1e-4
    assert abs(resized.std(correction=0).item() - DIGITS_STD[0]) < 1e-4


def test_digits_normalised_over_the_whole_dataset():
    images = digits().images.double()
    assert abs(images.mean().item()) < 1e-3
    assert abs(images.std().item() - 1.0) < 1e-3


def test_digits_to_pixels_round_trip_within_unit_range():
    batch = digits(50)
    pixels = batch.to_pixels(batch.images)
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert pixels.max() > 0.99 and pixels.min() < 1e-6  # ink and background both present
    torch.testing.assert_close(batch.normalize(pixels), batch.images)
    low, high = batch.pixel_bounds
    assert low.shape == high.shape == (1, 1, 1)
    torch.testing.assert_close(low, torch.full((1, 1, 1), -DIGITS_MEAN[0] / DIGITS_STD[0]))
    assert (batch.images >= low - 1e-6).all() and (batch.images <= high + 1e-6).all()


def test_digits_image_size():
    batch = digits(3, image_size=16)
    assert batch.images.shape == (3, 1, 16, 16)
    # 8×8 → 8×8 is the identity: the original scans, scaled to [0, 1].
    raw = torch.as_tensor(load_digits().images[:3], dtype=torch.float32) / 16.0
    torch.testing.assert_close(digits(3, image_size=8).to_pixels(digits(3, image_size=8).images)[:, 0], raw)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"n": -1}, "n"), ({"n": 0}, "n"), ({"n": 1798}, "n"), ({"n": 10, "start": 1790}, "n"), ({"n": 1.5}, "n"),
        ({"start": -1}, "start"), ({"start": 1797}, "start"), ({"start": "0"}, "start"),
        ({"image_size": 0}, "image_size"),
    ],
)
def test_digits_bad_arguments(kwargs, argument):
    with pytest.raises((ValueError, TypeError), match=argument):
        digits(**kwargs)


# ---------------------------------------------------------------- ImageBatch


def test_to_pixels_works_on_any_leading_dims_and_dtype():
    batch = natural(2)
    x = batch.images.double().unsqueeze(0)  # (1, N, 3, 32, 32)
    pixels = batch.to_pixels(x)
    assert pixels.dtype == torch.float64 and pixels.shape == x.shape
    mean = torch.tensor(CIFAR10_MEAN, dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor(CIFAR10_STD, dtype=torch.float64).view(3, 1, 1)
    torch.testing.assert_close(pixels, x * std + mean)
    torch.testing.assert_close(batch.to_pixels(batch.images[0]), pixels[0, 0].float())
    with pytest.raises(ValueError, match="channels"):
        batch.to_pixels(torch.zeros(2, 1, 32, 32))


def test_subset_and_validation():
    batch = digits(10)
    picked = batch.subset([7, 2])
    assert torch.equal(picked.images, batch.images[[7, 2]]) and picked.labels.tolist() == [7, 2]
    assert picked.mean == batch.mean and picked.name == "digits"
    assert len(batch.subset(3)) == 1 and len(batch.subset(slice(2, 5))) == 3
    assert len(batch.subset(torch.tensor([0, 1, 2]))) == 3
    with pytest.raises(ValueError, match="labels"):
        ImageBatch(batch.images, batch.labels[:3], DIGITS_MEAN, DIGITS_STD, "digits", 10)
    with pytest.raises(ValueError, match="mean"):
        ImageBatch(batch.images, batch.labels, CIFAR10_MEAN, CIFAR10_STD, "digits", 10)
    with pytest.raises(ValueError, match="images"):
        ImageBatch(batch.images[0], batch.labels, DIGITS_MEAN, DIGITS_STD, "digits", 10)


# ---------------------------------------------------------------- natural


def test_natural_shape_labels_and_range():
    batch = natural(12)
    assert batch.images.shape == (12, 3, 32, 32) and batch.images.dtype == torch.float32
    assert batch.labels.dtype == torch.int64
    assert batch.labels.tolist() == [k % len(data.NATURAL_PHOTOS) for k in range(12)]
    assert (batch.name, batch.num_classes) == ("natural", 10)
    assert batch.mean == CIFAR10_MEAN and batch.std == CIFAR10_STD
    pixels = batch.to_pixels(batch.images)
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert (pixels.flatten(1).std(dim=1) > 0.01).all()  # real texture, not flat patches
    assert natural(2, image_size=24).images.shape == (2, 3, 24, 24)


def test_natural_deterministic_per_seed_and_independent_of_start():
    first, again, other = natural(10, seed=0), natural(10, seed=0), natural(10, seed=1)
    assert torch.equal(first.images, again.images)
    assert not torch.equal(first.images, other.images)
    assert torch.equal(first.labels, other.labels)
    torch.testing.assert_close(natural(4, start=6, seed=0).images, first.images[6:10])
    assert len(natural()) == data.NATURAL_LENGTH


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"n": 0}, "n"), ({"start": data.NATURAL_LENGTH}, "start"), ({"seed": -1}, "seed"),
        ({"image_size": -4}, "image_size"),
    ],
)
def test_natural_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        natural(**kwargs)


# ---------------------------------------------------------------- load_dataset


def test_load_dataset_dispatch():
    torch.testing.assert_close(load_dataset("digits", n=4, start=2).images, digits(4, start=2).images)
    torch.testing.assert_close(
        load_dataset("natural", n=3, seed=2, image_size=16).images, natural(3, seed=2, image_size=16).images
    )
    assert load_dataset("digits", 2, root="/ignored").name == "digits"


def test_load_dataset_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="name") as error:
        load_dataset("imagenet")
    assert all(name in str(error.value) for name in data.DATASETS)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_load_dataset_torchvision_without_root(name):
    with pytest.raises(DatasetUnavailableError, match="root"):
        load_dataset(name, n=2)


# ---------------------------------------------------------------- torchvision datasets


def hide_torchvision(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)


def fake_torchvision(monkeypatch, **classes):
    module = types.ModuleType("torchvision")
    module.datasets = types.SimpleNamespace(**classes)
    monkeypatch.setitem(sys.modules, "torchvision", module)
    monkeypatch.delitem(sys.modules, "torchvision.datasets", raising=False)


def write_files(folder, names):
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes(b"")


MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


class FakeMNIST:
    """torchvision.datasets.MNIST stand-in: uint8 (N, 28, 28) tensor data, int64 tensor targets."""

    def __init__(self, root, train, download):
        assert download is False
        generator = torch.Generator().manual_seed(0)
        self.data = torch.randint(0, 256, (20, 28, 28), dtype=torch.uint8, generator=generator)
        self.targets = torch.arange(20) % 10 if not train else 9 - torch.arange(20) % 10  # the split tells itself apart


class FakeCIFAR10:
    """torchvision.datasets.CIFAR10 stand-in: uint8 (N, 32, 32, 3) numpy data, list targets."""

    def __init__(self, root, train, download):
        self.data = np.arange(6 * 32 * 32 * 3, dtype=np.int64).reshape(6, 32, 32, 3).astype(np.uint8)
        self.targets = [3, 1, 4, 1, 5, 9]


def test_mnist_empty_root_without_torchvision(monkeypatch, tmp_path):
    hide_torchvision(monkeypatch)
    with pytest.raises(DatasetUnavailableError) as error:
        mnist(tmp_path, n=2)
    message = str(error.value)
    assert "pip install torchvision" in message
    assert str(tmp_path / "MNIST" / "raw") in message and "t10k-images-idx3-ubyte" in message
    assert "cannot download" in message


def test_mnist_files_present_but_torchvision_missing(monkeypatch, tmp_path):
    hide_torchvision(monkeypatch)
    write_files(tmp_path / "MNIST" / "raw", MNIST_FILES)
    with pytest.raises(DatasetUnavailableError, match="pip install torchvision") as error:
        mnist(tmp_path)
    assert "MNIST/raw" not in str(error.value)
    assert isinstance(error.value.__cause__, ImportError)


def test_mnist_empty_root_with_torchvision(monkeypatch, tmp_path):
    fake_torchvision(monkeypatch, MNIST=FakeMNIST)
    with pytest.raises(DatasetUnavailableError) as error:
        mnist(tmp_path)
    message = str(error.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "cannot download" in message
    assert "pip install" not in message


def test_torchvision_read_failure_becomes_dataset_unavailable(monkeypatch, tmp_path):
    class CorruptMNIST:
        def __init__(self, root, train, download):
            raise RuntimeError("Dataset not found or corrupted.")

    fake_torchvision(monkeypatch, MNIST=CorruptMNIST)
    write_files(tmp_path / "MNIST" / "raw", MNIST_FILES)
    with pytest.raises(DatasetUnavailableError, match="corrupted"):
        mnist(tmp_path)


def test_mnist_loads_through_torchvision(monkeypatch, tmp_path):
    fake_torchvision(monkeypatch, MNIST=FakeMNIST)
    write_files(tmp_path / "MNIST" / "raw", MNIST_FILES)
    batch = load_dataset("mnist", n=5, start=2, root=tmp_path)
    source = FakeMNIST(tmp_path, False, False)
    assert batch.images.shape == (5, 1, 28, 28) and batch.images.dtype == torch.float32
    assert batch.labels.dtype == torch.int64 and batch.labels.tolist() == source.targets[2:7].tolist()
    assert (batch.mean, batch.std, batch.num_classes, batch.name) == (MNIST_MEAN, MNIST_STD, 10, "mnist")
    torch.testing.assert_close(batch.to_pixels(batch.images)[:, 0], source.data[2:7].float() / 255)
    assert mnist(tmp_path, train=True).labels[0] == 9  # train flag passed on
    with pytest.raises(ValueError, match="start"):
        mnist(tmp_path, start=20)


def test_cifar10_loads_channels_last_data(monkeypatch, tmp_path):
    fake_torchvision(monkeypatch, CIFAR10=FakeCIFAR10)
    write_files(
        tmp_path / "cifar-10-batches-py",
        ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)],
    )
    batch = load_dataset("cifar10", root=str(tmp_path))
    source = FakeCIFAR10(tmp_path, False, False)
    assert batch.images.shape == (6, 3, 32, 32) and batch.labels.tolist() == source.targets
    expected = torch.as_tensor(source.data).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(batch.to_pixels(batch.images), expected)


def test_cifar100_missing_files_named(monkeypatch, tmp_path):
    fake_torchvision(monkeypatch)
    with pytest.raises(DatasetUnavailableError, match="cifar-100-python"):
        load_dataset("cifar100", root=tmp_path)
