"""Image batches for the I²F experiments: two offline datasets and the paper's torchvision ones.

Every loader returns an :class:`ImageBatch`: NCHW float32 images normalised with the dataset's
per-channel mean/std (the space the paper computes gradients, Jacobians and MSE in), int64 labels,
and the statistics needed to go back to [0, 1] pixels (PSNR, plots) or to the attack's box
constraint ``pixel_bounds``. Samples come in the dataset's natural order, ``start … start+n−1``,
as the paper's ``test_set[i]`` loop does.

- ``digits``: scikit-learn's bundled handwritten digits (real data, no download), upsampled to
  MNIST-like 1×28×28; the offline stand-in for MNIST.
- ``natural``: deterministic RGB patches of scikit-image's bundled photographs, 3×32×32 with
  CIFAR-10 statistics; the offline stand-in for CIFAR-10.
- ``mnist``, ``cifar10``, ``cifar100``: through torchvision from files already on disk
  (``download=False``); a clear :class:`DatasetUnavailableError` when torchvision or the files are
  missing.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import frontdoor

DIGITS_MEAN = (0.30526,)
"""Mean pixel of all 1797 scikit-learn digits after scaling to [0, 1] and resizing to 28×28."""

DIGITS_STD = (0.32469,)
"""Standard deviation (population) of the same 1797 × 28 × 28 pixels."""

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

NATURAL_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle")
"""scikit-image photographs cut by :func:`natural`, in label order. All ship inside the
scikit-image wheel (no download); "motorcycle" is the left view of ``stereo_motorcycle``."""

NATURAL_LENGTH = 1000
"""Number of patches in the :func:`natural` dataset (200 per photo)."""

DATASETS = ("digits", "natural", "mnist", "cifar10", "cifar100")
"""Names accepted by :func:`load_dataset`."""


class DatasetUnavailableError(RuntimeError):
    """A dataset cannot be loaded on this machine: torchvision or the files are missing."""


@dataclass(frozen=True, eq=False)
class ImageBatch:
    """A batch of normalised images with the statistics to undo the normalisation.

    Attributes:
        images: (N, C, H, W) float32, ``(pixels − mean) / std`` with pixels in [0, 1].
        labels: (N,) int64 class indices in [0, num_classes).
        mean: per-channel mean, length C.
        std: per-channel standard deviation, length C.
        name: dataset name, e.g. "digits".
        num_classes: number of classes the labels index.
    """

    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    num_classes: int

    def __post_init__(self) -> None:
        """Front-door checks: finite float (N, C, H, W) images, int64 labels in [0, num_classes), one
        finite mean and one positive std per channel (ValueError / TypeError naming the field)."""
        frontdoor.float_tensor(self.images, "images", dims=4)
        classes = frontdoor.positive_int(self.num_classes, "num_classes")
        channels = self.images.shape[1]
        if not all(isinstance(v, (tuple, list)) and len(v) == channels for v in (self.mean, self.std)):
            raise ValueError(f"mean and std must have {channels} entries, got {self.mean} and {self.std}")
        checked = dict(  # frozen: the normalised fields are set through object.__setattr__
            num_classes=classes,
            labels=frontdoor.labels(self.labels, "labels", self.images.shape[0], classes),
            mean=tuple(frontdoor.number(v, f"mean[{c}]") for c, v in enumerate(self.mean)),
            std=tuple(frontdoor.number(v, f"std[{c}]", positive=True) for c, v in enumerate(self.std)),
        )
        for field_name, value in checked.items():
            object.__setattr__(self, field_name, value)

    def _statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std as (C, 1, 1) tensors in ``x``'s dtype and device; checks x's channel dim."""
        channels = len(self.mean)
        if x.dim() < 3 or x.shape[-3] != channels:
            raise ValueError(f"x must have {channels} channels at dim -3, got shape {tuple(x.shape)}")
        options = {"dtype": x.dtype, "device": x.device}
        mean = torch.tensor(self.mean, **options).view(channels, 1, 1)
        std = torch.tensor(self.std, **options).view(channels, 1, 1)
        return mean, std

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation: (..., C, H, W) normalised → (..., C, H, W) pixels (in [0, 1]
        when ``x`` lies within :attr:`pixel_bounds`). Raises ValueError on a channel mismatch."""
        mean, std = self._statistics(x)
        return x * std + mean

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Apply the normalisation: (..., C, H, W) pixels → (..., C, H, W) normalised.
        Raises ValueError on a channel mismatch."""
        mean, std = self._statistics(pixels)
        return (pixels - mean) / std

    @property
    def pixel_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(low, high), each (C, 1, 1) float32: the normalised images of pixel values 0 and 1,
        i.e. the box [(0 − μ)/σ, (1 − μ)/σ] a valid image lies in."""
        mean, std = self._statistics(self.images[:0])
        return (0 - mean) / std, (1 - mean) / std

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, indices) -> ImageBatch:
        """A new batch with the samples at ``indices`` (a slice, a sequence of ints or a 1-D
        int64 tensor), in that order. Raises IndexError for an index out of range."""
        if not isinstance(indices, slice):
            indices = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        return replace(self, images=self.images[indices], labels=self.labels[indices])


def _batch_from_pixels(pixels, labels, mean, std, name: str, num_classes: int) -> ImageBatch:
    """ImageBatch of (N, C, H, W) ``pixels`` in [0, 1] normalised with ``mean`` / ``std``."""
    batch = ImageBatch(pixels, labels, mean, std, name, num_classes)
    return replace(batch, images=batch.normalize(pixels))


def _sample_count(n, start, length: int) -> int:
    """Number of samples ``start … start+n−1`` of a dataset of ``length``; ValueError naming
    ``start`` or ``n`` when they fall outside it."""
    start = frontdoor.integer(start, "start")
    if not 0 <= start < length:
        raise ValueError(f"start must be in [0, {length - 1}] for this dataset of {length} samples, got {start}")
    if n is None:
        return length - start
    n = frontdoor.integer(n, "n")
    if not 1 <= n <= length - start:
        raise ValueError(f"n must be in [1, {length - start}] for start={start} and {length} samples, got {n}")
    return n


def _image_size(image_size) -> int:
    """``image_size`` as a positive int, or ValueError naming it."""
    size = frontdoor.integer(image_size, "image_size")
    if size < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return size


@functools.lru_cache(maxsize=1)
def _digits_pixels_8x8() -> tuple[torch.Tensor, torch.Tensor]:
    """All scikit-learn digits: (1797, 1, 8, 8) float32 in [0, 1] and (1797,) int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return pixels, torch.as_tensor(bunch.target, dtype=torch.int64)


def digits(n: int | None = None, start: int = 0, image_size: int = 28) -> ImageBatch:
    """Handwritten digits from scikit-learn (1797 real 8×8 scans, bundled: no download).

    The 0–16 grey levels are scaled to [0, 1], resized to image_size × image_size (bilinear,
    ``align_corners=False``), clamped to [0, 1] and normalised with :data:`DIGITS_MEAN` /
    :data:`DIGITS_STD` (measured at 28×28 and used at every size, as MNIST's are).

    Args:
        n: number of samples; None takes all from ``start`` on.
        start: index of the first sample in the dataset's order.
        image_size: side of the square output images.

    Returns:
        ImageBatch "digits": images (n, 1, image_size, image_size) float32, labels (n,) int64 in
        0–9, num_classes 10.

    Raises:
        ValueError: ``n``, ``start`` or ``image_size`` out of range; TypeError: not an int.
    """
    size = _image_size(image_size)
    pixels_8x8, labels = _digits_pixels_8x8()
    count = _sample_count(n, start, len(labels))
    chosen = pixels_8x8[start : start + count]
    pixels = F.interpolate(chosen, size=(size, size), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    return _batch_from_pixels(pixels, labels[start : start + count].clone(), DIGITS_MEAN, DIGITS_STD, "digits", 10)


@functools.lru_cache(maxsize=1)
def _natural_photos() -> tuple[torch.Tensor, ...]:
    """The :data:`NATURAL_PHOTOS` as (3, H, W) float32 tensors in [0, 1]."""
    from skimage import data as skimage_data

    arrays = [
        skimage_data.astronaut(),
        skimage_data.chelsea(),
        skimage_data.coffee(),
        skimage_data.rocket(),
        skimage_data.stereo_motorcycle()[0],
    ]
    return tuple(torch.as_tensor(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255.0 for a in arrays)


def natural(n: int | None = None, start: int = 0, image_size: int = 32, seed: int = 0) -> ImageBatch:
    """RGB patches of natural photographs bundled with scikit-image (no download).

    Patch k (k = 0 … :data:`NATURAL_LENGTH` − 1) comes from photo ``k mod 5`` of
    :data:`NATURAL_PHOTOS`: a square of side min(H, W) // 4 at a position drawn by
    ``numpy.random.default_rng((seed, k))``, resized to image_size × image_size (bilinear with
    antialiasing). So a patch depends only on (seed, k), not on ``n`` or ``start``.

    The label is the index of the source photo (0–4): a stable per-photo label, not a semantic
    class. ``num_classes`` is 10 so the batch fits the default 10-class models. Images are
    normalised with CIFAR-10's mean/std because this dataset stands in for CIFAR-10 inputs
    (the models and the paper's CIFAR settings assume that normalisation).

    Args:
        n: number of patches; None takes all from ``start`` on.
        start: index k of the first patch.
        image_size: side of the square output images.
        seed: non-negative int; selects the patch positions.

    Returns:
        ImageBatch "natural": images (n, 3, image_size, image_size) float32, labels (n,) int64
        in 0–4, num_classes 10.

    Raises:
        ValueError: ``n``, ``start``, ``image_size`` or ``seed`` out of range; TypeError: not an int.
    """
    size = _image_size(image_size)
    seed = frontdoor.integer(seed, "seed")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    count = _sample_count(n, start, NATURAL_LENGTH)
    photos = _natural_photos()
    indices = torch.arange(start, start + count)
    labels = indices % len(photos)
    pixels = torch.empty(count, 3, size, size)
    for label, photo in enumerate(photos):
        rows = (labels == label).nonzero().flatten()
        if rows.numel() == 0:
            continue
        height, width = photo.shape[1:]
        side = min(height, width) // 4
        patches = []
        for k in indices[rows].tolist():
            rng = np.random.default_rng((seed, k))
            top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
            patches.append(photo[:, top : top + side, left : left + side])
        resized = F.interpolate(torch.stack(patches), size=(size, size), mode="bilinear", antialias=True)
        pixels[rows] = resized.clamp(0.0, 1.0)
    return _batch_from_pixels(pixels, labels, CIFAR10_MEAN, CIFAR10_STD, "natural", 10)


@dataclass(frozen=True)
class _TorchvisionSpec:
    """Where torchvision keeps one dataset and how to normalise it."""

    class_name: str
    folder: str
    files: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int


_TORCHVISION = {
    "mnist": _TorchvisionSpec(
        "MNIST",
        os.path.join("MNIST", "raw"),
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        MNIST_MEAN,
        MNIST_STD,
        10,
    ),
    "cifar10": _TorchvisionSpec(
        "CIFAR10",
        "cifar-10-batches-py",
        ("batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"),
        CIFAR10_MEAN,
        CIFAR10_STD,
        10,
    ),
    "cifar100": _TorchvisionSpec(
        "CIFAR100", "cifar-100-python", ("meta", "train", "test"), CIFAR100_MEAN, CIFAR100_STD, 100
    ),
}


def _torchvision_dataset(name: str, root, n: int | None, start: int, train: bool) -> ImageBatch:
    """Load samples ``start … start+n−1`` of a torchvision dataset already under ``root``.

    Raises:
        DatasetUnavailableError: torchvision is not installed, or the files are not under
            ``root`` (or torchvision cannot read them); the message says what to do.
        ValueError: ``n`` or ``start`` out of range.
    """
    spec = _TORCHVISION[name]
    folder = Path(root) / spec.folder
    problems = []
    missing = [file for file in spec.files if not (folder / file).is_file()]
    if missing:
        problems.append(
            f"{name} is not under root={str(root)!r}: torchvision expects the files "
            f"{', '.join(spec.files)} in {folder}{os.sep} (missing: {', '.join(missing)}). "
            "This machine cannot download them; copy them there from a machine that can "
            f"(e.g. torchvision.datasets.{spec.class_name}(root, download=True))."
        )
    import_error = None
    try:
        from torchvision import datasets
    except ImportError as err:
        import_error = err
        problems.append(f"{name} is read through torchvision, which is not installed: pip install torchvision")
    if problems:
        raise DatasetUnavailableError(" ".join(problems)) from import_error
    try:
        dataset = getattr(datasets, spec.class_name)(root=str(root), train=train, download=False)
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
        raise DatasetUnavailableError(f"torchvision could not read {name} from {folder}: {err}") from err
    count = _sample_count(n, start, len(dataset.data))
    images = torch.as_tensor(dataset.data[start : start + count])
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(dataset.targets[start : start + count], dtype=torch.int64)
    pixels = images.float() / 255.0
    return _batch_from_pixels(pixels, labels, spec.mean, spec.std, name, spec.num_classes)


def mnist(root, n: int | None = None, start: int = 0, train: bool = False) -> ImageBatch:
    """MNIST from ``<root>/MNIST/raw/`` via torchvision (``download=False``).

    Args:
        root: directory torchvision's ``MNIST(root)`` reads (holding ``MNIST/raw/*-ubyte``).
        n: number of samples; None takes all from ``start`` on.
        start: index of the first sample.
        train: the 60,000 training images instead of the 10,000 test images (the paper's).

    Returns:
        ImageBatch "mnist": images (n, 1, 28, 28) float32 normalised with 0.1307 / 0.3081,
        labels (n,) int64 in 0–9, num_classes 10.

    Raises:
        DatasetUnavailableError: torchvision is not installed or the files are not under ``root``.
        ValueError: ``n`` or ``start`` out of range.
    """
    return _torchvision_dataset("mnist", root, n, start, train)


def cifar10(root, n: int | None = None, start: int = 0, train: bool = False) -> ImageBatch:
    """CIFAR-10 from ``<root>/cifar-10-batches-py/`` via torchvision (``download=False``).

    Args:
        root: directory torchvision's ``CIFAR10(root)`` reads.
        n: number of samples; None takes all from ``start`` on.
        start: index of the first sample.
        train: the 50,000 training images instead of the 10,000 test images (the paper's).

    Returns:
        ImageBatch "cifar10": images (n, 3, 32, 32) float32 normalised with :data:`CIFAR10_MEAN`
        / :data:`CIFAR10_STD`, labels (n,) int64 in 0–9, num_classes 10.

    Raises:
        DatasetUnavailableError: torchvision is not installed or the files are not under ``root``.
        ValueError: ``n`` or ``start`` out of range.
    """
    return _torchvision_dataset("cifar10", root, n, start, train)


def cifar100(root, n: int | None = None, start: int = 0, train: bool = False) -> ImageBatch:
    """CIFAR-100 from ``<root>/cifar-100-python/`` via torchvision (``download=False``).

    Args:
        root: directory torchvision's ``CIFAR100(root)`` reads.
        n: number of samples; None takes all from ``start`` on.
        start: index of the first sample.
        train: the 50,000 training images instead of the 10,000 test images.

    Returns:
        ImageBatch "cifar100": images (n, 3, 32, 32) float32 normalised with
        :data:`CIFAR100_MEAN` / :data:`CIFAR100_STD`, labels (n,) int64 in 0–99 (fine labels),
        num_classes 100.

    Raises:
        DatasetUnavailableError: torchvision is not installed or the files are not under ``root``.
        ValueError: ``n`` or ``start`` out of range.
    """
    return _torchvision_dataset("cifar100", root, n, start, train)


def load_dataset(name: str, n: int | None = None, start: int = 0, root=None, **kwargs) -> ImageBatch:
    """Load samples ``start … start+n−1`` of a dataset by name.

    Args:
        name: one of :data:`DATASETS`.
        n: number of samples; None takes all from ``start`` on.
        start: index of the first sample.
        root: directory of the torchvision files; required by mnist / cifar10 / cifar100,
            ignored by the bundled digits / natural.
        **kwargs: passed on: ``image_size`` (digits, natural), ``seed`` (natural), ``train``
            (mnist, cifar10, cifar100).

    Returns:
        The :class:`ImageBatch`, images (n, C, H, W).

    Raises:
        ValueError: unknown ``name``; bad ``n`` / ``start`` / keyword values.
        DatasetUnavailableError: a torchvision dataset without ``root``, without torchvision,
            or without its files under ``root``.
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {list(DATASETS)}, got {name!r}")
    if name == "digits":
        return digits(n, start, **kwargs)
    if name == "natural":
        return natural(n, start, **kwargs)
    if root is None:
        folder = _TORCHVISION[name].folder
        raise DatasetUnavailableError(
            f"{name} is read from disk through torchvision and needs root=<directory>, with the files in "
            f"<root>{os.sep}{folder}{os.sep}; this machine cannot download them. "
            "The bundled 'digits' and 'natural' datasets need no files."
        )
    return {"mnist": mnist, "cifar10": cifar10, "cifar100": cifar100}[name](root, n, start, **kwargs)
