"""Tests for pemn_fl.data: file parsing, normalisation, caching and the wording of errors.

The IDX and CIFAR files are written here by hand, byte for byte, so the parsers are checked
against the file formats themselves rather than against another library's reader.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pemn_fl.data import DATASETS, DEFAULT_DATA_DIRS, DataError, Dataset, clear_cache, load_dataset

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Each test sees an empty cache, so files rewritten in tmp_path are really re-read."""
    clear_cache()
    yield
    clear_cache()


# --------------------------------------------------------------------------------------------
# File writers
# --------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """Encode a uint8 array as IDX: magic 0x0000_08_DD, big-endian uint32 dims, raw data."""
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x00000800 | array.ndim
    header = magic.to_bytes(4, "big") + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.tobytes()


def write_file(path: Path, payload: bytes, compress: bool) -> Path:
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_idx_dataset(
    directory: Path, n_train: int = 30, n_test: int = 20, size: int = 6, compress: bool = True
) -> dict[str, np.ndarray]:
    """Write a tiny MNIST-format dataset; returns the raw arrays that were written."""
    rng = np.random.default_rng(123)
    arrays = {
        "train_images": rng.integers(0, 256, size=(n_train, size, size), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, size, size), dtype=np.uint8),
        "test_labels": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for key, arr in arrays.items():
        write_file(directory / IDX_NAMES[key], idx_bytes(arr), compress)
    return arrays


def write_cifar_dataset(directory: Path, per_batch: int = 4) -> dict[str, np.ndarray]:
    """Write CIFAR-10 python batches (dict with b"data" N x 3072 uint8 and b"labels" list)."""
    rng = np.random.default_rng(7)
    directory.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(per_batch)]
        with (directory / name).open("wb") as fh:
            pickle.dump({b"batch_label": b"x", b"data": data, b"labels": labels}, fh)
        written[name] = data
    return written


def assert_normalised(ds: Dataset) -> None:
    for arr in (ds.x_train, ds.x_test):
        assert arr.dtype == np.float32
        assert arr.ndim == 4
    for arr in (ds.y_train, ds.y_test):
        assert arr.dtype == np.int64
        assert arr.ndim == 1
        assert arr.min() >= 0 and arr.max() < ds.num_classes
    channel_mean = ds.x_train.mean(axis=(0, 2, 3))
    channel_std = ds.x_train.std(axis=(0, 2, 3))
    np.testing.assert_allclose(channel_mean, 0.0, atol=1e-4)
    np.testing.assert_allclose(channel_std, 1.0, atol=1e-3)
    assert abs(float(ds.x_test.mean())) < 0.5  # test uses train statistics: roughly centred
    assert ds.input_shape == ds.x_train.shape[1:] == ds.x_test.shape[1:]


# --------------------------------------------------------------------------------------------
# Successful loads
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "plain"])
def test_idx_loads(tmp_path: Path, compress: bool) -> None:
    raw = write_idx_dataset(tmp_path, compress=compress)
    ds = load_dataset("mnist", tmp_path)
    assert ds.name == "mnist"
    assert ds.x_train.shape == (30, 1, 6, 6)
    assert ds.x_test.shape == (20, 1, 6, 6)
    assert ds.input_shape == (1, 6, 6)
    assert ds.num_classes == 10
    np.testing.assert_array_equal(ds.y_train, raw["train_labels"])
    np.testing.assert_array_equal(ds.y_test, raw["test_labels"])
    assert_normalised(ds)
    # Normalisation is an affine map of the raw pixels with train statistics.
    pixels = raw["train_images"].astype(np.float64)
    expected = (pixels - pixels.mean()) / pixels.std()
    np.testing.assert_allclose(ds.x_train[:, 0], expected, atol=1e-4)


def test_fashion_mnist_with_explicit_dir_and_name_spelling(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    ds = load_dataset("Fashion_MNIST", str(tmp_path))
    assert ds.name == "fashion-mnist"
    assert ds.x_train.shape == (30, 1, 6, 6)


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "cifar-10-batches-py"])
def test_cifar10_loads(tmp_path: Path, nested: bool) -> None:
    batch_dir = tmp_path / "cifar-10-batches-py" if nested else tmp_path
    written = write_cifar_dataset(batch_dir)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.x_train.shape == (20, 3, 32, 32)
    assert ds.x_test.shape == (4, 3, 32, 32)
    assert ds.input_shape == (3, 32, 32)
    np.testing.assert_array_equal(ds.y_train[:4], [0, 1, 2, 3])
    np.testing.assert_array_equal(ds.y_test, [5, 6, 7, 8])
    assert_normalised(ds)
    # The 3072 bytes are channel-major (R plane, G plane, B plane): ordering is preserved.
    first = written["data_batch_1"][0].reshape(3, 32, 32).astype(np.float64)
    raw_r = np.concatenate([written[f"data_batch_{i}"][:, :1024] for i in range(1, 6)])
    np.testing.assert_allclose(ds.x_train[0, 0], (first[0] - raw_r.mean()) / raw_r.std(), atol=1e-4)


def test_cifar10_legacy_protocol2_pickles_with_str_keys(tmp_path: Path) -> None:
    """Old batches: pickle protocol 2, ``numpy.core`` module paths and ``str`` keys."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        batch = {"data": np.full((2, 3072), i, np.uint8), "labels": [i, i]}
        payload = pickle.dumps(batch, protocol=2)
        payload = payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (tmp_path / name).write_bytes(payload)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.x_train.shape == (10, 3, 32, 32)
    np.testing.assert_array_equal(ds.y_train, np.repeat(np.arange(5), 2))
    np.testing.assert_array_equal(ds.y_test, [5, 5])


def test_digits_shapes_and_stratified_split() -> None:
    ds = load_dataset("digits")
    assert ds.x_train.shape == (1347, 1, 8, 8)
    assert ds.x_test.shape == (450, 1, 8, 8)
    assert ds.input_shape == (1, 8, 8)
    assert_normalised(ds)
    test_counts = np.bincount(ds.y_test, minlength=10)
    all_counts = test_counts + np.bincount(ds.y_train, minlength=10)
    assert np.all(np.abs(test_counts - 0.25 * all_counts) <= 1)  # stratified 25 %


def test_digits_deterministic_per_seed() -> None:
    a = load_dataset("digits", seed=3)
    clear_cache()
    b = load_dataset("digits", seed=3)
    assert a is not b
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    c = load_dataset("digits", seed=4)
    assert not np.array_equal(a.y_train, c.y_train)


def test_synthetic_shapes_deterministic_and_learnable() -> None:
    a = load_dataset("synthetic", seed=1)
    assert a.x_train.shape == (600, 1, 8, 8)
    assert a.x_test.shape == (200, 1, 8, 8)
    assert np.bincount(a.y_train).tolist() == [60] * 10
    assert_normalised(a)
    clear_cache()
    b = load_dataset("synthetic", seed=1)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, load_dataset("synthetic", seed=2).x_train)
    # Learnable: a nearest-class-mean classifier is already nearly perfect.
    flat_train = a.x_train.reshape(len(a.x_train), -1)
    means = np.stack([flat_train[a.y_train == k].mean(axis=0) for k in range(10)])
    flat_test = a.x_test.reshape(len(a.x_test), -1)
    pred = np.argmin(((flat_test[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == a.y_test).mean() > 0.9


def test_cache_returns_same_read_only_arrays(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    a = load_dataset("mnist", tmp_path)
    b = load_dataset("mnist", str(tmp_path) + "/")  # same resolved directory, same entry
    assert a is b
    assert load_dataset("mnist", tmp_path, seed=5) is a  # seed cannot change a fixed split
    assert load_dataset("digits") is load_dataset("digits", "/ignored/for/digits")
    for arr in (a.x_train, a.y_train, a.x_test, a.y_test):
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[0] = 0


def test_datasets_constant_lists_all_names() -> None:
    assert set(DATASETS) == {"digits", "fashion-mnist", "mnist", "cifar10", "synthetic"}
    assert "fashion-mnist" in DEFAULT_DATA_DIRS


@pytest.mark.skipif(
    not (DEFAULT_DATA_DIRS["fashion-mnist"] / "train-images-idx3-ubyte.gz").exists(),
    reason="dataset-fashion-mnist package not installed",
)
def test_real_fashion_mnist_default_dir() -> None:
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60000, 1, 28, 28)
    assert ds.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert abs(float(ds.x_train.mean())) < 1e-3


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(DataError) as info:
        load_dataset("imagenet")
    message = str(info.value)
    assert "imagenet" in message
    for name in DATASETS:
        assert name in message


def test_mnist_without_data_dir_says_it_is_required() -> None:
    for data_dir in (None, ""):
        with pytest.raises(DataError, match="data_dir is required") as info:
            load_dataset("mnist", data_dir)
        assert "--data-dir" in str(info.value)
        assert "train-images-idx3-ubyte.gz" in str(info.value)


def test_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", missing)
    message = str(info.value)
    assert str(missing) in message
    assert "apt-get install dataset-fashion-mnist" in message
    with pytest.raises(DataError, match="python pickle batches"):
        load_dataset("cifar10", missing)


def test_missing_default_fashion_dir_explains_apt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setitem(DEFAULT_DATA_DIRS, "fashion-mnist", tmp_path / "absent")
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist")
    assert str(tmp_path / "absent") in str(info.value)
    assert "dataset-fashion-mnist" in str(info.value)


def test_missing_single_idx_file_names_exact_path(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "t10k-labels-idx1-ubyte.gz") in message
    assert str(tmp_path / "t10k-labels-idx1-ubyte") in message
    assert "--data-dir" in message


def test_missing_cifar_batch_names_exact_path(tmp_path: Path) -> None:
    write_cifar_dataset(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", tmp_path)
    assert str(tmp_path / "data_batch_3") in str(info.value)


def test_bad_magic(tmp_path: Path) -> None:
    raw = write_idx_dataset(tmp_path)
    bad = idx_bytes(raw["train_images"], magic=0x00000801)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bad))
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message
    assert "bad magic" in message and "0x00000801" in message and "0x00000803" in message


def test_truncated_file(tmp_path: Path) -> None:
    raw = write_idx_dataset(tmp_path, compress=False)
    payload = idx_bytes(raw["test_images"])
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(payload[:-7])
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path)
    assert "t10k-images-idx3-ubyte" in str(info.value)
    assert "truncated" in str(info.value)


def test_truncated_header(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, compress=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist", tmp_path)


def test_label_image_count_mismatch(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    labels = (np.arange(29) % 10).astype(np.uint8)  # 30 images, 29 labels
    write_file(tmp_path / "train-labels-idx1-ubyte", idx_bytes(labels), compress=True)
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path)
    message = str(info.value)
    assert "count mismatch" in message and "30 images" in message and "29 labels" in message


def test_label_out_of_range(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    labels = np.full(30, 12, dtype=np.uint8)
    write_file(tmp_path / "train-labels-idx1-ubyte", idx_bytes(labels), compress=True)
    with pytest.raises(DataError, match=r"labels in \[12, 12\]"):
        load_dataset("mnist", tmp_path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b"this is not gzip at all",
        lambda b: b[: len(b) // 2],  # truncated download
        lambda b: b[:20] + bytes(x ^ 0xFF for x in b[20:40]) + b[40:],  # flipped bits
    ],
    ids=["not-gzip", "truncated-gzip", "corrupt-deflate"],
)
def test_corrupt_gzip(tmp_path: Path, damage) -> None:
    write_idx_dataset(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path)
    message = str(info.value)
    assert str(path) in message
    assert "gzip" in message or "truncated" in message or "bad magic" in message


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"garbage, not a pickle", "not a valid CIFAR-10"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)})[:-10], "not a valid CIFAR-10"),
        (pickle.dumps([1, 2, 3]), "expected a pickled dict"),
        (pickle.dumps({b"labels": [1, 2]}), "missing 'data' or 'labels'"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]}), "(N, 3072)"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}), "count mismatch"),
        (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}), "expected 0..9"),
        (pickle.dumps(Path("evil")), "refusing to load"),
    ],
    ids=["garbage", "truncated", "not-dict", "no-data", "bad-shape", "mismatch", "range", "evil"],
)
def test_malformed_cifar_batch(tmp_path: Path, payload: bytes, expected: str) -> None:
    write_cifar_dataset(tmp_path)
    (tmp_path / "test_batch").write_bytes(payload)
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", tmp_path)
    assert str(tmp_path / "test_batch") in str(info.value)
    assert expected in str(info.value)


def test_errors_are_value_errors() -> None:
    assert issubclass(DataError, ValueError)


@pytest.mark.parametrize(("dims", "word"), [
    ((30, 0, 6), "zero-size dimension"),
    ((2**32 - 1, 2**32 - 1, 2**32 - 1), "truncated"),  # would overflow an int64 product
])  # fmt: skip
def test_forged_idx_dimensions_are_a_clear_error(tmp_path: Path, dims: tuple[int, ...],
                                                 word: str) -> None:  # fmt: skip
    write_idx_dataset(tmp_path)
    header = (0x00000803).to_bytes(4, "big") + np.asarray(dims, dtype=">u4").tobytes()
    write_file(tmp_path / "train-images-idx3-ubyte", header + bytes(30 * 36), compress=True)
    with pytest.raises(DataError, match=word):
        load_dataset("mnist", tmp_path)
