"""``simulations.compression`` on synthetic data: measured storage, matched budgets, a figure."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from simulations.compression import main, matched_k, sparse_size


def test_matched_k_is_the_largest_that_fits() -> None:
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal(500).astype(np.float32), rng.standard_normal(300)]
    order = np.argsort(-np.abs(np.concatenate(weights)))

    def size(n: int) -> int:
        flat = np.zeros(800, dtype=bool)
        flat[order[:n]] = True
        values, index = sparse_size(weights, [flat[:500], flat[500:]])
        assert values == 4 * n  # the surviving values really are float32
        return values + index

    for budget in (40, 400, 1200, 4000):
        k = matched_k(order, weights, budget)
        assert size(k) <= budget and (k == 800 or size(k + 1) > budget), budget


def test_a_small_run_writes_matched_points_and_a_figure(tmp_path: Path) -> None:
    code = main(["--dataset", "synthetic", "--model", "mlp", "--width", "0.5", "--epochs", "1",
                 "--finetune-epochs", "1", "--train-subset", "400", "--ratios", "1e-1,1e-3",
                 "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    with (tmp_path / "synthetic-mlp.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    methods = [r["method"] for r in rows]
    assert methods.count("pemn") == 2 and methods.count("dense") == 1
    assert methods.count("magnitude-pruning") == 2 and methods.count("random-pruning") == 2
    pemn = {r["setting"]: r for r in rows if r["method"] == "pemn"}
    total = int(pemn["rp:1e-1"]["total_weights"])
    for r in rows:
        assert int(r["storage_bytes"]) == int(r["value_bytes"]) + int(r["index_bytes"])
        assert 0.0 <= float(r["test_accuracy"]) <= 1.0
    for setting, point in pemn.items():
        # A 1-bit mask (plus a small codec header) and the prototype's float32 vector.
        assert total // 8 <= int(point["index_bytes"]) <= total // 8 + 64
        assert int(point["value_bytes"]) % 4 == 0
        for r in rows:
            if r["method"].endswith("pruning") and r["setting"].startswith(setting + " "):
                # Pruning gets the same storage: at most the PEMN point's bytes, and within
                # one more surviving weight (value + its position) of it.
                gap = int(point["storage_bytes"]) - int(r["storage_bytes"])
                assert 0 <= gap <= 16, (setting, r["method"], gap)
    dense = next(r for r in rows if r["method"] == "dense")
    assert int(dense["storage_bytes"]) == 4 * total
    assert (tmp_path / "synthetic-mlp.png").stat().st_size > 0


@pytest.mark.parametrize("args, words", [
    (["--ratios", "zero"], "rp"),
    (["--epochs", "0"], "--epochs"),
    (["--dataset", "nope"], "nope"),
])  # fmt: skip
def test_bad_input_is_one_clear_line(args: list[str], words: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert main([*args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and words in err and "Traceback" not in err
