"""Offline datasets and mini-batching for the koopax examples.

Nothing here downloads anything. Every loader returns a :class:`Dataset` of numpy
arrays: inputs ``float32`` (images NHWC in ``[0, 1]``), classification labels
``int32`` of shape ``(N,)`` and regression targets ``float32`` of shape
``(N, 1)``.

* :func:`load_digits` -- scikit-learn's bundled 8x8 digits (1,797 images).
* :func:`load_mnist1d` -- MNIST-1D, generated locally with the ``mnist1d`` package.
* :func:`load_quadratic_surface` -- the seed paper's regression ``z = x**2 + y**2``.
* :func:`load_cifar10` -- CIFAR-10 from a local copy of the official python pickles.
* :func:`load_image_folder` -- ImageNet-style class-per-folder image trees.
* :func:`synthetic_images` -- a learnable CIFAR-shaped synthetic set.
* :func:`load_text` -- a character-level language-modelling corpus: a UTF-8 file,
  or (offline default) the docstrings of a fixed list of standard-library modules
  (:func:`stdlib_corpus`).
* :func:`batches` -- shuffled mini-batches, optionally non-i.i.d. (one class per
  batch, PDT appendix A.6).
* :func:`load_dataset` -- dispatch by name.

References:
  A. S. Dogra and W. T. Redman. Optimizing Neural Networks via Koopman Operator
  Theory. NeurIPS 2020. https://arxiv.org/abs/2006.02361

  S. Greydanus and D. Kobak. Scaling Down Deep Learning with MNIST-1D. ICML 2024.
  https://arxiv.org/abs/2011.14439

  A. Krizhevsky. Learning Multiple Layers of Features from Tiny Images. 2009.
  https://www.cs.toronto.edu/~kriz/cifar.html

  Predictive Differential Training Guided by Training Dynamics (PDT). ICLR 2025
  submission; code: https://github.com/aicip/PDT
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import pickle
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "CIFAR10_CLASSES",
    "DATASET_NAMES",
    "IMAGE_EXTENSIONS",
    "Dataset",
    "batches",
    "STDLIB_CORPUS_MODULES",
    "UNK",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "load_mnist1d",
    "load_quadratic_surface",
    "load_text",
    "stdlib_corpus",
    "synthetic_images",
]

#: Names accepted by :func:`load_dataset`.
DATASET_NAMES = (
    "digits",
    "mnist1d",
    "quadratic",
    "cifar10",
    "image_folder",
    "synthetic_images",
    "text",
)

#: CIFAR-10 class names, in label order.
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

#: File extensions (lower case) read by :func:`load_image_folder`.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm")

_CIFAR_SIDE = 32
_CIFAR_ROW = 3 * _CIFAR_SIDE * _CIFAR_SIDE


class Dataset(NamedTuple):
    """A train/test split held in memory.

    Attributes:
      x_train: Training inputs, ``float32`` (``int32`` token ids ``(N, T)`` for a
        language model).
      y_train: Training labels (``int32``, shape ``(N,)``), regression targets
        (``float32``, shape ``(N, 1)``) or next tokens (``int32``, ``(N, T)``).
      x_test: Test inputs, like ``x_train``.
      y_test: Test labels or targets, like ``y_train``.
      task: ``'classification'``, ``'regression'`` or ``'language_model'``.
      num_classes: Number of classes (the vocabulary size of a language model);
        0 for regression.
      name: Short name of the dataset (with a hash of the corpus for text).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str
    num_classes: int
    name: str


# ---------------------------------------------------------------------------
# Argument validation.


def _check_int(value: Any, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{name}` must be an int, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value!r}.")
    return int(value)


def _check_seed(seed: Any) -> int:
    return _check_int(seed, "seed", minimum=0)


def _check_fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise ValueError(f"`{name}` must be a float, got {value!r}.")
    if not 0.0 < value < 1.0:
        raise ValueError(f"`{name}` must be in (0, 1), got {value!r}.")
    return float(value)


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be a bool, got {value!r}.")
    return bool(value)


def _split(
    x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random train/test split with ``round(N * test_fraction)`` test examples."""
    n = x.shape[0]
    num_test = int(round(n * test_fraction))
    if num_test < 1 or num_test > n - 1:
        raise ValueError(
            f"`test_fraction`={test_fraction} leaves an empty split of {n} examples."
        )
    order = np.random.default_rng(seed).permutation(n)
    test, train = order[:num_test], order[num_test:]
    return x[train], y[train], x[test], y[test]


# ---------------------------------------------------------------------------
# Small built-in datasets.


def load_digits(
    test_fraction: float = 0.2, seed: int = 0, *, as_images: bool = False
) -> Dataset:
    """scikit-learn's bundled handwritten digits (8x8 grey images, 10 classes).

    The 1,797 images ship with scikit-learn, so nothing is downloaded. Pixel
    values (0..16) are scaled to ``[0, 1]``.

    Args:
      test_fraction: Fraction of the examples held out for testing, in (0, 1).
      seed: Seed of the random split.
      as_images: Return inputs of shape ``(N, 8, 8, 1)`` instead of ``(N, 64)``.

    Returns:
      A classification :class:`Dataset` named ``'digits'``.

    Raises:
      ValueError: For an invalid argument.
    """
    test_fraction = _check_fraction(test_fraction, "test_fraction")
    seed = _check_seed(seed)
    as_images = _check_bool(as_images, "as_images")
    from sklearn import datasets as sk_datasets  # Local: slow import.

    digits = sk_datasets.load_digits()
    x = (np.asarray(digits.data, np.float32) / 16.0).astype(np.float32)
    if as_images:
        x = x.reshape(-1, 8, 8, 1)
    y = np.asarray(digits.target, np.int32)
    return Dataset(*_split(x, y, test_fraction, seed), "classification", 10, "digits")


def load_mnist1d(
    num_samples: int = 4000, seed: int = 0, test_fraction: float = 0.2
) -> Dataset:
    """MNIST-1D, generated locally (no download) with the ``mnist1d`` package.

    Uses ``mnist1d.data.get_dataset_args()`` with ``num_samples``, ``seed`` and
    the train split adjusted, then ``mnist1d.data.make_dataset``. The generator
    draws ``num_samples // 10`` examples per class and standardises the whole set
    (as upstream does). It seeds numpy's and Python's global random generators;
    their states are saved and restored around the call.

    Args:
      num_samples: Total number of examples (rounded down to a multiple of 10).
      seed: Seed of the generator.
      test_fraction: Fraction of the examples held out for testing, in (0, 1).

    Returns:
      A classification :class:`Dataset` named ``'mnist1d'`` with inputs of shape
      ``(N, 40)``.

    Raises:
      ValueError: For an invalid argument.
    """
    num_samples = _check_int(num_samples, "num_samples", minimum=20)
    seed = _check_seed(seed)
    test_fraction = _check_fraction(test_fraction, "test_fraction")
    from mnist1d import data as mnist1d_data  # Local: optional dependency.

    args = mnist1d_data.get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    args.train_split = 1.0 - test_fraction
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    try:
        raw = mnist1d_data.make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    x_train = np.asarray(raw["x"], np.float32)
    x_test = np.asarray(raw["x_test"], np.float32)
    if x_train.shape[0] == 0 or x_test.shape[0] == 0:
        raise ValueError(
            f"`test_fraction`={test_fraction} leaves an empty split of "
            f"{num_samples} examples."
        )
    return Dataset(
        x_train,
        np.asarray(raw["y"], np.int32),
        x_test,
        np.asarray(raw["y_test"], np.int32),
        "classification",
        10,
        "mnist1d",
    )


def load_quadratic_surface(
    num_train: int = 2000, num_test: int = 500, seed: int = 0
) -> Dataset:
    """The seed paper's regression task ``z = x**2 + y**2`` on ``[-6, 6]**2``.

    Inputs ``(x, y)`` are drawn uniformly from the square; targets are computed
    exactly (in float32) from the float32 inputs.

    Args:
      num_train: Number of training examples.
      num_test: Number of test examples.
      seed: Seed of the sampler.

    Returns:
      A regression :class:`Dataset` named ``'quadratic'`` with inputs ``(N, 2)``
      and targets ``(N, 1)``.

    Raises:
      ValueError: For an invalid argument.
    """
    num_train = _check_int(num_train, "num_train")
    num_test = _check_int(num_test, "num_test")
    seed = _check_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-6.0, 6.0, size=(num_train + num_test, 2)).astype(np.float32)
    z = (x[:, :1] * x[:, :1] + x[:, 1:] * x[:, 1:]).astype(np.float32)
    return Dataset(
        x[:num_train], z[:num_train], x[num_train:], z[num_train:],
        "regression", 0, "quadratic",
    )


# ---------------------------------------------------------------------------
# Datasets read from disk.


def _read_cifar_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads one official CIFAR-10 python batch; returns NHWC float32 and labels."""
    try:
        with open(file, "rb") as handle:
            # The official files were pickled by Python 2: keys are bytes.
            content = pickle.load(handle, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise ValueError(f"{file} is not a CIFAR-10 python pickle: {error}") from error
    if not isinstance(content, dict):
        raise ValueError(f"{file} does not hold a dict, got {type(content).__name__}.")

    def field(key: str) -> Any:
        for candidate in (key.encode(), key):
            if candidate in content:
                return content[candidate]
        raise ValueError(f"{file} has no {key!r} entry (keys: {list(content)}).")

    data = np.asarray(field("data"))
    labels = np.asarray(field("labels"))
    if data.ndim != 2 or data.shape[1] != _CIFAR_ROW or data.dtype != np.uint8:
        raise ValueError(
            f"{file}: 'data' must be uint8 of shape (N, {_CIFAR_ROW}), got "
            f"{data.dtype} {data.shape}."
        )
    if labels.shape != (data.shape[0],):
        raise ValueError(
            f"{file}: 'labels' must have shape ({data.shape[0]},), got "
            f"{labels.shape}."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        raise ValueError(f"{file}: labels must be in 0..9.")
    # Each row is the red, green and blue planes, each 32x32 in row-major order.
    images = data.reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE).transpose(0, 2, 3, 1)
    images = images.astype(np.float32) / np.float32(255.0)
    return images, labels.astype(np.int32)


def load_cifar10(
    path: str | os.PathLike[str], *, num_train_batches: int | None = None
) -> Dataset:
    """CIFAR-10 from a local directory in the official python pickle format.

    The directory (or its ``cifar-10-batches-py`` subdirectory, as unpacked from
    the official archive) must contain ``data_batch_1`` ... ``data_batch_5`` and
    ``test_batch``; each file is a pickled dict with ``b'data'`` (uint8,
    ``(N, 3072)``: the red, green and blue 32x32 planes, row-major) and
    ``b'labels'``. Nothing is downloaded. Only read files you trust: unpickling
    can execute code.

    Args:
      path: Directory holding the batches.
      num_train_batches: Number of training batches to read
        (``data_batch_1..k``). ``None`` reads every consecutive batch present
        from ``data_batch_1`` on (all five for a complete copy).

    Returns:
      A classification :class:`Dataset` named ``'cifar10'`` with NHWC
      ``float32`` images in ``[0, 1]`` (50,000 + 10,000 for the full set).

    Raises:
      FileNotFoundError: If the directory, ``test_batch`` or a requested training
        batch is missing.
      ValueError: If ``num_train_batches`` is invalid or a file is malformed.
    """
    if num_train_batches is not None:
        num_train_batches = _check_int(num_train_batches, "num_train_batches")
        if num_train_batches > 5:
            raise ValueError(
                f"`num_train_batches` must be at most 5, got {num_train_batches}."
            )
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR-10 directory {str(root)!r} does not exist.")
    nested = root / "cifar-10-batches-py"
    if not (root / "test_batch").exists() and nested.is_dir():
        root = nested
    test_file = root / "test_batch"
    if not test_file.is_file():
        raise FileNotFoundError(
            f"{str(test_file)!r} is missing; expected the official CIFAR-10 python "
            "files data_batch_1..data_batch_5 and test_batch (this loader never "
            "downloads)."
        )
    if num_train_batches is None:
        files = []
        for index in range(1, 6):
            file = root / f"data_batch_{index}"
            if not file.is_file():
                break
            files.append(file)
        if not files:
            raise FileNotFoundError(
                f"no training batch in {str(root)!r}: expected data_batch_1 "
                "(.. data_batch_5)."
            )
    else:
        files = [root / f"data_batch_{i}" for i in range(1, num_train_batches + 1)]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"missing CIFAR-10 training batches: {missing}.")
    parts = [_read_cifar_batch(file) for file in files]
    x_test, y_test = _read_cifar_batch(test_file)
    return Dataset(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        x_test,
        y_test,
        "classification",
        len(CIFAR10_CLASSES),
        "cifar10",
    )


def _class_dirs(root: Path) -> list[Path]:
    return sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
    )


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _read_images(files: Sequence[Path], image_size: tuple[int, int]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError  # Local: optional dependency.

    height, width = image_size
    out = np.empty((len(files), height, width, 3), np.float32)
    for i, file in enumerate(files):
        try:
            with Image.open(file) as image:
                image = image.convert("RGB")
                if image.size != (width, height):
                    image = image.resize((width, height), Image.BILINEAR)
                out[i] = np.asarray(image, np.float32) / np.float32(255.0)
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"cannot read image {str(file)!r}: {error}") from error
    return out


def _collect(
    root: Path,
    class_names: Sequence[str],
    max_per_class: int | None,
    rng: np.random.Generator,
) -> list[tuple[list[Path], int]]:
    groups = []
    for label, name in enumerate(class_names):
        folder = root / name
        files = _image_files(folder) if folder.is_dir() else []
        if max_per_class is not None and len(files) > max_per_class:
            keep = np.sort(rng.choice(len(files), max_per_class, replace=False))
            files = [files[i] for i in keep]
        groups.append((files, label))
    return groups


def _flatten(
    groups: Sequence[tuple[list[Path], int]],
) -> tuple[list[Path], np.ndarray]:
    files = [f for group, _ in groups for f in group]
    labels = np.asarray(
        [label for group, label in groups for _ in group], np.int32
    ).reshape(-1)
    return files, labels


def load_image_folder(
    path: str | os.PathLike[str],
    image_size: int | Sequence[int] = (64, 64),
    test_fraction: float = 0.2,
    seed: int = 0,
    *,
    max_per_class: int | None = None,
) -> Dataset:
    """An ImageNet-style folder of images, one subdirectory per class.

    Two layouts are accepted:

    * ``path/<class>/<image>``: the images of each class are split at random into
      train and test (``round(n_c * test_fraction)`` test images per class, at
      least one image of each class kept for training);
    * ``path/train/<class>/<image>`` with ``path/val/<class>/<image>`` (or
      ``path/test/...``): the given split is used and ``test_fraction`` is
      ignored. Classes are those of ``train/``; a class folder in ``val/`` that
      is absent from ``train/`` is an error.

    Class labels follow the sorted folder names. Images (PNG, JPEG, BMP, GIF,
    WebP, PPM) are read with Pillow, converted to RGB and resized bilinearly to
    ``image_size``. Everything is held in memory (ImageNet at 64x64 needs about
    63 GB in float32; use ``max_per_class`` to subsample).

    Args:
      path: Root directory.
      image_size: Output ``(height, width)``, or an int for square images.
      test_fraction: Fraction of each class held out (single-folder layout).
      seed: Seed of the split and of the ``max_per_class`` subsampling.
      max_per_class: Keep at most this many images per class and split.

    Returns:
      A classification :class:`Dataset` named ``'image_folder'`` with NHWC
      ``float32`` RGB images in ``[0, 1]``.

    Raises:
      FileNotFoundError: If ``path`` does not exist or holds no class folder with
        images.
      ValueError: For an invalid argument, an unreadable image, or a split that
        would be empty.
    """
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if (
        isinstance(image_size, (str, bytes))
        or not isinstance(image_size, Sequence)
        or len(image_size) != 2
        or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in image_size
        )
    ):
        raise ValueError(
            f"`image_size` must be a positive int or a (height, width) pair of "
            f"positive ints, got {image_size!r}."
        )
    size = (int(image_size[0]), int(image_size[1]))
    test_fraction = _check_fraction(test_fraction, "test_fraction")
    seed = _check_seed(seed)
    if max_per_class is not None:
        max_per_class = _check_int(max_per_class, "max_per_class")
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist.")
    rng = np.random.default_rng(seed)

    test_root = next(
        (root / n for n in ("val", "test") if (root / n).is_dir()), None
    )
    if (root / "train").is_dir() and test_root is not None:
        train_root = root / "train"
        class_names = [p.name for p in _class_dirs(train_root)]
        unknown = sorted(
            {p.name for p in _class_dirs(test_root)} - set(class_names)
        )
        if unknown:
            raise ValueError(
                f"classes {unknown} of {str(test_root)!r} are not in "
                f"{str(train_root)!r}."
            )
        train_files, y_train = _flatten(
            _collect(train_root, class_names, max_per_class, rng)
        )
        test_files, y_test = _flatten(
            _collect(test_root, class_names, max_per_class, rng)
        )
    else:
        train_root = root
        class_names = [p.name for p in _class_dirs(root)]
        train_groups, test_groups = [], []
        for files, label in _collect(root, class_names, max_per_class, rng):
            order = rng.permutation(len(files))
            num_test = min(int(round(len(files) * test_fraction)), len(files) - 1)
            num_test = max(num_test, 0)
            test_groups.append(([files[i] for i in order[:num_test]], label))
            train_groups.append(([files[i] for i in order[num_test:]], label))
        train_files, y_train = _flatten(train_groups)
        test_files, y_test = _flatten(test_groups)
    if not class_names or not train_files:
        raise FileNotFoundError(
            f"no class folder with images ({', '.join(IMAGE_EXTENSIONS)}) in "
            f"{str(train_root)!r}."
        )
    if not test_files:
        raise ValueError(
            f"the test split of {str(root)!r} is empty; add images or raise "
            "`test_fraction`."
        )
    train_order = rng.permutation(len(train_files))
    test_order = rng.permutation(len(test_files))
    return Dataset(
        _read_images([train_files[i] for i in train_order], size),
        y_train[train_order],
        _read_images([test_files[i] for i in test_order], size),
        y_test[test_order],
        "classification",
        len(class_names),
        "image_folder",
    )


# ---------------------------------------------------------------------------
# Synthetic data.


def synthetic_images(
    num_train: int = 2000,
    num_test: int = 500,
    image_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    seed: int = 0,
    *,
    noise: float = 0.25,
) -> Dataset:
    """A learnable CIFAR-shaped synthetic classification set.

    Each class gets a smooth random template (a random ``4x4xC`` pattern in
    ``[0, 1]`` upsampled bilinearly to the image size); an example is its
    class template plus i.i.d. Gaussian pixel noise of standard deviation
    ``noise``, clipped to ``[0, 1]``. Classes are balanced (up to one example).

    Args:
      num_train: Number of training examples.
      num_test: Number of test examples.
      image_shape: ``(height, width, channels)``.
      num_classes: Number of classes (at least 2).
      seed: Seed of the generator (templates and examples).
      noise: Standard deviation of the pixel noise (non-negative).

    Returns:
      A classification :class:`Dataset` named ``'synthetic_images'``.

    Raises:
      ValueError: For an invalid argument.
    """
    num_train = _check_int(num_train, "num_train")
    num_test = _check_int(num_test, "num_test")
    if (
        isinstance(image_shape, (str, bytes))
        or not isinstance(image_shape, Sequence)
        or len(image_shape) != 3
        or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 1
            for s in image_shape
        )
    ):
        raise ValueError(
            "`image_shape` must be (height, width, channels) of positive ints, "
            f"got {image_shape!r}."
        )
    num_classes = _check_int(num_classes, "num_classes", minimum=2)
    seed = _check_seed(seed)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise ValueError(f"`noise` must be a non-negative float, got {noise!r}.")
    height, width, channels = (int(s) for s in image_shape)
    rng = np.random.default_rng(seed)

    coarse = rng.uniform(0.0, 1.0, size=(num_classes, 4, 4, channels))

    def interp_matrix(size: int) -> np.ndarray:
        # Bilinear weights from 4 coarse cells to `size` pixels (cell centres).
        pos = np.clip((np.arange(size) + 0.5) * 4.0 / size - 0.5, 0.0, 3.0)
        low = np.minimum(np.floor(pos).astype(int), 2)
        frac = pos - low
        matrix = np.zeros((size, 4))
        matrix[np.arange(size), low] = 1.0 - frac
        matrix[np.arange(size), low + 1] = frac
        return matrix

    templates = np.einsum(
        "hi,kijc,wj->khwc", interp_matrix(height), coarse, interp_matrix(width)
    )

    def sample(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.arange(count) % num_classes).astype(np.int32)
        images = templates[labels] + noise * rng.standard_normal(
            (count, height, width, channels)
        )
        return np.clip(images, 0.0, 1.0).astype(np.float32), labels

    x_train, y_train = sample(num_train)
    x_test, y_test = sample(num_test)
    return Dataset(
        x_train, y_train, x_test, y_test, "classification", num_classes,
        "synthetic_images",
    )


# ---------------------------------------------------------------------------
# Text: a character-level language-modelling corpus.

#: The standard-library modules whose docstrings make :func:`stdlib_corpus`, in
#: order (pure-Python modules shipped with every CPython build; no GUI toolkit).
STDLIB_CORPUS_MODULES = tuple(sorted("""
    argparse ast asyncio.base_events asyncio.events asyncio.streams asyncio.tasks base64
    bisect calendar cmd codecs collections configparser contextlib copy csv dataclasses
    datetime decimal difflib doctest email.headerregistry email.message email.policy
    email.utils enum fractions ftplib functools getopt gettext glob gzip heapq hmac
    html.parser http.client http.cookiejar http.server imaplib inspect ipaddress
    itertools json logging mailbox multiprocessing.managers multiprocessing.pool numbers
    operator optparse os pathlib pdb pickle pickletools platform poplib pprint pydoc
    queue random re sched selectors shlex shutil smtplib socket statistics string
    subprocess tarfile tempfile textwrap threading timeit tokenize trace traceback
    typing unittest.case unittest.mock urllib.parse urllib.request uuid warnings wave
    weakref xml.dom.minidom xml.etree.ElementTree zipfile zipimport zoneinfo
""".split()))
#: The vocabulary entry (id 0) of a character absent from the training text.
UNK = "<unk>"


def _own_doc(obj: Any) -> str | None:
    """``obj``'s own docstring (a class's inherited one is not its own)."""
    doc = vars(obj).get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) and doc.strip() else None


def stdlib_corpus(modules: Sequence[str] = STDLIB_CORPUS_MODULES) -> str:
    """English technical prose from the standard library's docstrings (offline).

    For each module of ``modules``, in the order given: the module's docstring,
    then, in sorted name order, the docstrings of its public classes and
    functions defined in that module, a class followed by its public methods'
    (sorted). Docstrings are dedented (``inspect.cleandoc``) and joined by a
    blank line. About 0.63 MB (101 distinct characters) from the default list on
    CPython 3.11; the text depends on the Python version, so
    :func:`load_text` records its hash in the dataset's name.

    Args:
      modules: importable module names.

    Returns:
      The corpus text.

    Raises:
      ValueError: if ``modules`` is not a sequence of names or one is not importable.
    """
    if isinstance(modules, (str, bytes)) or not isinstance(modules, Sequence) \
            or not all(isinstance(m, str) for m in modules):
        raise ValueError(f"`modules` must be a sequence of module names, got {modules!r}.")
    parts = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            raise ValueError(f"`modules`: cannot import {name!r}: {error}") from error
        parts.append(_own_doc(module))
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            parts.append(_own_doc(obj))
            if inspect.isclass(obj):
                parts += [_own_doc(f) for a, f in sorted(vars(obj).items())
                          if not a.startswith("_") and inspect.isfunction(f)]
    return "\n\n".join(p for p in parts if p)


def _windows(ids: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping ``context + 1`` windows of ``ids``: inputs and next tokens."""
    n = len(ids) // (context + 1)
    w = ids[: n * (context + 1)].reshape(n, context + 1)
    return np.ascontiguousarray(w[:, :-1]), np.ascontiguousarray(w[:, 1:])


def load_text(
    path: str | os.PathLike[str] | None = None,
    *,
    context: int = 64,
    val_fraction: float = 0.1,
) -> Dataset:
    """A character-level language-modelling corpus (next-character prediction).

    The text is a UTF-8 file (``path``) or, by default, :func:`stdlib_corpus`
    (built in the process from the installed Python's docstrings; nothing is
    downloaded or cached). The first ``1 - val_fraction`` of the characters are
    the training text, the rest the validation text (``x_test``/``y_test``).
    Each part is cut into non-overlapping windows of ``context + 1`` characters
    (a partial last window is dropped): ``x`` is a window's first ``context``
    characters, ``y`` its last ``context`` (``y[:, t] == x[:, t + 1]``).

    Vocabulary: id 0 is :data:`UNK`, then the sorted distinct characters of the
    *training* text. A validation character that never occurs in training maps to
    ``UNK`` (the model cannot have learnt it; rare characters of the training text
    keep their own ids). Validation windows are thus scored on the same
    vocabulary the model was trained on.

    Args:
      path: a UTF-8 text file, or ``None`` for the standard-library corpus.
      context: characters per example (the model's sequence length).
      val_fraction: fraction of the characters held out, in (0, 1).

    Returns:
      A ``'language_model'`` :class:`Dataset`: ``int32`` ids of shape
      ``(n, context)``; ``num_classes`` is the vocabulary size; ``name`` is
      ``'text-<12 hex digits of the SHA-256 of the text>'`` (which corpus ran).

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: for an invalid argument, a file that is not UTF-8, or a text
        too short for one training and one validation window.

    Examples:
      >>> import tempfile, os
      >>> with tempfile.TemporaryDirectory() as d:
      ...     file = os.path.join(d, "t.txt")
      ...     with open(file, "w", encoding="utf-8") as f:
      ...         _ = f.write("abcd" * 50)
      ...     data = load_text(file, context=3)
      >>> data.task, data.num_classes, data.x_train.shape
      ('language_model', 5, (45, 3))
      >>> bool((data.y_train[:, :-1] == data.x_train[:, 1:]).all())
      True
    """
    context = _check_int(context, "context")
    val_fraction = _check_fraction(val_fraction, "val_fraction")
    if path is None:
        text = stdlib_corpus()
    else:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"text file {str(file)!r} does not exist.")
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"`path` {str(file)!r} is not UTF-8 text: {error}") from error
    split = int(round(len(text) * (1.0 - val_fraction)))
    train_text, val_text = text[:split], text[split:]
    if min(len(train_text), len(val_text)) < context + 1:
        raise ValueError(
            f"the text ({len(text)} characters) is too short for `context`={context} "
            f"and `val_fraction`={val_fraction}: each part needs {context + 1}."
        )
    vocab = (UNK, *sorted(set(train_text)))
    index = {c: i for i, c in enumerate(vocab)}
    table = np.vectorize(lambda c: index.get(c, 0), otypes=[np.int32])

    def encode(part: str) -> np.ndarray:
        return table(np.array(list(part))) if part else np.zeros(0, np.int32)

    x_train, y_train = _windows(encode(train_text), context)
    x_test, y_test = _windows(encode(val_text), context)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return Dataset(x_train, y_train, x_test, y_test, "language_model", len(vocab),
                   f"text-{digest}")


# ---------------------------------------------------------------------------
# Mini-batching.


def batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    rng: np.random.Generator | None,
    shuffle: bool = True,
    drop_last: bool = True,
    non_iid: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterates once over ``(x, y)`` in mini-batches (one epoch).

    Arguments are validated when the function is called, before the first
    batch is requested.

    I.i.d. mode (default): the examples are visited in a random order (or in
    order if ``shuffle=False``) and cut into consecutive batches.

    Non-i.i.d. mode (``non_iid=True``, the single-class setting of PDT appendix
    A.6): the examples are grouped by label, each class (shuffled within itself
    when ``shuffle``) is cut into batches of ``batch_size``, and the order of all
    these single-class batches is shuffled (classes in label order otherwise).
    Every batch then holds one class only. ``y`` must be integer labels of shape
    ``(N,)``.

    Args:
      x: Inputs, leading axis ``N``.
      y: Labels or targets, leading axis ``N``.
      batch_size: Examples per batch.
      rng: Generator used for shuffling; may be ``None`` only if
        ``shuffle=False``.
      shuffle: Whether to shuffle (see above).
      drop_last: Drop the last, smaller batch (per class in non-i.i.d. mode);
        when false every example is visited exactly once.
      non_iid: Single-class batches.

    Returns:
      A generator of ``(x_batch, y_batch)`` pairs.

    Raises:
      ValueError: If ``x`` and ``y`` disagree in length, ``batch_size`` is not a
        positive int, ``rng`` is not a ``np.random.Generator`` while
        ``shuffle`` is true, a flag is not a bool, or ``non_iid`` is requested
        with non-integer or non-1D labels.
    """
    if not (hasattr(x, "shape") and hasattr(y, "shape") and x.shape and y.shape):
        raise ValueError("`x` and `y` must be arrays with a leading batch axis.")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"`x` and `y` must have the same length, got {x.shape[0]} and "
            f"{y.shape[0]}."
        )
    batch_size = _check_int(batch_size, "batch_size")
    shuffle = _check_bool(shuffle, "shuffle")
    drop_last = _check_bool(drop_last, "drop_last")
    non_iid = _check_bool(non_iid, "non_iid")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise ValueError(f"`rng` must be a numpy.random.Generator, got {rng!r}.")
    if shuffle and rng is None:
        raise ValueError("`rng` must be a numpy.random.Generator when shuffle=True.")
    n = x.shape[0]

    if non_iid:
        labels = np.asarray(y)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                "`non_iid=True` needs integer class labels `y` of shape (N,), got "
                f"{labels.dtype} {labels.shape}."
            )
        chunks = []
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            if shuffle:
                members = rng.permutation(members)
            stop = len(members)
            if drop_last:
                stop -= stop % batch_size
            chunks.extend(
                members[start : start + batch_size]
                for start in range(0, stop, batch_size)
            )
        if shuffle:
            chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    else:
        order = rng.permutation(n) if shuffle else np.arange(n)
        stop = n - n % batch_size if drop_last else n
        chunks = [
            order[start : start + batch_size] for start in range(0, stop, batch_size)
        ]

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for index in chunks:
            yield x[index], y[index]

    return generate()


# ---------------------------------------------------------------------------
# Dispatch.


def load_dataset(name: str, **kwargs: Any) -> Dataset:
    """Loads a dataset by name.

    Args:
      name: One of :data:`DATASET_NAMES`: ``'digits'`` (:func:`load_digits`),
        ``'mnist1d'`` (:func:`load_mnist1d`), ``'quadratic'``
        (:func:`load_quadratic_surface`), ``'cifar10'`` (:func:`load_cifar10`),
        ``'image_folder'`` (:func:`load_image_folder`), ``'synthetic_images'``
        (:func:`synthetic_images`) or ``'text'`` (:func:`load_text`).
      **kwargs: Arguments of that loader (``path`` for the on-disk ones).

    Returns:
      The :class:`Dataset`.

    Raises:
      ValueError: For an unknown ``name`` (and whatever the loader raises).
    """
    loaders = {
        "digits": load_digits,
        "mnist1d": load_mnist1d,
        "quadratic": load_quadratic_surface,
        "cifar10": load_cifar10,
        "image_folder": load_image_folder,
        "synthetic_images": synthetic_images,
        "text": load_text,
    }
    if name not in loaders:
        raise ValueError(f"`name` must be one of {DATASET_NAMES}, got {name!r}.")
    return loaders[name](**kwargs)
