"""``python -m pemn_fl describe``: the numbers a teacher shows first, and its errors."""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess

from pemn_fl.describe import KEYS, anatomy
from pemn_fl.prototype import PrototypeSpec


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pemn_fl describe args``, in this process (its ``main``): fast."""
    from pemn_fl.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["describe", *args])
        except SystemExit as exc:  # argparse's own refusals
            code = int(exc.code or 0)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def test_json_has_exactly_the_documented_keys() -> None:
    proc = _run("--model", "conv2", "--dataset", "digits", "--prototype", "rp:1e-3",
                "--seed", "7", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert tuple(info) == KEYS
    assert len(info["fingerprint"]) == 16


def test_numbers_follow_from_the_model() -> None:
    info = anatomy("mlp", "digits", PrototypeSpec(seed=1, strategy="rp:1e-2"))
    # mlp on 8x8 digits: 64*256 + 256*256 + 256*10 masked weights, no biases, non-affine BN.
    masked = 64 * 256 + 256 * 256 + 256 * 10
    assert info["masked_params"] == masked == info["params"]
    assert info["prototype_values"] == math.ceil(0.01 * 256 * 256)
    assert info["prototype_float_bytes"] == 4 * info["prototype_values"]
    # Packed mask: one bit per masked weight, plus a small header.
    assert masked / 8 < info["mask_bytes"] < masked / 8 + 64
    assert info["spec_bytes"] == len(PrototypeSpec(seed=1, strategy="rp:1e-2").to_json())


def test_same_spec_same_fingerprint_other_seed_other_fingerprint() -> None:
    a = anatomy("mlp", "digits", PrototypeSpec(seed=1))["fingerprint"]
    b = anatomy("mlp", "digits", PrototypeSpec(seed=1))["fingerprint"]
    c = anatomy("mlp", "digits", PrototypeSpec(seed=2))["fingerprint"]
    assert a == b != c


def test_table_mentions_every_quantity() -> None:
    proc = _run("--model", "mlp", "--prototype", "mp")
    assert proc.returncode == 0, proc.stderr
    for word in ("parameters", "masked", "prototype values", "float32", "spec", "mask",
                 "fingerprint"):  # fmt: skip
        assert word in proc.stdout


def test_bad_inputs_give_one_clear_line() -> None:
    for args, needle in (
        (("--prototype", "rp:0"), "rp:0"),
        (("--prototype", "rp:abc"), "rp:abc"),
        (("--model", "nope"), "unknown model"),
        (("--dataset", "nope"), "nope"),
    ):
        proc = _run(*args)
        assert proc.returncode == 2, args
        assert needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_model_is_described_without_its_datasets_files(tmp_path) -> None:  # noqa: ANN001
    """Only the input shape is needed: an empty --data-dir is never read (issue 18)."""
    spec = PrototypeSpec(seed=0, strategy="dense", init="signed-constant", rescale=True)
    info = anatomy("conv2", "fashion-mnist", spec, width=0.25, data_dir=str(tmp_path))
    assert info["params"] == 207_888  # conv2 at width 0.25 on 1x28x28 inputs (README)
    cifar = anatomy("conv2", "cifar10", spec, width=0.25, data_dir=str(tmp_path / "none"))
    assert cifar["params"] > info["params"]  # 3x32x32 inputs: a larger first layer


def test_describe_has_the_size_bound_of_simulations_run() -> None:
    """Finding 3 of issue 25: ``describe --width 1e12`` allocated until torch raised a
    RuntimeError (a traceback) and ``--width 50`` asked 1.3 GB for one tensor; ``run``
    refused both. Now the same bound (``config.check_model_size``) gives the same line,
    before anything is built. (Not run against the old code, which would build the model:
    by construction its describe path has no such message.)"""
    import pytest

    from pemn_fl.config import RunSettings, SettingsError

    for width in ("1e12", "50", "nan", "0", "-1"):
        proc = _run("--model", "conv4", "--dataset", "digits", "--width", width)
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr
        with pytest.raises(SettingsError) as caught:  # what simulations.run says of it
            RunSettings(model="conv4", dataset="digits", width=float(width))
        assert proc.stderr.strip() == f"error: {caught.value}"
    assert "pemn-fl builds at most 1e+08" in _run("--width", "50").stderr
