"""``model.pemn``: lossless round trip, masks at one bit, and every bad file a ModelFileError."""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
        (lambda h: h["arrays"][0].update(shape=[10_000, 10_000]), "exceeds the file"),
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


# -- a model file is data: bounded headers, bounded weights, no code (issue 25) ----------------


def _real_model(methods: str = "pemn", method: str = "pemn") -> ModelFile:
    """A model file the settings really rebuild (its fingerprint matches), cheaply: the
    method's initial arrays on synthetic data. ``methods`` is what its run config lists."""
    from pemn_fl.config import RunSettings
    from pemn_fl.export import export_model, fingerprint_of
    from pemn_fl.methods import get, settings_from
    from pemn_fl.sampling import RoundSampler

    settings = settings_from({"methods": "pemn", "dataset": "synthetic", "model": "mlp",
                              "width": 0.25})  # fmt: skip
    side = get("pemn").server(settings, RoundSampler({0: 0}, 1.0, settings.seed))
    model = export_model(get("pemn"), settings, fingerprint_of(side), side.initial, 0, 0.5)
    config = {**model.run_config, "methods": methods}
    assert isinstance(settings, RunSettings)
    return ModelFile(method=method, run_config=config, fingerprint=model.fingerprint,
                     arrays=model.arrays, final_round=0, accuracy=0.5,
                     info=model.info)  # fmt: skip


def _cli(*args: str) -> tuple[int, str]:
    """``python -m pemn_fl ARGS`` in this process: (exit code, stderr)."""
    import contextlib
    import io

    from pemn_fl.__main__ import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(args))
    return code, err.getvalue()


EVIL = '''from pathlib import Path
Path({marker!r}).write_text("a model file ran code")
'''


@pytest.mark.parametrize("where", ["method", "run_config"])
def test_a_model_file_naming_a_module_never_imports_it(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 1 of issue 25: a .pemn naming ``evil.m`` with an evil.py in the working
    directory executed it (through the file's ``method``, or its run config's ``methods``,
    which ``settings_from`` imported). Now the method comes from the built-in registry only,
    and the run config is reduced to that method: nothing the file names is imported."""
    marker = tmp_path / "executed"
    (tmp_path / "evil.py").write_text(EVIL.format(marker=str(marker)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as ``python -m`` puts the cwd first
    for name in ("evil", "evil.m"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    if where == "method":
        model = _real_model(method="evil.m")
    else:  # a pemn model whose run listed a plug-in: evaluated without importing it
        model = _real_model(methods="pemn,evil.m")
    path = tmp_path / "model.pemn"
    path.write_bytes(dumps(model))
    code, err = _cli("evaluate", str(path))
    try:
        assert not marker.exists(), "the model file's module was imported"
        assert "evil" not in sys.modules
        if where == "method":
            assert code == 2 and err.count("error:") == 1 and "Traceback" not in err
            assert "not a built-in method" in err and "--method-module" in err
        else:
            assert code == 0, err
    finally:
        for name in ("evil", "evil.m"):
            sys.modules.pop(name, None)


PLUGIN = '''"""pemn under another name: a plug-in for the --method-module test."""
import dataclasses

from pemn_fl.methods import pemn

METHOD = dataclasses.replace(pemn.METHOD, name="pemnplug")
'''


def test_a_plugins_model_is_evaluated_only_with_the_module_the_user_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "plugpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "plug.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "model.pemn"
    path.write_bytes(dumps(_real_model(methods="plugpkg.plug", method="pemnplug")))
    try:
        code, err = _cli("evaluate", str(path))
        assert code == 2 and "'pemnplug', which is not a built-in method" in err
        assert "plugpkg.plug" not in sys.modules  # refused without importing anything
        assert _cli("evaluate", str(path), "--method-module", "plugpkg.plug") == (0, "")
        code, err = _cli("evaluate", str(path), "--method-module", "pemn")
        assert code == 2 and "give a plug-in's module path" in err
    finally:
        sys.modules.pop("plugpkg.plug", None)
        sys.modules.pop("plugpkg", None)


@pytest.mark.parametrize(
    "shape, words",
    [
        ([1] * 100_000, "has 100,000 dimensions; at most 8"),
        ([0, 2**39 * 5], "each dimension must be an integer in [0, 100,000,000]"),
        ([0, *[2**39] * 5], "each dimension must be an integer in [0, 100,000,000]"),
        ([0, 10**8, 10**8], "1e+16 values; a model pemn-fl builds has at most 100,000,000"),
        ([10**4, 10**4, 2], "2e+08 values"),
    ],
)
@pytest.mark.parametrize("array", [0, 2])  # a float array, an int64 scalar
def test_a_shape_numpy_cannot_hold_is_one_clear_error(
    shape: list[int], words: str, array: int, tmp_path: Path
) -> None:
    """Finding 3: a 100,000-dimension shape and a [0, 2**39 x 5] one (valid CRC) escaped
    ``loads`` as numpy's ValueError. Now every dimension count, dimension and product is
    bounded before numpy sees it, and the command says so in one line."""
    header, rest = _parts(dumps(_model(_mixed())))
    header["arrays"][array]["shape"] = shape
    data = _resealed(header, rest)
    with pytest.raises(ModelFileError) as caught:
        loads(data)
    assert words in str(caught.value)
    (tmp_path / "m.pemn").write_bytes(data)
    code, err = _cli("evaluate", str(tmp_path / "m.pemn"))
    assert code == 2 and err.count("error:") == 1 and words in err


@pytest.mark.parametrize("value", [3e38, -3e38, 2e6, np.finfo(np.float32).max])
def test_an_absurd_weight_is_refused_and_says_which_bound(value: float) -> None:
    """Finding 6: a weight of 3e38 loaded and evaluated to a NaN loss without a word."""
    arrays = _mixed()
    weights = arrays["fc1.weight"].numpy().copy()
    weights[1, 2] = value
    arrays["fc1.weight"] = Array(weights)
    with pytest.raises(ModelFileError, match=r"'fc1.weight' holds a weight of magnitude .*"
                       r"above 1e\+06"):  # fmt: skip
        loads(dumps(_model(arrays)))


def test_a_weight_at_the_bound_is_kept() -> None:
    from pemn_fl.modelfile import MAX_ABS_WEIGHT

    arrays = _mixed()
    weights = arrays["fc2.bias"].numpy().copy()
    weights[0] = -MAX_ABS_WEIGHT
    arrays["fc2.bias"] = Array(weights)
    assert loads(dumps(_model(arrays))).arrays["fc2.bias"].numpy()[0] == -MAX_ABS_WEIGHT


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda h: h.update(method=["pemn"]), "is not a method name"),
        (lambda h: h.update(method=""), "is not a method name"),
        (lambda h: h.update(final_round=float("inf")), "final round inf"),
        (lambda h: h.update(final_round=-3), "final round -3"),
        (lambda h: h.update(accuracy=float("nan")), "accuracy nan is not in [0, 1]"),
        (lambda h: h.update(info={"float32_bytes": "many"}), "float32_bytes many"),
        (lambda h: h.update(arrays=h["arrays"] * 1000), "lists 5,000 arrays"),
        (lambda h: h["arrays"][0].update(name="w" * 300), "is not valid"),
    ],
)
def test_every_header_field_is_typed_and_bounded(edit, words: str) -> None:  # noqa: ANN001
    header, rest = _parts(dumps(_model(_mixed())))
    edit(header)
    with pytest.raises(ModelFileError) as caught:
        loads(_resealed(header, rest))
    assert words in str(caught.value)


def test_a_deeply_nested_header_is_a_model_file_error() -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    body = MAGIC + struct.pack("<I", len(nested)) + nested + struct.pack("<I", 0)
    with pytest.raises(ModelFileError, match="header is not valid"):
        loads(body + struct.pack("<I", zlib.crc32(body)))


_DIM = st.one_of(st.integers(0, 4), st.integers(-2, 2**64), st.sampled_from([2**31, 2**39 * 5]),
                 st.floats(allow_nan=True), st.text(max_size=3), st.none())  # fmt: skip
_ENTRY = st.fixed_dictionaries({
    "name": st.one_of(st.text(max_size=8), st.integers()),
    "dtype": st.sampled_from(["float32", "float64", "float16", "int64", "uint8", "bool", "object",
                              "<U3", "V8"]),
    "coding": st.sampled_from(["mask", "raw", "zip"]),
    "shape": st.one_of(st.lists(_DIM, max_size=6), st.lists(st.just(1), min_size=60,
                                                            max_size=70), st.integers()),
})  # fmt: skip
_SCALAR = st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=6), st.none(),
                    st.lists(st.integers(), max_size=2))  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=st.lists(_ENTRY, max_size=5),
    method=_SCALAR | st.sampled_from(["pemn", "evil.m", "os.system"]),
    final_round=_SCALAR,
    accuracy=_SCALAR,
    info=st.one_of(st.fixed_dictionaries({"float32_bytes": _SCALAR}), st.just({})),
    payload=st.binary(max_size=64),
    raw=st.binary(max_size=256),
    floats=st.lists(st.floats(width=32), max_size=16),
)
def test_fuzz_crafted_headers_with_valid_crcs_give_a_bounded_model_or_a_model_file_error(
    entries: list[dict[str, object]], method: object, final_round: object, accuracy: object,
    info: dict[str, object], payload: bytes, raw: bytes, floats: list[float],
) -> None:  # fmt: skip
    """Headers a forger writes (any JSON types, sizes and shapes), sealed with a valid CRC
    so parsing goes all the way: ``loads`` returns a model within every bound or raises
    ``ModelFileError``; nothing else escapes (no numpy ValueError, no OverflowError, no
    MemoryError) and no module is imported."""
    from pemn_fl.modelfile import MAX_ABS_WEIGHT, MAX_DIMS, MAX_PARAMETERS

    header = {"format": 1, "method": method, "run_config": {"methods": "evil.m"},
              "fingerprint": "0123456789abcdef", "final_round": final_round,
              "accuracy": accuracy, "arrays": entries, "info": info}  # fmt: skip
    tail = np.array(floats, dtype=np.float32).tobytes() + raw
    rest = struct.pack("<I", len(payload)) + payload + tail
    before = set(sys.modules)
    try:
        model = loads(_resealed(header, rest))
    except ModelFileError:
        return
    finally:
        assert not {m for m in set(sys.modules) - before if m.startswith(("evil", "os.sys"))}
    assert isinstance(model.method, str) and model.final_round >= 0 and 0 <= model.accuracy <= 1
    for name in model.arrays:
        a = model.arrays[name].numpy()
        assert a.ndim <= MAX_DIMS and a.size <= MAX_PARAMETERS
        if a.dtype.kind == "f":
            assert np.isfinite(a).all() and (a.size == 0 or np.abs(a).max() <= MAX_ABS_WEIGHT)
