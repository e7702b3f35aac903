"""Real image-classification datasets, loaded into memory as normalised numpy arrays.

Why numpy and not ``torchvision`` / HuggingFace hubs?  The project must run offline (classroom
machines, CI, air-gapped simulation hosts), so every loader reads files that are already on disk
(or bundled with scikit-learn) and parses them itself.  Nothing here ever touches the network.

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
import gzip
import math
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


class DataError(ValueError):
    """Clear, user-facing data problem: names the exact file looked for and how to get it.

    Subclasses :class:`ValueError` so generic CLI error handling (``except ValueError``) that
    reports bad user input also reports bad data, without printing a traceback.
    """


DATASETS: tuple[str, ...] = ("digits", "fashion-mnist", "mnist", "cifar10", "synthetic")

#: Where a dataset is looked for when no ``data_dir`` is given.  Fashion-MNIST is packaged by
#: Debian/Ubuntu (``dataset-fashion-mnist``), so it has a well-known system location; MNIST and
#: CIFAR-10 are not packaged and therefore always need an explicit ``data_dir``.
DEFAULT_DATA_DIRS: dict[str, Path] = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}

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

_IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_CIFAR_SUBDIR = "cifar-10-batches-py"

_HOW_TO_GET: dict[str, str] = {
    "fashion-mnist": (
        "install it with `sudo apt-get install dataset-fashion-mnist` (files go to "
        f"{DEFAULT_DATA_DIRS['fashion-mnist']}), or download the four IDX .gz files "
        "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
        "t10k-labels-idx1-ubyte.gz) and pass --data-dir DIR"
    ),
    "mnist": (
        "download the four MNIST IDX .gz files (train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) "
        "into one directory and pass --data-dir DIR"
    ),
    "cifar10": (
        "download the CIFAR-10 python pickle batches (cifar-10-python.tar.gz from "
        "https://www.cs.toronto.edu/~kriz/cifar.html), extract them and pass --data-dir DIR "
        f"(the directory holding data_batch_1..5 and test_batch, or its parent containing "
        f"{_CIFAR_SUBDIR}/)"
    ),
}

NUM_CLASSES = 10  # every supported dataset has ten classes
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
                f"{_HOW_TO_GET[key]}"
            )
        directory = default
    else:
        directory = Path(data_dir).expanduser()
    directory = directory.resolve()
    if not directory.is_dir():
        raise DataError(f"{key} data directory not found: {directory} ; {_HOW_TO_GET[key]}")
    return directory


@functools.lru_cache(maxsize=8)
def _load_cached(key: str, directory: str, seed: int) -> Dataset:
    """Load, normalise and freeze one dataset; keyed by canonical name, resolved dir and seed."""
    if key == "digits":
        x_train, y_train, x_test, y_test = _load_digits(seed)
    elif key == "synthetic":
        x_train, y_train, x_test, y_test = _make_synthetic(seed)
    elif key in ("fashion-mnist", "mnist"):
        x_train, y_train, x_test, y_test = _load_idx_dataset(key, Path(directory))
    else:
        x_train, y_train, x_test, y_test = _load_cifar10(Path(directory))

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

_Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _load_digits(seed: int) -> _Split:
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


def _make_synthetic(seed: int) -> _Split:
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


# --------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)
# --------------------------------------------------------------------------------------------

_IDX_UBYTE = 0x08  # type code for unsigned bytes, the only one MNIST-style files use


def _find_file(key: str, directory: Path, stem: str, extensions: tuple[str, ...]) -> Path:
    """Return the first existing ``directory/stem+ext``; otherwise name every path tried."""
    candidates = [directory / f"{stem}{ext}" for ext in extensions]
    for path in candidates:
        if path.is_file():
            return path
    tried = " or ".join(str(p) for p in candidates)
    raise DataError(f"{key} file not found: {tried} ; {_HOW_TO_GET[key]}")


def _read_bytes(path: Path) -> bytes:
    """Read a file, transparently gunzipping ``*.gz``; I/O and gzip errors become DataError."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(
            f"{path} is not a valid gzip file (corrupt or truncated download?): {exc}; "
            "delete it and download it again"
        ) from exc
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _parse_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse one IDX file of unsigned bytes with ``ndim`` dimensions.

    Layout (http://yann.lecun.com/exdb/mnist/): a 4-byte big-endian magic ``0x0000 TT DD``
    (``TT`` = type code, ``DD`` = number of dimensions), then ``DD`` big-endian uint32 sizes,
    then the data.  Every field is validated because a truncated download otherwise surfaces as
    an obscure ``reshape`` error much later.
    """
    raw = _read_bytes(path)
    expected_magic = (_IDX_UBYTE << 8) | ndim
    header_len = 4 + 4 * ndim
    if len(raw) < 4:
        raise DataError(f"{path} is truncated: only {len(raw)} bytes, not even an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise DataError(
            f"{path} has bad magic number 0x{magic:08X}, expected 0x{expected_magic:08X} "
            f"(an IDX file of unsigned bytes with {ndim} dimension(s)); is it the right file?"
        )
    if len(raw) < header_len:
        raise DataError(f"{path} is truncated: header needs {header_len} bytes, got {len(raw)}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if any(d == 0 for d in dims[1:]):
        raise DataError(f"{path} is malformed: its header declares a zero-size dimension {dims}")
    expected_len = math.prod(dims)  # Python ints: a forged huge header cannot overflow
    actual_len = len(raw) - header_len
    if actual_len < expected_len:
        raise DataError(
            f"{path} is truncated: header promises {expected_len} data bytes for shape {dims}, "
            f"file has {actual_len}; download it again"
        )
    if actual_len > expected_len:
        raise DataError(
            f"{path} is malformed: {actual_len - expected_len} unexpected trailing bytes after "
            f"the {expected_len} data bytes of shape {dims}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)


def _load_idx_split(key: str, directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load and cross-check the images and labels of one split (``train`` or ``test``)."""
    image_path = _find_file(key, directory, _IDX_FILES[f"{split}_images"], (".gz", ""))
    label_path = _find_file(key, directory, _IDX_FILES[f"{split}_labels"], (".gz", ""))
    images = _parse_idx(image_path, ndim=3)
    labels = _parse_idx(label_path, ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"count mismatch: {image_path} has {images.shape[0]} images but {label_path} has "
            f"{labels.shape[0]} labels"
        )
    if images.shape[0] == 0:
        raise DataError(f"{image_path} contains no images")
    _check_labels(labels, label_path)
    return images[:, None, :, :], labels.astype(np.int64)


def _load_idx_dataset(key: str, directory: Path) -> _Split:
    """MNIST-format train and test splits from ``directory`` (``.gz`` or uncompressed)."""
    x_train, y_train = _load_idx_split(key, directory, "train")
    x_test, y_test = _load_idx_split(key, directory, "test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{key} in {directory}: train images are {x_train.shape[2:]} but test images are "
            f"{x_test.shape[2:]}; the files come from different datasets"
        )
    return x_train, y_train, x_test, y_test


def _check_labels(labels: np.ndarray, path: Path) -> None:
    """Labels outside ``0..9`` mean a wrong or corrupt file; better caught here than in a loss."""
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= _NUM_CLASSES):
        raise DataError(
            f"{path} has labels in [{int(labels.min())}, {int(labels.max())}], expected "
            f"0..{_NUM_CLASSES - 1}"
        )


# --------------------------------------------------------------------------------------------
# CIFAR-10 (python pickle batches)
# --------------------------------------------------------------------------------------------


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays, dicts, lists and primitives.

    Unpickling runs arbitrary code by design; CIFAR batches only ever contain a dict of numpy
    arrays and lists, so anything else in a file named ``data_batch_1`` is refused rather than
    executed.
    """

    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
        }
    )

    def find_class(self, module: str, name: str) -> object:
        """Resolve a global only if it is on the allow-list (see the class docstring)."""
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 batch: a pickled dict with ``data`` (N x 3072 uint8) and ``labels``.

    The official batches were written by Python 2, so they are read with ``latin1`` (the
    encoding numpy needs for Python 2 arrays); keys may then be ``str`` or ``bytes``.
    """
    try:
        with path.open("rb") as fh:
            batch = _NumpyOnlyUnpickler(fh, encoding="latin1").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        ImportError,
        MemoryError,
    ) as exc:
        raise DataError(
            f"{path} is not a valid CIFAR-10 python pickle batch (corrupt or truncated?): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc

    if not isinstance(batch, dict):
        raise DataError(f"{path} is malformed: expected a pickled dict, got {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        found = ", ".join(repr(k) for k in batch)
        raise DataError(f"{path} is malformed: missing 'data' or 'labels' key (found: {found})")
    try:
        data = np.asarray(data)
        labels = np.asarray(labels)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path} is malformed: {exc}") from exc
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path} is malformed: 'data' has shape {data.shape}, expected (N, 3072)")
    if data.dtype != np.uint8:
        raise DataError(f"{path} is malformed: 'data' has dtype {data.dtype}, expected uint8")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path} is malformed: 'labels' must be a 1-D list of integers")
    if labels.shape[0] != data.shape[0]:
        raise DataError(
            f"count mismatch in {path}: {data.shape[0]} images but {labels.shape[0]} labels"
        )
    _check_labels(labels, path)
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _load_cifar10(directory: Path) -> _Split:
    """CIFAR-10 from ``directory`` or its ``cifar-10-batches-py`` subfolder (as extracted)."""
    nested = directory / _CIFAR_SUBDIR
    if not (directory / _CIFAR_TRAIN[0]).is_file() and nested.is_dir():
        directory = nested
    xs, ys = [], []
    for name in _CIFAR_TRAIN:
        x, y = _read_cifar_batch(_find_file("cifar10", directory, name, ("",)))
        xs.append(x)
        ys.append(y)
    x_test, y_test = _read_cifar_batch(_find_file("cifar10", directory, _CIFAR_TEST, ("",)))
    return np.concatenate(xs), np.concatenate(ys), x_test, y_test
