"""The datasets' files on disk, read and checked: MNIST-style IDX files (Fashion-MNIST, MNIST)
and CIFAR-10's python pickle batches. Every field is validated, because a truncated download
otherwise surfaces as an obscure ``reshape`` error much later, and every problem is one
:class:`~pemn_fl.errors.DataError` that names the file looked for, what was wrong with it and
how to obtain it. ``pemn_fl.data`` loads, normalises and caches what these return.
"""

from __future__ import annotations

import gzip
import math
import pickle
import zlib
from pathlib import Path

import numpy as np

from pemn_fl.errors import DataError

#: Where a dataset is looked for when no ``data_dir`` is given.  Fashion-MNIST is packaged by
#: Debian/Ubuntu (``dataset-fashion-mnist``), so it has a well-known system location; MNIST and
#: CIFAR-10 are not packaged and therefore always need an explicit ``data_dir``.
DEFAULT_DATA_DIRS: dict[str, Path] = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}

_IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_CIFAR_SUBDIR = "cifar-10-batches-py"

HOW_TO_GET: dict[str, str] = {  # said with every "not found"
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

Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test


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
    raise DataError(f"{key} file not found: {tried} ; {HOW_TO_GET[key]}")


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


def load_idx_dataset(key: str, directory: Path) -> Split:
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
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= NUM_CLASSES):
        raise DataError(
            f"{path} has labels in [{int(labels.min())}, {int(labels.max())}], expected "
            f"0..{NUM_CLASSES - 1}"
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


def load_cifar10(directory: Path) -> Split:
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
