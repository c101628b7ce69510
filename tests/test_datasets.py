"""Tests of the offline datasets and batching in :mod:`examples.datasets`."""

import pickle
import random

import numpy as np
import pytest
from PIL import Image

from examples import datasets
from examples.datasets import (
    Dataset,
    batches,
    load_cifar10,
    load_dataset,
    load_digits,
    load_image_folder,
    load_mnist1d,
    load_quadratic_surface,
    load_text,
    synthetic_images,
)


def _check_classification(data, name, num_classes):
    assert isinstance(data, Dataset)
    assert data.name == name
    assert data.task == "classification"
    assert data.num_classes == num_classes
    for x in (data.x_train, data.x_test):
        assert x.dtype == np.float32
    for y in (data.y_train, data.y_test):
        assert y.dtype == np.int32 and y.ndim == 1
        assert y.min() >= 0 and y.max() < num_classes
    assert data.x_train.shape[0] == data.y_train.shape[0]
    assert data.x_test.shape[0] == data.y_test.shape[0]


# --------------------------------------------------------------- built-in data


def test_load_digits():
    data = load_digits(test_fraction=0.25, seed=3)
    _check_classification(data, "digits", 10)
    assert data.x_train.shape[1:] == (64,)
    assert data.x_train.shape[0] + data.x_test.shape[0] == 1797
    assert data.x_test.shape[0] == round(1797 * 0.25)
    assert 0.0 <= data.x_train.min() and data.x_train.max() == 1.0
    assert set(np.unique(data.y_train)) == set(range(10))
    images = load_digits(test_fraction=0.25, seed=3, as_images=True)
    assert images.x_train.shape[1:] == (8, 8, 1)
    np.testing.assert_array_equal(
        images.x_train.reshape(-1, 64), data.x_train
    )  # Same split for the same seed.
    other = load_digits(test_fraction=0.25, seed=4)
    assert not np.array_equal(other.y_train, data.y_train)


def test_load_mnist1d_is_local_deterministic_and_keeps_global_rng():
    np.random.seed(123)
    random.seed(123)
    expected_np = np.random.get_state()[1].copy()
    expected_py = random.getstate()
    data = load_mnist1d(num_samples=400, seed=1, test_fraction=0.25)
    np.testing.assert_array_equal(np.random.get_state()[1], expected_np)
    assert random.getstate() == expected_py
    _check_classification(data, "mnist1d", 10)
    assert data.x_train.shape == (300, 40)
    assert data.x_test.shape == (100, 40)
    counts = np.bincount(np.concatenate([data.y_train, data.y_test]), minlength=10)
    np.testing.assert_array_equal(counts, np.full(10, 40))
    again = load_mnist1d(num_samples=400, seed=1, test_fraction=0.25)
    np.testing.assert_array_equal(again.x_train, data.x_train)
    assert np.all(np.isfinite(data.x_train))


def test_load_quadratic_surface():
    data = load_quadratic_surface(num_train=300, num_test=70, seed=5)
    assert data.task == "regression" and data.num_classes == 0
    assert data.name == "quadratic"
    assert data.x_train.shape == (300, 2) and data.y_train.shape == (300, 1)
    assert data.x_test.shape == (70, 2) and data.y_test.shape == (70, 1)
    for x, z in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert x.dtype == np.float32 and z.dtype == np.float32
        assert x.min() >= -6.0 and x.max() <= 6.0
        np.testing.assert_allclose(
            z[:, 0], x[:, 0].astype(np.float64) ** 2 + x[:, 1].astype(np.float64) ** 2,
            rtol=1e-6,
        )
    assert data.x_train.min() < -5.0 and data.x_train.max() > 5.0


def test_synthetic_images():
    data = synthetic_images(60, 20, image_shape=(16, 12, 3), num_classes=4, seed=2)
    _check_classification(data, "synthetic_images", 4)
    assert data.x_train.shape == (60, 16, 12, 3)
    assert data.x_test.shape == (20, 16, 12, 3)
    assert data.x_train.min() >= 0.0 and data.x_train.max() <= 1.0
    np.testing.assert_array_equal(np.bincount(data.y_train), np.full(4, 15))
    # Noise-free examples equal their class template.
    clean = synthetic_images(8, 4, image_shape=(8, 8, 1), num_classes=2, noise=0.0)
    for label in range(2):
        same = clean.x_train[clean.y_train == label]
        np.testing.assert_array_equal(same, np.broadcast_to(same[:1], same.shape))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: load_digits(test_fraction=1.0), "test_fraction"),
        (lambda: load_digits(as_images="yes"), "as_images"),
        (lambda: load_mnist1d(num_samples=5), "num_samples"),
        (lambda: load_mnist1d(seed=-1), "seed"),
        (lambda: load_quadratic_surface(num_train=0), "num_train"),
        (lambda: synthetic_images(10, 10, image_shape=(8, 8)), "image_shape"),
        (lambda: synthetic_images(10, 10, num_classes=1), "num_classes"),
        (lambda: synthetic_images(10, 10, noise=-1.0), "noise"),
        (lambda: load_dataset("mnist"), "name"),
    ],
)
def test_loaders_reject_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_load_dataset_dispatches():
    data = load_dataset("quadratic", num_train=10, num_test=5, seed=1)
    np.testing.assert_array_equal(
        data.x_train, load_quadratic_surface(10, 5, seed=1).x_train
    )
    assert load_dataset("synthetic_images", num_train=4, num_test=2).name == (
        "synthetic_images"
    )
    assert set(datasets.DATASET_NAMES) == {
        "digits", "mnist1d", "quadratic", "cifar10", "image_folder",
        "synthetic_images", "text",
    }


# ----------------------------------------------------------------------- text


def test_load_text_from_a_file_windows_split_and_vocabulary(tmp_path):
    # 200 training characters, then 20 validation ones with an unseen 'z'.
    text = "hello world, " * 15 + "hello" + "z" * 5 + "hello worl" + "\u00e9" * 5
    assert len(text) == 220
    file = tmp_path / "t.txt"
    file.write_text(text, encoding="utf-8")
    data = load_dataset("text", path=str(file), context=4, val_fraction=0.1)
    assert data.task == "language_model" and data.name.startswith("text-")
    train_chars = sorted(set(text[:198]))
    assert data.num_classes == 1 + len(train_chars)  # <unk> + the training characters
    assert data.x_train.shape == data.y_train.shape == (198 // 5, 4)
    assert data.x_test.shape == data.y_test.shape == (22 // 5, 4)
    for x in (data.x_train, data.y_train, data.x_test, data.y_test):
        assert x.dtype == np.int32 and x.min() >= 0 and x.max() < data.num_classes
    # Next-character alignment: window i is text[5i:5i+5], y is x shifted by one.
    vocab = [datasets.UNK] + train_chars
    decode = lambda ids: "".join(vocab[i] for i in ids)  # noqa: E731
    assert decode(data.x_train[1]) == text[5:9] and decode(data.y_train[1]) == text[6:10]
    np.testing.assert_array_equal(data.y_train[:, :-1], data.x_train[:, 1:])
    # Validation: characters never seen in training are <unk> (id 0).
    val = [vocab.index(c) if c in vocab else 0 for c in text[198:]]
    windows = np.reshape(val[:20], (4, 5))
    np.testing.assert_array_equal(data.x_test, windows[:, :4])
    np.testing.assert_array_equal(data.y_test, windows[:, 1:])
    assert (data.x_test == 0).sum() > 0
    # Another text: another hash.
    file.write_text(text[::-1], encoding="utf-8")
    assert load_text(file, context=4).name != data.name


def test_load_text_default_corpus_is_deterministic_offline_prose():
    corpus = datasets.stdlib_corpus()
    assert 0.5e6 < len(corpus.encode("utf-8")) < 1.5e6
    assert "Return" in corpus and corpus == datasets.stdlib_corpus()
    data = load_text(context=64)
    again = load_text(context=64)
    assert data.name == again.name
    np.testing.assert_array_equal(data.x_train, again.x_train)
    n = len(corpus)
    assert data.x_train.shape == (round(0.9 * n) // 65, 64)
    assert data.x_test.shape == ((n - round(0.9 * n)) // 65, 64)
    assert 60 < data.num_classes < 140
    np.testing.assert_array_equal(data.y_test[:, :-1], data.x_test[:, 1:])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"context": 0}, "context"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"context": 1000}, "too short"),
    ],
)
def test_load_text_rejects_bad_arguments(tmp_path, kwargs, match):
    file = tmp_path / "t.txt"
    file.write_text("abc" * 100, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        load_text(file, **kwargs)
    file.write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(ValueError, match="UTF-8"):
        load_text(file)
    with pytest.raises(FileNotFoundError):
        load_text(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="modules"):
        datasets.stdlib_corpus(["no_such_module_xyz"])


# ------------------------------------------------------------------- CIFAR-10


def _write_cifar_batch(path, images_nhwc, labels):
    # Official layout: each row holds the R, G and B 32x32 planes, row-major.
    data = images_nhwc.transpose(0, 3, 1, 2).reshape(len(images_nhwc), -1)
    content = {
        b"batch_label": b"fake",
        b"labels": [int(label) for label in labels],
        b"data": data,
        b"filenames": [b"x.png"] * len(labels),
    }
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=2)


@pytest.fixture
def cifar_dir(tmp_path):
    rng = np.random.default_rng(0)
    parts = {}
    for name, n in (("data_batch_1", 10), ("data_batch_2", 10), ("test_batch", 6)):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, n)
        _write_cifar_batch(tmp_path / name, images, labels)
        parts[name] = (images, labels)
    return tmp_path, parts


def test_load_cifar10_layout(cifar_dir):
    root, parts = cifar_dir
    data = load_cifar10(root)
    _check_classification(data, "cifar10", 10)
    assert data.x_train.shape == (20, 32, 32, 3)
    assert data.x_test.shape == (6, 32, 32, 3)
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    images = np.concatenate([parts["data_batch_1"][0], parts["data_batch_2"][0]])
    labels = np.concatenate([parts["data_batch_1"][1], parts["data_batch_2"][1]])
    np.testing.assert_array_equal(data.y_train, labels)
    np.testing.assert_allclose(data.x_train, images / 255.0, rtol=1e-6)
    # Pixel (i, row, col, channel) sits at flat index channel*1024 + row*32 + col.
    raw = images.transpose(0, 3, 1, 2).reshape(20, -1)
    for i, row, col, channel in ((0, 0, 0, 0), (3, 5, 7, 1), (19, 31, 2, 2)):
        flat = channel * 1024 + row * 32 + col
        assert data.x_train[i, row, col, channel] == np.float32(
            raw[i, flat] / np.float32(255.0)
        )
    np.testing.assert_array_equal(data.y_test, parts["test_batch"][1])
    # The archive's subdirectory is found, and a batch count can be requested.
    nested = root / "cifar-10-batches-py"
    nested.mkdir()
    for name in parts:
        (root / name).rename(nested / name)
    assert load_cifar10(root, num_train_batches=1).x_train.shape[0] == 10


def test_load_cifar10_errors(tmp_path, cifar_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cifar10(tmp_path / "nowhere")
    root, _ = cifar_dir
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar10(root, num_train_batches=3)
    with pytest.raises(ValueError, match="num_train_batches"):
        load_cifar10(root, num_train_batches=6)
    (root / "data_batch_1").rename(root / "renamed")
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        load_cifar10(root)
    (root / "renamed").rename(root / "data_batch_1")
    (root / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_cifar10(root)
    with open(root / "test_batch", "wb") as handle:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, handle)
    with pytest.raises(ValueError, match="3072"):
        load_cifar10(root)
    (root / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="pickle"):
        load_cifar10(root)


# --------------------------------------------------------------- image folder

_COLOURS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "emu": (0, 0, 255)}


def _write_images(folder, count, colour, size=(10, 6)):
    folder.mkdir(parents=True)
    for i in range(count):
        suffix = ".png" if i % 2 else ".JPG"
        Image.new("RGB", size, colour).save(folder / f"img{i}{suffix}")


def test_load_image_folder_single_tree(tmp_path):
    for name, colour in _COLOURS.items():
        _write_images(tmp_path / name, 4, colour)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    data = load_image_folder(tmp_path, image_size=(8, 5), test_fraction=0.25, seed=0)
    _check_classification(data, "image_folder", 3)
    assert data.x_train.shape == (9, 8, 5, 3)
    assert data.x_test.shape == (3, 8, 5, 3)
    np.testing.assert_array_equal(np.bincount(data.y_test, minlength=3), [1, 1, 1])
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        for image, label in zip(x, y):
            colour = np.asarray(list(_COLOURS.values())[label]) / 255.0
            # Uniform images stay uniform (JPEG adds small errors).
            np.testing.assert_allclose(image.mean(axis=(0, 1)), colour, atol=0.03)
    square = load_image_folder(tmp_path, image_size=4, test_fraction=0.25)
    assert square.x_train.shape[1:] == (4, 4, 3)
    capped = load_image_folder(tmp_path, (4, 4), test_fraction=0.5, max_per_class=2)
    assert capped.x_train.shape[0] == 3 and capped.x_test.shape[0] == 3


def test_load_image_folder_train_val(tmp_path):
    for name, colour in _COLOURS.items():
        _write_images(tmp_path / "train" / name, 3, colour)
    _write_images(tmp_path / "val" / "dog", 2, _COLOURS["dog"], size=(5, 5))
    data = load_image_folder(tmp_path, image_size=(6, 6))
    _check_classification(data, "image_folder", 3)
    assert data.x_train.shape == (9, 6, 6, 3)
    assert data.x_test.shape == (2, 6, 6, 3)
    np.testing.assert_array_equal(data.y_test, [1, 1])  # Sorted: cat, dog, emu.
    _write_images(tmp_path / "val" / "yak", 1, (9, 9, 9))
    with pytest.raises(ValueError, match="yak"):
        load_image_folder(tmp_path)


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no class folder"):
        load_image_folder(tmp_path)
    _write_images(tmp_path / "only", 1, (1, 2, 3))
    with pytest.raises(ValueError, match="test split"):
        load_image_folder(tmp_path)
    with pytest.raises(ValueError, match="image_size"):
        load_image_folder(tmp_path, image_size=(4, 0))
    with pytest.raises(ValueError, match="max_per_class"):
        load_image_folder(tmp_path, max_per_class=0)
    (tmp_path / "only" / "broken.png").write_bytes(b"not a png")
    _write_images(tmp_path / "other", 2, (3, 2, 1))
    with pytest.raises(ValueError, match="broken.png"):
        load_image_folder(tmp_path, test_fraction=0.5)


# -------------------------------------------------------------------- batches


def _data(n=23, num_classes=3):
    x = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    y = (np.arange(n) % num_classes).astype(np.int32)
    return x, y


@pytest.mark.parametrize("non_iid", [False, True])
def test_batches_cover_every_example_once_without_drop_last(non_iid):
    x, y = _data()
    rng = np.random.default_rng(0)
    seen = []
    for xb, yb in batches(x, y, 4, rng=rng, drop_last=False, non_iid=non_iid):
        assert 1 <= len(xb) <= 4 and len(xb) == len(yb)
        np.testing.assert_array_equal(xb[:, 0].astype(np.int32) % 3, yb)
        seen.extend(xb[:, 0].astype(int).tolist())
    assert sorted(seen) == list(range(23))


def test_batches_iid_shuffle_and_drop_last():
    x, y = _data()
    out = list(batches(x, y, 5, rng=np.random.default_rng(1)))
    assert [len(xb) for xb, _ in out] == [5, 5, 5, 5]
    order = np.concatenate([xb[:, 0] for xb, _ in out])
    assert len(set(order.tolist())) == 20
    assert not np.array_equal(order, np.arange(20))
    ordered = list(batches(x, y, 5, rng=None, shuffle=False, drop_last=False))
    np.testing.assert_array_equal(
        np.concatenate([xb[:, 0] for xb, _ in ordered]), np.arange(23)
    )
    # Same generator seed, same epoch.
    again = list(batches(x, y, 5, rng=np.random.default_rng(1)))
    for (a, _), (b, _) in zip(out, again):
        np.testing.assert_array_equal(a, b)


def test_batches_non_iid_are_single_class():
    x, y = _data(n=60, num_classes=3)
    out = list(batches(x, y, 6, rng=np.random.default_rng(0), non_iid=True))
    assert len(out) == 3 * (20 // 6)
    assert all(len(xb) == 6 for xb, _ in out)
    assert all(len(np.unique(yb)) == 1 for _, yb in out)
    labels = [int(yb[0]) for _, yb in out]
    assert sorted(labels) == sorted([0, 1, 2] * 3)
    assert labels != sorted(labels)  # The batch order is shuffled across classes.
    ordered = list(batches(x, y, 6, rng=None, shuffle=False, non_iid=True))
    assert [int(yb[0]) for _, yb in ordered] == [0, 0, 0, 1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.0}, "batch_size"),
        ({"rng": None}, "rng"),
        ({"rng": 3}, "rng"),
        ({"shuffle": "yes"}, "shuffle"),
        ({"drop_last": None}, "drop_last"),
        ({"non_iid": 1}, "non_iid"),
        ({"y": np.zeros(5, np.int32)}, "same length"),
        ({"y": np.zeros((23, 1), np.float32), "non_iid": True}, "non_iid"),
    ],
)
def test_batches_validate_arguments_eagerly(kwargs, match):
    x, y = _data()
    arguments = {"y": y, "batch_size": 4, "rng": np.random.default_rng(0)}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        batches(x, **arguments)  # No iteration needed.
