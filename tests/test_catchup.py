"""``bench.catchup``: the catch-up share of each method's downlink, read from the runs'
clients.csv, and which runs of a folder it reads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench import catchup as C
from pemn_fl import clientlog

ROOT = Path(__file__).resolve().parents[1]
UNIFORM = ROOT / "results" / "levers" / "digits-half" / "uniform"  # 10 of 20 clients a round


def test_missed_rounds_count_the_rounds_a_partition_sat_out_per_method() -> None:
    clients = pd.DataFrame({"method": ["a"] * 4 + ["b"] * 2, "round": [1, 1, 3, 4, 2, 5],
                            "partition": [0, 1, 0, 1, 0, 0]})  # fmt: skip
    # a: partition 0 in rounds 1, 3 (missed 0, then 1); partition 1 in 1, 4 (0, then 2).
    # b: partition 0 first sampled in round 2 (missed round 1), then 5 (missed 3, 4).
    assert C.missed_rounds(clients).sort_index().tolist() == [0, 0, 1, 2, 1, 2]


def test_the_table_sums_every_fresh_seed_run() -> None:
    runs = C.runs_of(UNIFORM)
    assert runs and all(r.is_relative_to(UNIFORM / "fresh") for r in runs)
    frame = pd.concat([clientlog.read(r / "clients.csv") for r in runs], ignore_index=True)
    out = C.table([UNIFORM])
    qsgd = frame[frame["method"] == "qsgd"]
    assert out.loc["qsgd", "client_rounds"] == len(qsgd)
    assert out.loc["qsgd", "catchup_share_of_payload"] == pytest.approx(
        qsgd["down_catchup_payload_bytes"].sum() / qsgd["down_payload_bytes"].sum())
    assert out.loc["fedavg", "catchup_mb"] == 0  # FedAvg sends the whole model: no catch-up
    # 10 of 20 clients a round: a sampled client missed about 1/f - 1 = 1 round
    assert 0.8 < out.loc["qsgd", "missed_rounds"] < 1.1


def test_runs_beside_a_seeds_frontiers_fresh_runs_are_not_read(tmp_path: Path) -> None:
    """A converged frontier also holds neighbour runs (other configurations on the tuning
    seed): only ``fresh/`` counts, or FedAvg's client-rounds doubled."""
    frontier = tmp_path / "frontier"
    shutil.copytree(UNIFORM / "fresh", frontier / "fresh")
    seed = next((frontier / "fresh").glob("fedavg__*/seed-1"))
    shutil.copytree(seed, frontier / "neighbours" / "runs" / "fedavg__dense-lr=9")
    before = C.table([UNIFORM]).loc["fedavg", "client_rounds"]
    assert C.table([frontier]).loc["fedavg", "client_rounds"] == before
    # any other folder: every run under it (run directories given by hand)
    assert len(C.runs_of(frontier / "neighbours")) == 1
