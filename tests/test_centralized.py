"""Tests for ``python -m simulations.centralized`` (PEMN's capacity experiment), on tiny data."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from pemn_fl.data import load_dataset
from pemn_fl.models import build_model, layer_shapes
from pemn_fl.prototype import PrototypeSpec, prototype_length
from simulations.centralized import COLUMNS, main

ARGS = ["--dataset", "synthetic", "--model", "mlp", "--width", "0.25", "--epochs", "1"]


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[dict[str, str]]]:
    out = tmp_path_factory.mktemp("capacity")
    assert main([*ARGS, "--strategies", "dense,rp:1e-2", "--out", str(out)]) == 0
    return (out, *read_rows(out / "synthetic-mlp.csv"))


def test_csv_has_the_columns_and_one_row_per_variant(run) -> None:
    _, columns, rows = run
    assert columns == list(COLUMNS)
    got = [(r["variant"], r["strategy"], r["rescale"]) for r in rows]
    assert got == [
        ("dense-trained", "dense-trained", "n/a"),
        ("mask/dense", "dense", "n/a"),
        ("mask/rp:1e-2/rescale", "rp:1e-2", "True"),
        ("mask/rp:1e-2/no-rescale", "rp:1e-2", "False"),
    ]
    for r in rows:
        assert 0.0 <= float(r["test_accuracy"]) <= float(r["best_test_accuracy"]) <= 1.0
        assert r["epochs"] == "1"
        assert float(r["train_seconds"]) >= 0.0


def test_prototype_values_and_compression_follow_the_storage_rule(run) -> None:
    _, _, rows = run
    data = load_dataset("synthetic")
    shapes = layer_shapes(build_model("mlp", data.input_shape, 10, width=0.25))
    numel = [s.numel for s in shapes]
    by_variant = {r["variant"]: r for r in rows}
    rp_values = max(1, math.ceil(0.01 * max(numel)))
    assert rp_values == prototype_length(PrototypeSpec(strategy="rp:1e-2"), shapes)
    for name in ("mask/rp:1e-2/rescale", "mask/rp:1e-2/no-rescale"):
        assert int(by_variant[name]["prototype_values"]) == rp_values
    assert int(by_variant["mask/dense"]["prototype_values"]) == sum(numel)
    for name in ("mask/dense", "mask/rp:1e-2/rescale"):
        r = by_variant[name]
        masked, values = int(r["masked_params"]), int(r["prototype_values"])
        assert masked == sum(numel)
        assert float(r["compression"]) == pytest.approx(
            masked * 32 / (values * 32 + masked), abs=0.006
        )
    assert float(by_variant["dense-trained"]["compression"]) == 1.0


def test_png_is_written(run) -> None:
    out, _, _ = run
    png = out / "synthetic-mlp.png"
    assert png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "bad",
    [
        ["--strategies", "rp:abc"],
        ["--strategies", "dense,dense"],
        ["--keep", "1.5"],
        ["--init", "zeros"],
        ["--model", "nope"],
        ["--epochs", "x"],
    ],
)
def test_bad_options_exit_2_with_one_error_line(bad, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*ARGS, *bad, "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "Traceback" not in err[0]
    assert not list(tmp_path.iterdir())  # nothing written
