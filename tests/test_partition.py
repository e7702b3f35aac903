"""Tests for pemn_fl.partition: determinism, disjointness, coverage, label skew and errors."""

from __future__ import annotations

import numpy as np
import pytest

from pemn_fl.data import load_dataset
from pemn_fl.partition import SCHEMES, PartitionError, partition_for, partition_indices


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    """Balanced labels, sorted by class: the worst case for a naive contiguous split."""
    return np.repeat(np.arange(10, dtype=np.int64), 40)


@pytest.fixture(scope="module")
def digit_labels() -> np.ndarray:
    return load_dataset("digits").y_train


def assert_valid_partition(parts: tuple[np.ndarray, ...], n: int, num_partitions: int) -> None:
    assert isinstance(parts, tuple) and len(parts) == num_partitions
    for part in parts:
        assert part.dtype == np.int64 and part.ndim == 1
        assert np.all(np.diff(part) > 0), "indices must be sorted and unique"
        assert part.size == 0 or (part[0] >= 0 and part[-1] < n)
    merged = np.concatenate(parts)
    assert merged.size == np.unique(merged).size, "partitions must be disjoint"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_same_seed_same_partition(labels: np.ndarray, scheme: str) -> None:
    a = partition_indices(labels, 7, scheme, alpha=0.3, classes_per_client=3, seed=11)
    b = partition_indices(labels, 7, scheme, alpha=0.3, classes_per_client=3, seed=11)
    assert len(a) == len(b) == 7
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_different_seed_different_partition(labels: np.ndarray, scheme: str) -> None:
    a = partition_indices(labels, 5, scheme, alpha=0.5, seed=0)
    b = partition_indices(labels, 5, scheme, alpha=0.5, seed=1)
    assert any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_iid_and_dirichlet_cover_everything(labels: np.ndarray, scheme: str) -> None:
    parts = partition_indices(labels, 8, scheme, alpha=0.5, seed=3)
    assert_valid_partition(parts, labels.size, 8)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(labels.size))
    assert min(p.size for p in parts) >= 1


def test_iid_is_balanced_and_shuffled(labels: np.ndarray) -> None:
    parts = partition_indices(labels, 7, "iid", seed=0)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1
    # Labels are sorted by class, so a contiguous split would give ~1-2 classes per client.
    assert all(np.unique(labels[p]).size >= 8 for p in parts)


def test_dirichlet_small_alpha_is_skewed(labels: np.ndarray) -> None:
    skewed = partition_indices(labels, 5, "dirichlet", alpha=0.05, seed=0)
    near_iid = partition_indices(labels, 5, "dirichlet", alpha=1000.0, seed=0)

    def max_class_share(parts: tuple[np.ndarray, ...]) -> float:
        return float(np.mean([np.bincount(labels[p]).max() / p.size for p in parts]))

    assert max_class_share(skewed) > 2 * max_class_share(near_iid)


@pytest.mark.parametrize("classes_per_client", [1, 2, 3])
@pytest.mark.parametrize("num_partitions", [4, 10, 25])
def test_pathological_limits_classes(
    labels: np.ndarray, num_partitions: int, classes_per_client: int
) -> None:
    parts = partition_indices(
        labels, num_partitions, "pathological", classes_per_client=classes_per_client, seed=2
    )
    assert_valid_partition(parts, labels.size, num_partitions)
    for part in parts:
        assert part.size >= 1
        assert np.unique(labels[part]).size == classes_per_client
    if num_partitions >= 10:  # client i always holds class i % 10, so every class is used
        assert sum(p.size for p in parts) == labels.size


def test_pathological_may_not_cover_everything(labels: np.ndarray) -> None:
    # 3 clients x 1 class: at most 3 of the 10 classes can be used.
    parts = partition_indices(labels, 3, "pathological", classes_per_client=1, seed=0)
    assert sum(p.size for p in parts) == 3 * 40


@pytest.mark.parametrize(("num_partitions", "alpha"), [(20, 0.1), (50, 0.1), (20, 0.05)])
def test_digits_dirichlet_many_clients_small_alpha(
    digit_labels: np.ndarray, num_partitions: int, alpha: float
) -> None:
    parts = partition_indices(digit_labels, num_partitions, "dirichlet", alpha=alpha, seed=0)
    assert_valid_partition(parts, digit_labels.size, num_partitions)
    assert sum(p.size for p in parts) == digit_labels.size
    assert min(p.size for p in parts) >= 1


def test_explicit_min_partition_size_is_strict(digit_labels: np.ndarray) -> None:
    with pytest.raises(PartitionError, match="at least 60 sample"):
        partition_indices(digit_labels, 20, "dirichlet", alpha=0.1, min_partition_size=60)


def test_impossible_dirichlet_raises_clear_error(digit_labels: np.ndarray) -> None:
    with pytest.raises(PartitionError) as info:
        partition_indices(digit_labels, 300, "dirichlet", alpha=0.01, seed=0)
    message = str(info.value)
    assert "300 clients" in message and "increase alpha" in message


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"num_partitions": 0}, "at least 1"),
        ({"num_partitions": -3}, "at least 1"),
        ({"num_partitions": 401}, "larger than the number of samples (400)"),
        ({"num_partitions": 2.5}, "must be an integer"),
        ({"num_partitions": 4, "scheme": "shards"}, "iid, dirichlet, pathological"),
        ({"num_partitions": 4, "scheme": "dirichlet", "alpha": 0.0}, "alpha must be a positive"),
        ({"num_partitions": 4, "scheme": "dirichlet", "alpha": -1.0}, "alpha must be a positive"),
        (
            {"num_partitions": 4, "scheme": "pathological", "classes_per_client": 0},
            "between 1 and the number of classes present (10)",
        ),
        (
            {"num_partitions": 4, "scheme": "pathological", "classes_per_client": 11},
            "between 1 and the number of classes present (10)",
        ),
    ],
)
def test_bad_arguments(labels: np.ndarray, kwargs: dict, expected: str) -> None:
    with pytest.raises(PartitionError) as info:
        partition_indices(labels, **kwargs)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("bad_labels", "expected"),
    [
        (np.zeros((4, 2), dtype=np.int64), "1-D"),
        (np.array([], dtype=np.int64), "empty"),
        (np.array([0.5, 1.5]), "integers"),
    ],
)
def test_bad_labels(bad_labels: np.ndarray, expected: str) -> None:
    with pytest.raises(PartitionError, match=expected):
        partition_indices(bad_labels, 1)


def test_irrelevant_arguments_are_not_validated(labels: np.ndarray) -> None:
    parts = partition_indices(labels, 4, "iid", alpha=0.0, classes_per_client=0)
    assert sum(p.size for p in parts) == labels.size


def test_partition_error_is_value_error() -> None:
    assert issubclass(PartitionError, ValueError)


def test_partition_for_is_cached_and_read_only(digit_labels: np.ndarray) -> None:
    a = partition_for("digits", None, 0, 10, "dirichlet", 0.5, 2)
    b = partition_for("digits", None, 0, 10, "dirichlet", 0.5, 2)
    assert a is b
    expected = partition_indices(digit_labels, 10, "dirichlet", alpha=0.5, seed=0)
    for x, y in zip(a, expected, strict=True):
        np.testing.assert_array_equal(x, y)
        assert not x.flags.writeable
