"""``model.pemn``: a trained global model as one small, self-checking file.

A model of a mask method is its seed and its masks: every party rebuilds the same random
prototype from the run settings, so the file holds those settings, a fingerprint of what they
rebuild (to catch a platform whose RNG differs) and the final global arrays, each stored in
the smallest form that evaluates identically:

* a 0/1 array (a mask) goes through the mask codec (``codec.encode_mask``: 1 bit per entry,
  CRC-checked), all masks of the model in one payload;
* any other array (FedAvg's weights, the evolving weights of ``evolve*``) is raw
  little-endian bytes of its dtype: such a model *is* floats, and the file says so.

Layout (little-endian): ``MAGIC`` (8 bytes), header length (u32), header (UTF-8 JSON: format
version, method, run config, fingerprint, final round and accuracy, and per array its name,
dtype, shape and coding), mask payload length (u32), mask payload, raw arrays in header
order, CRC32 of everything before it (u32).

Reading validates every length and shape against the bytes actually present, and against
fixed bounds, before numpy sees it, so a truncated, corrupted, foreign or forged file is a
:class:`ModelFileError` that says what is wrong, never a numpy or torch traceback. A CRC only
detects accidents: a forged file has a valid one, so every header field is treated as hostile:

* at most ``MAX_ARRAYS`` arrays, each of at most ``MAX_DIMS`` dimensions, each dimension and
  each shape's product at most ``models.MAX_PARAMETERS`` (the product taken over the non-zero
  dimensions, as numpy checks a shape: ``[0, 2**39, 2**39]`` holds no value yet overflows
  numpy's size), and all masks together at most that too: no array of a model pemn-fl
  builds is larger than the largest model it builds;
* every float value finite and within ``MAX_ABS_WEIGHT`` (see there why);
* the method is only a *name*: the file never decides what code runs. ``export.rebuild``
  takes it from the registry of built-in methods, and a plug-in's module only when the
  user names it on the command line (``evaluate --method-module``).

Hand-written rather than ``np.savez``/``torch.save``: those store every array as full-width
values (a mask as 8 bits per entry, 8x the codec's) and ``torch.load`` of an untrusted file
unpickles; this format carries no code and checks itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord

from pemn_fl import framing
from pemn_fl.codec import MaskPayloadError, decode_mask, encode_mask
from pemn_fl.models import MAX_PARAMETERS

MAGIC = b"PEMNFLM\x01"
FORMAT_VERSION = 1
_U32 = struct.Struct("<I")
# dtypes a model array may have; anything else in a header is refused, not interpreted.
_DTYPES = {"float32", "float64", "float16", "int64", "int32", "uint8", "bool"}
_MAX_HEADER = 1 << 20
# Every array pemn-fl writes is a layer's weight, mask or buffer (at most 4 dimensions, a
# convolution's) of a model of at most MAX_PARAMETERS values, with a few hundred tensors in
# the largest (resnet20): these bounds are far above any real file and far below what
# would make numpy allocate, overflow or refuse.
MAX_DIMS = 8
MAX_ARRAYS = 4096
MAX_NAME = 256
# A float weight in a model file may not exceed this in magnitude. Why 1e6: (1) what
# training writes is far below it: masks are 0/1, prototype values are +-(a He std) <= ~1.5,
# and the weights of every model file of the committed study's runs stay below 2 (FedAvg's
# 1.89 the largest), so 1e6 is five orders of magnitude of headroom; a run whose weights
# passed it had diverged (and non-finite ones are refused anyway); (2) within it a forward
# pass cannot overflow float32 (max 3.4e38): a layer's output is at most
# 1e6 x fan-in (<= MAX_PARAMETERS = 1e8) x its input, and even two such layers in a row stay
# near 1e30, while a weight of 3e38 overflows at once and "evaluates" to a NaN loss.
MAX_ABS_WEIGHT = 1e6
MAX_FINAL_ROUND = 1 << 31


class ModelFileError(ValueError):
    """A model file that cannot be used, with a message that says why."""


@dataclass(frozen=True)
class ModelFile:
    """The contents of a ``model.pemn``."""

    method: str
    run_config: dict[str, object]
    fingerprint: str
    arrays: ArrayRecord
    final_round: int
    accuracy: float
    info: dict[str, object] = field(default_factory=dict)


def model_fingerprint(model_state: dict[str, np.ndarray], initial: list[np.ndarray]) -> str:
    """16 hex chars identifying what the settings rebuild before training: the model's tensors
    (prototype weights, buffers) and the method's initial global arrays (seeded mask or
    weights). Equal on two machines means the saved arrays mean the same network there."""
    h = hashlib.sha256()
    for name in sorted(model_state):
        h.update(name.encode())
        h.update(np.ascontiguousarray(model_state[name]).tobytes())
    for a in initial:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _is_mask(a: np.ndarray) -> bool:
    return a.dtype in (np.uint8, np.bool_, np.float32) and a.size > 0 and bool(
        np.all((a == 0) | (a == 1))
    )


def dumps(model: ModelFile) -> bytes:
    """The file's bytes."""
    names = list(model.arrays)
    arrays = [model.arrays[n].numpy() for n in names]
    entries, masks, raw = [], [], []
    for name, a in zip(names, arrays, strict=True):
        coding = "mask" if _is_mask(a) else "raw"
        entries.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape),
                        "coding": coding})  # fmt: skip
        if coding == "mask":
            masks.append(a.reshape(-1).astype(bool))
        else:
            raw.append(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes())
    payload = encode_mask(masks, fingerprint=model.fingerprint) if masks else b""
    header = json.dumps({
        "format": FORMAT_VERSION, "method": model.method, "run_config": model.run_config,
        "fingerprint": model.fingerprint, "final_round": model.final_round,
        "accuracy": model.accuracy, "arrays": entries, "info": model.info,
    }, sort_keys=True).encode()  # fmt: skip
    body = b"".join([MAGIC, _U32.pack(len(header)), header, _U32.pack(len(payload)), payload,
                     *raw])  # fmt: skip
    return framing.seal(body)


def loads(data: bytes) -> ModelFile:
    """Parse and fully check a model file's bytes; :class:`ModelFileError` if anything is off."""
    view = memoryview(data)
    if len(view) < len(MAGIC) + 12 or bytes(view[: len(MAGIC) - 1]) != MAGIC[:-1]:
        raise ModelFileError("not a pemn-fl model file (no PEMNFLM header)")
    if view[len(MAGIC) - 1] != MAGIC[-1]:
        raise ModelFileError(
            f"model file format {view[len(MAGIC) - 1]} is not supported by this pemn-fl "
            f"(it reads format {MAGIC[-1]}); upgrade pemn-fl"
        )
    if not framing.sealed(view):
        raise ModelFileError("model file is corrupted or truncated (CRC32 mismatch)")
    pos = len(MAGIC)
    (header_len,) = _U32.unpack(view[pos : pos + 4])
    pos += 4
    if header_len > min(_MAX_HEADER, len(view) - pos - 8):
        raise ModelFileError(f"model file header length {header_len} exceeds the file")
    method, config, fp, entries, final_round, accuracy, info = _header(view[pos : pos + header_len])
    pos += header_len
    (payload_len,) = _U32.unpack(view[pos : pos + 4])
    pos += 4
    if payload_len > len(view) - pos - 4:
        raise ModelFileError(f"model file mask payload length {payload_len} exceeds the file")
    payload = view[pos : pos + payload_len]
    pos += payload_len
    shapes, mask_sizes = _shapes(entries)
    masks: list[np.ndarray] = []
    if mask_sizes:
        try:
            masks = decode_mask(payload, fingerprint=fp, layer_sizes=mask_sizes)
        except (MaskPayloadError, ValueError, TypeError) as exc:
            raise ModelFileError(f"model file masks do not decode: {exc}") from None
    elif payload_len:
        raise ModelFileError("model file has a mask payload but no mask arrays")
    arrays = _arrays(view, pos, entries, shapes, masks)
    return ModelFile(method, config, fp, ArrayRecord(arrays), final_round, accuracy, info)


def _header(raw: memoryview) -> tuple[str, dict, str, list, int, float, dict]:
    """The JSON header's fields, checked: method, run config, fingerprint, array entries, final
    round, accuracy and info."""
    try:
        header = json.loads(bytes(raw))
        method, config = header["method"], dict(header["run_config"])
        fp, entries = header["fingerprint"], list(header["arrays"])
        final_round, accuracy = header["final_round"], float(header["accuracy"])
        info = dict(header.get("info", {}))
    except (ValueError, KeyError, TypeError, RecursionError) as exc:  # nesting: RecursionError
        raise ModelFileError(f"model file header is not valid: {exc}") from None
    _check_header(method, fp, final_round, accuracy, info, entries)
    return method, config, fp, entries, final_round, accuracy, info


def _shapes(entries: list) -> tuple[list[tuple[int, ...]], list[int]]:
    """Every array entry checked: the shapes, and the sizes of the masks among them."""
    shapes, mask_sizes = [], []
    seen: set[str] = set()
    for e in entries:
        if not (isinstance(e, dict) and isinstance(e.get("name"), str) and e["name"] not in seen
                and len(e["name"]) <= MAX_NAME and e.get("dtype") in _DTYPES
                and e.get("coding") in ("mask", "raw")
                and isinstance(e.get("shape"), list)):  # fmt: skip
            raise ModelFileError(f"model file array entry {str(e)[:200]} is not valid")
        seen.add(e["name"])
        shapes.append(_checked_shape(e["name"], e["shape"]))
        if e["coding"] == "mask":
            mask_sizes.append(math.prod(shapes[-1]))  # Python ints: no overflow
    if sum(mask_sizes) > MAX_PARAMETERS:
        raise ModelFileError(f"model file masks hold {sum(mask_sizes):,} entries; a model "
                             f"pemn-fl builds has at most {MAX_PARAMETERS:,}")  # fmt: skip
    return shapes, mask_sizes


def _arrays(view: memoryview, pos: int, entries: list, shapes: list[tuple[int, ...]],
            masks: list[np.ndarray]) -> dict[str, Array]:  # fmt: skip
    """The arrays in header order: each mask from ``masks``, each raw one read from ``pos``
    on (floats checked); every byte up to the CRC must be used."""
    arrays: dict[str, Array] = {}
    for e, shape in zip(entries, shapes, strict=True):
        dtype = np.dtype(e["dtype"])
        if e["coding"] == "mask":
            arrays[str(e["name"])] = Array(masks.pop(0).astype(dtype).reshape(shape))
            continue
        size = math.prod(shape) * dtype.itemsize
        if size > len(view) - 4 - pos:
            raise ModelFileError(f"model file array {e['name']!r} ({size} bytes) exceeds the file")
        flat = np.frombuffer(view[pos : pos + size], dtype=dtype.newbyteorder("<"))
        if dtype.kind == "f":  # a valid CRC proves no more: the values are checked too
            _check_weights(str(e["name"]), flat)
        arrays[str(e["name"])] = Array(flat.astype(dtype).reshape(shape))
        pos += size
    if pos != len(view) - 4:
        raise ModelFileError(f"model file has {len(view) - 4 - pos} unexpected trailing bytes")
    return arrays


def _check_header(method: object, fingerprint: object, final_round: object, accuracy: float,
                  info: dict[str, object], entries: list[object]) -> None:  # fmt: skip
    """The header's scalar fields, typed and bounded (json gives any type, any size)."""
    if not (isinstance(method, str) and 0 < len(method) <= MAX_NAME):
        raise ModelFileError(f"model file method {str(method)[:80]!r} is not a method name")
    if not (isinstance(fingerprint, str) and len(fingerprint) <= MAX_NAME):
        raise ModelFileError("model file fingerprint is not a string")
    if not (type(final_round) is int and 0 <= final_round <= MAX_FINAL_ROUND):
        raise ModelFileError(f"model file final round {str(final_round)[:40]} is not a round "
                             f"number in [0, {MAX_FINAL_ROUND}]")  # fmt: skip
    if not 0.0 <= accuracy <= 1.0:  # NaN fails this too
        raise ModelFileError(f"model file accuracy {accuracy!r} is not in [0, 1]")
    dense = info.get("float32_bytes", 0)
    if not (type(dense) is int and 0 <= dense <= 8 * MAX_PARAMETERS):
        raise ModelFileError(f"model file float32_bytes {str(dense)[:40]} is not a byte count")
    if len(entries) > MAX_ARRAYS:
        raise ModelFileError(f"model file lists {len(entries):,} arrays; at most {MAX_ARRAYS} "
                             "are read (the largest model has a few hundred)")  # fmt: skip


def _checked_shape(name: str, shape: list[object]) -> tuple[int, ...]:
    """``shape`` if numpy can hold it within pemn-fl's model size bound, else why not."""
    if len(shape) > MAX_DIMS:
        raise ModelFileError(f"model file array {name!r} has {len(shape):,} dimensions; at "
                             f"most {MAX_DIMS} are read (pemn-fl's arrays have at most 4)")
    if not all(type(d) is int and 0 <= d <= MAX_PARAMETERS for d in shape):
        raise ModelFileError(f"model file array {name!r} has shape {str(shape)[:120]}: each "
                             f"dimension must be an integer in [0, {MAX_PARAMETERS:,}]")
    # numpy refuses a shape whose non-zero dimensions overflow, even with a zero among them.
    product = math.prod(d for d in shape if d)  # type: ignore[misc]
    if product > MAX_PARAMETERS:
        raise ModelFileError(f"model file array {name!r} has shape {str(shape)[:120]}, "
                             f"{product:.3g} values; a model pemn-fl builds has at most "
                             f"{MAX_PARAMETERS:,}")  # fmt: skip
    return tuple(shape)  # type: ignore[arg-type]


def _check_weights(name: str, flat: np.ndarray) -> None:
    """Finite and within ``MAX_ABS_WEIGHT``: a NaN, an infinity or a weight of 3e38 would
    load and evaluate to a NaN loss without a word."""
    if not np.isfinite(flat).all():
        raise ModelFileError(f"model file array {name!r} holds non-finite values")
    if flat.size and float(np.abs(flat).max()) > MAX_ABS_WEIGHT:
        raise ModelFileError(
            f"model file array {name!r} holds a weight of magnitude "
            f"{float(np.abs(flat).max()):.3g}, above {MAX_ABS_WEIGHT:g}: no training run writes "
            "such a weight (they stay near 1), and it overflows float32 in evaluation; the "
            "file is forged or its run diverged"
        )


def save(path: Path, model: ModelFile) -> int:
    """Write ``model`` to ``path``; return its size in bytes."""
    data = dumps(model)
    Path(path).write_bytes(data)
    return len(data)


def load(path: Path) -> ModelFile:
    """Read and check a model file; :class:`ModelFileError` (also for an unreadable path)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    return loads(data)


def float32_bytes(arrays: ArrayRecord) -> int:
    """What the same arrays take as plain float32 values (the dense baseline for sizes)."""
    return 4 * sum(int(arrays[n].numpy().size) for n in arrays)
