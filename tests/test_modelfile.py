"""``model.pemn``: lossless round trip, masks at one bit, and every bad file a ModelFileError."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from pemn_fl.modelfile import MAGIC, ModelFile, ModelFileError, dumps, loads, model_fingerprint


def _model(arrays: ArrayRecord) -> ModelFile:
    return ModelFile(method="pemn", run_config={"dataset": "digits", "seed": 3},
                     fingerprint="0123456789abcdef", arrays=arrays, final_round=7,
                     accuracy=0.875, info={"float32_bytes": 123})  # fmt: skip


def _mixed() -> ArrayRecord:
    rng = np.random.default_rng(0)
    return ArrayRecord({
        "fc1.weight": Array(rng.standard_normal((30, 20)).astype(np.float32)),
        "mask.0": Array((rng.random((40, 10)) < 0.5).astype(np.uint8)),
        "bn.num_batches_tracked": Array(np.array(12, dtype=np.int64)),
        "probs.1": Array((rng.random(77) < 0.3).astype(np.float32)),
        "fc2.bias": Array(rng.standard_normal(5).astype(np.float64)),
    })  # fmt: skip


def test_round_trip_keeps_names_order_dtypes_shapes_and_values() -> None:
    model = _model(_mixed())
    back = loads(dumps(model))
    assert (back.method, back.run_config, back.fingerprint) == ("pemn", model.run_config,
                                                               model.fingerprint)  # fmt: skip
    assert (back.final_round, back.accuracy, back.info) == (7, 0.875, {"float32_bytes": 123})
    assert list(back.arrays) == list(model.arrays)
    for name in model.arrays:
        a, b = model.arrays[name].numpy(), back.arrays[name].numpy()
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_a_mask_costs_one_bit_per_entry_and_floats_their_width() -> None:
    rng = np.random.default_rng(1)
    mask = ArrayRecord([(rng.random(80_000) < 0.5).astype(np.uint8)])
    floats = ArrayRecord([rng.standard_normal(80_000).astype(np.float32)])
    overhead = len(dumps(_model(ArrayRecord([np.zeros(3, np.float32) + 0.5]))))
    assert len(dumps(_model(mask))) <= overhead + 80_000 // 8 + 64
    assert len(dumps(_model(floats))) >= 4 * 80_000


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda d: d[: len(d) // 2], "CRC32"),
        (lambda d: d[:-1], "CRC32"),
        (lambda d: b"GIF89a" + d[6:], "not a pemn-fl model file"),
        (lambda d: b"", "not a pemn-fl model file"),
        (lambda d: d[:7] + b"\x09" + d[8:], "format 9 is not supported"),
    ],
)
def test_a_damaged_or_foreign_file_is_a_clear_error(mutate, words: str) -> None:  # noqa: ANN001
    data = dumps(_model(_mixed()))
    with pytest.raises(ModelFileError, match=words):
        loads(mutate(data))


def _resealed(header: dict[str, object], rest: bytes) -> bytes:
    """A file whose CRC is right but whose header lies (a forged or buggy writer)."""
    raw = json.dumps(header).encode()
    body = MAGIC + struct.pack("<I", len(raw)) + raw + rest
    return body + struct.pack("<I", zlib.crc32(body))


def _parts(data: bytes) -> tuple[dict[str, object], bytes]:
    (n,) = struct.unpack("<I", data[8:12])
    return json.loads(data[12 : 12 + n]), data[12 + n : -4]


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda h: h["arrays"][0].update(shape=[2**39, 2**39]), "exceeds the file"),
        (lambda h: h["arrays"][0].update(shape=[-1]), "has shape"),
        (lambda h: h["arrays"][0].update(dtype="object"), "is not valid"),
        (lambda h: h["arrays"][1].update(shape=[41, 10]), "masks do not decode"),
        (lambda h: h.pop("method"), "header is not valid"),
        (lambda h: h["arrays"][2].update(shape=[]) or h["arrays"][0].update(shape=[30, 19]),
         "trailing bytes"),
    ],
)
def test_a_header_that_lies_is_refused_before_any_allocation(edit, words: str) -> None:  # noqa: ANN001
    header, rest = _parts(dumps(_model(_mixed())))
    edit(header)
    with pytest.raises(ModelFileError, match=words):
        loads(_resealed(header, rest))


def test_fuzz_ten_thousand_mutants_give_a_model_or_a_model_file_error() -> None:
    """Random byte flips, cuts and inserts, with the CRC recomputed so parsing goes deep."""
    data = dumps(_model(_mixed()))
    rng = np.random.default_rng(2024)
    parsed = 0
    for _ in range(10_000):
        body = bytearray(data[:-4])
        kind = rng.integers(3)
        at = int(rng.integers(len(body)))
        if kind == 0:
            body[at] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            del body[at : at + int(rng.integers(1, 16))]
        else:
            body[at:at] = rng.bytes(int(rng.integers(1, 16)))
        mutant = bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
        try:
            loads(mutant)
            parsed += 1
        except ModelFileError:
            pass
    assert parsed < 10_000  # most mutants are refused; the ones that parse are well-formed


def test_fingerprint_tells_prototypes_apart() -> None:
    w = {"a": np.arange(6, dtype=np.float32)}
    same = model_fingerprint(w, [np.ones(3, np.uint8)])
    assert same == model_fingerprint({"a": np.arange(6, dtype=np.float32)}, [np.ones(3, np.uint8)])
    assert same != model_fingerprint({"a": np.arange(6, dtype=np.float32) * 2},
                                     [np.ones(3, np.uint8)])  # fmt: skip
    assert same != model_fingerprint(w, [np.zeros(3, np.uint8)])
    assert len(same) == 16 and int(same, 16) >= 0


def test_non_finite_weights_with_a_valid_crc_are_refused() -> None:
    arrays = _mixed()
    weights = arrays["fc1.weight"].numpy().copy()
    weights[3, 4] = np.nan
    arrays["fc1.weight"] = Array(weights)
    with pytest.raises(ModelFileError, match="'fc1.weight' holds non-finite values"):
        loads(dumps(_model(arrays)))


def test_a_header_asking_for_a_huge_model_is_refused_before_building_it() -> None:
    """width=2000 in a file with a valid CRC used to ask torch for a terabyte."""
    from pemn_fl.config import RunSettings
    from pemn_fl.export import rebuild

    config = RunSettings(dataset="synthetic", model="conv2", width=0.25).to_run_config()
    model = ModelFile(method="pemn", run_config={**config, "width": 2000.0},
                      fingerprint="0123456789abcdef", arrays=_mixed(), final_round=1,
                      accuracy=0.5)  # fmt: skip
    with pytest.raises(ModelFileError, match="width=2000.0: a conv2 that wide has 1.46e.12"):
        rebuild(loads(dumps(model)))


def test_an_exported_model_keeps_local_paths_out() -> None:
    from pemn_fl.config import RunSettings
    from pemn_fl.export import LOCAL_PATHS, export_model
    from pemn_fl.methods import get

    settings = RunSettings(dataset="fashion-mnist", data_dir="/home/me/secret-data",
                           checkpoint_dir="/home/me/run/checkpoint")  # fmt: skip
    arrays = ArrayRecord({"mask.0": Array(np.ones(8, dtype=np.uint8))})
    data = dumps(export_model(get("fedavg"), settings, "0123456789abcdef", arrays, 3, 0.5))
    assert b"/home/me" not in data
    header, _ = _parts(data)
    assert all(header["run_config"][key] == "" for key in LOCAL_PATHS)
