"""Real image-classification datasets, loaded into memory as normalised numpy arrays.

Why numpy and not ``torchvision`` / HuggingFace hubs?  The project must run offline (classroom
machines, CI, air-gapped simulation hosts), so every loader reads files that are already on disk
(or bundled with scikit-learn) and parses them itself (the file formats in
:mod:`pemn_fl.datafiles`).  Nothing here ever touches the network.

Why a per-process cache?  Flower creates a ``ClientApp`` per round and every client calls
:func:`load_dataset`; re-parsing 60 000 MNIST images each time would dominate the run time.  The
cache hands out the *same* arrays to every caller, so they are marked read-only: an accidental
in-place augmentation in one client would otherwise silently corrupt the data of all the others.

Why :class:`DataError`?  Missing or broken data is the most common first-run failure.  A
``gzip.BadGzipFile`` traceback from deep inside a worker process says nothing useful, so every
failure is re-raised as one :class:`DataError` whose message names the exact file looked for, what
was wrong with it and how to obtain it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pemn_fl.datafiles import (
    DEFAULT_DATA_DIRS,
    HOW_TO_GET,
    NUM_CLASSES,
    Split,
    load_cifar10,
    load_idx_dataset,
)
from pemn_fl.errors import DataError

__all__ = [
    "BUNDLED",
    "DATASETS",
    "DEFAULT_DATA_DIRS",
    "INPUT_SHAPES",
    "NUM_CLASSES",
    "DataError",
    "Dataset",
    "clear_cache",
    "load_dataset",
]


DATASETS: tuple[str, ...] = ("digits", "fashion-mnist", "mnist", "cifar10", "synthetic")

# Datasets whose train/test split is fixed by the files on disk: the seed cannot change them, so
# it is dropped from the cache key (one cached copy instead of one per seed).
_FIXED_SPLIT = frozenset({"fashion-mnist", "mnist", "cifar10"})
# Datasets that are bundled or generated: a data_dir would be meaningless (the settings refuse
# one, rather than silently ignoring it).
BUNDLED = frozenset({"digits", "synthetic"})
_NO_FILES = BUNDLED
#: ``(C, H, W)`` of one sample of each dataset, known without its files: a model can be sized
#: (``describe``, a model file's header checked) where the data is not installed.
INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "digits": (1, 8, 8), "fashion-mnist": (1, 28, 28), "mnist": (1, 28, 28),
    "cifar10": (3, 32, 32), "synthetic": (1, 8, 8),
}  # fmt: skip

_NUM_CLASSES = NUM_CLASSES
# Synthetic data size: small enough for sub-second tests, big enough to learn something.
_SYNTH_TRAIN, _SYNTH_TEST, _SYNTH_NOISE = 600, 200, 1.0


@dataclass(frozen=True, eq=False)
class Dataset:
    """An in-memory train/test split, ready to be wrapped in tensors.

    ``x_*`` are float32 of shape ``(N, C, H, W)``, normalised to zero mean / unit std per channel
    with statistics of the *training* split only (using test statistics would leak information
    about the held-out data).  ``y_*`` are int64 of shape ``(N,)`` with values in
    ``range(num_classes)``.  Arrays returned by :func:`load_dataset` are read-only because they
    are shared through a cache.

    ``eq=False``: element-wise ``==`` on arrays has no single truth value, so dataclass equality
    would raise; identity equality is what the cache needs anyway.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one sample, e.g. ``(1, 28, 28)`` for MNIST; used to size models."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)


def load_dataset(name: str, data_dir: str | Path | None = None, *, seed: int = 0) -> Dataset:
    """Load dataset ``name`` (one of :data:`DATASETS`), cached per process.

    ``data_dir`` is only used by the file-based datasets (``fashion-mnist``, ``mnist``,
    ``cifar10``); ``None`` or ``""`` means "use :data:`DEFAULT_DATA_DIRS`" (an empty string is
    accepted because that is how "unset" looks in Flower's TOML run config).  ``seed`` only
    matters for datasets whose split is not fixed on disk (``digits``, ``synthetic``).

    Raises :class:`DataError` for every problem, with a message that says what to do.
    """
    key = _canonical_name(name)
    directory = "" if key in _NO_FILES else str(_resolve_dir(key, data_dir))
    cache_seed = 0 if key in _FIXED_SPLIT else int(seed)
    return _load_cached(key, directory, cache_seed)


def clear_cache() -> None:
    """Drop every cached dataset (frees memory; mainly for tests and long-lived notebooks)."""
    _load_cached.cache_clear()


# --------------------------------------------------------------------------------------------
# Dispatch and caching
# --------------------------------------------------------------------------------------------


def _canonical_name(name: str) -> str:
    """Map user spellings (``Fashion_MNIST``, ``CIFAR10``) onto one of :data:`DATASETS`."""
    if not isinstance(name, str):
        raise DataError(f"dataset name must be a string, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    if key == "fashionmnist":
        key = "fashion-mnist"
    if key == "cifar-10":
        key = "cifar10"
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid datasets are: {', '.join(DATASETS)}")
    return key


def _resolve_dir(key: str, data_dir: str | Path | None) -> Path:
    """Pick the directory to read from and check that it exists (before touching the cache)."""
    if data_dir is None or str(data_dir).strip() == "":
        default = DEFAULT_DATA_DIRS.get(key)
        if default is None:
            raise DataError(
                f"dataset {key!r} has no default location, so data_dir is required: "
                f"{HOW_TO_GET[key]}"
            )
        directory = default
    else:
        directory = Path(data_dir).expanduser()
    directory = directory.resolve()
    if not directory.is_dir():
        raise DataError(f"{key} data directory not found: {directory} ; {HOW_TO_GET[key]}")
    return directory


@functools.lru_cache(maxsize=8)
def _load_cached(key: str, directory: str, seed: int) -> Dataset:
    """Load, normalise and freeze one dataset; keyed by canonical name, resolved dir and seed."""
    if key == "digits":
        x_train, y_train, x_test, y_test = _load_digits(seed)
    elif key == "synthetic":
        x_train, y_train, x_test, y_test = _make_synthetic(seed)
    elif key in ("fashion-mnist", "mnist"):
        x_train, y_train, x_test, y_test = load_idx_dataset(key, Path(directory))
    else:
        x_train, y_train, x_test, y_test = load_cifar10(Path(directory))

    x_train, x_test = _normalise(x_train, x_test)
    arrays = (
        x_train,
        np.ascontiguousarray(y_train, dtype=np.int64),
        x_test,
        np.ascontiguousarray(y_test, dtype=np.int64),
    )
    for arr in arrays:
        arr.setflags(write=False)
    return Dataset(key, *arrays, num_classes=_NUM_CLASSES)


def _normalise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardise both splits per channel with training statistics, returning new float32 arrays.

    Statistics are accumulated in float64 over chunks of samples, so the temporaries stay small
    even for CIFAR-10 (a full float64 copy would be 1.2 GB).
    """
    train = np.array(x_train, dtype=np.float32, order="C", copy=True)
    test = np.array(x_test, dtype=np.float32, order="C", copy=True)
    channels = train.shape[1]
    total = np.zeros(channels, dtype=np.float64)
    total_sq = np.zeros(channels, dtype=np.float64)
    chunk = 4096
    for start in range(0, len(train), chunk):
        block = train[start : start + chunk].astype(np.float64)
        total += block.sum(axis=(0, 2, 3))
        total_sq += np.square(block).sum(axis=(0, 2, 3))
    count = train.shape[0] * train.shape[2] * train.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std[std < 1e-8] = 1.0  # a constant channel carries no information; avoid dividing by zero
    shape = (1, channels, 1, 1)
    for arr in (train, test):
        arr -= mean.astype(np.float32).reshape(shape)
        arr /= std.astype(np.float32).reshape(shape)
    return train, test


# --------------------------------------------------------------------------------------------
# Bundled and generated data
# --------------------------------------------------------------------------------------------

def _load_digits(seed: int) -> Split:
    """scikit-learn's bundled 8x8 digits: always available offline, hence the default.

    The dataset ships without a test split, so a stratified 25 % is held out; stratifying keeps
    all ten classes equally represented in the small (450 image) test set.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.asarray(digits.images, dtype=np.float32)[:, None, :, :]
    labels = np.asarray(digits.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, random_state=seed, stratify=labels
    )
    return x_train, y_train, x_test, y_test


def _make_synthetic(seed: int) -> Split:
    """Tiny, deterministic, learnable data for fast tests: class prototype + Gaussian noise.

    Each of the ten classes has a random 1x8x8 mean pattern; samples add unit noise.  Prototypes
    are ~11 noise-std apart, so even a linear model separates them within a few steps, which is
    what tests of training loops need.  Labels are balanced and shuffled.
    """
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(0.0, 1.0, size=(_NUM_CLASSES, 1, 8, 8))

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.arange(n) % _NUM_CLASSES).astype(np.int64)
        x = prototypes[y] + rng.normal(0.0, _SYNTH_NOISE, size=(n, 1, 8, 8))
        return x.astype(np.float32), y

    x_train, y_train = sample(_SYNTH_TRAIN)
    x_test, y_test = sample(_SYNTH_TEST)
    return x_train, y_train, x_test, y_test
