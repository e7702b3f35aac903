"""The levers of the accuracy study, offered to every method alike (issue 16 §5): a step-size
schedule and compact replies. Known answers, and every party still agreeing."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from pemn_fl import messages as M
from pemn_fl import transport
from pemn_fl.config import COSINE_FLOOR, RunSettings, SettingsError
from pemn_fl.methods import names
from pemn_fl.methods.frames import evolving as E
from tests.harness import build_settings, first_round

SETTINGS = build_settings(dataset="synthetic", model="mlp", width=0.25, dense_width=0.25,
                       local_epochs=1, batch_size=64, num_server_rounds=5)  # fmt: skip

pytestmark = pytest.mark.usefixtures("flower_identity")


def test_the_cosine_schedule_decays_every_step_to_a_tenth() -> None:
    cosine = dataclasses.replace(SETTINGS, lr_schedule="cosine")
    assert cosine.scheduled(2.0, 1) == pytest.approx(2.0)
    assert cosine.scheduled(2.0, 3) == pytest.approx(2.0 * (COSINE_FLOOR + 0.9 * 0.5))
    assert cosine.scheduled(2.0, 5) == pytest.approx(2.0 * COSINE_FLOOR)
    assert [SETTINGS.scheduled(0.3, r) for r in (1, 3, 5)] == [0.3, 0.3, 0.3]  # exact
    with pytest.raises(SettingsError, match="lr-schedule='linear'"):
        RunSettings(lr_schedule="linear")


def test_the_evolving_noise_follows_the_schedule_on_every_party() -> None:

    cosine = dataclasses.replace(SETTINGS, lr_schedule="cosine")
    for r in (1, 5):
        plain, decayed = E.noise(SETTINGS, r), E.noise(cosine, r)
        factor = cosine.scheduled(1.0, r)
        for a, b in zip(plain, decayed, strict=True):
            assert b == pytest.approx(a * factor, rel=1e-6)


def _one_round(name: str, settings: RunSettings):  # noqa: ANN202
    """Round 1 of method ``name`` on 3 nodes, in-process: (replies, aggregate)."""
    side, replies, new = first_round(name, settings)
    assert side.strategy.rejected == 0
    return replies, new


@pytest.mark.parametrize("name", [n for n in names() if n != "fedavg"])
def test_compact_replies_carry_the_same_update_in_one_request_less(name: str) -> None:
    compact = dataclasses.replace(SETTINGS, compact_replies=True)
    split_replies, split_new = _one_round(name, SETTINGS)
    compact_replies, compact_new = _one_round(name, compact)
    for split, small in zip(split_replies, compact_replies, strict=True):
        assert set(small.content.keys()) == {M.UPDATE}
        assert set(split.content.keys()) == {M.UPDATE, M.METRICS}
        assert M.metrics_of(small)[M.NUM_EXAMPLES] == M.metrics_of(split)[M.NUM_EXAMPLES]
        payload = {k: v for k, v in small.content[M.UPDATE].items()
                   if k not in (M.NUM_EXAMPLES, M.TRAIN_LOSS)}  # fmt: skip
        assert payload == dict(split.content[M.UPDATE])  # the same update
        # One object (and its push-object request, ~1 KB of headers) less on the wire.
        saved = transport.uplink_wire_bytes(split) - transport.uplink_wire_bytes(small)
        assert 700 < saved < 2000, saved
    for a, b in zip(split_new.to_numpy_ndarrays(), compact_new.to_numpy_ndarrays(), strict=True):
        assert np.array_equal(a, b)  # the server aggregates exactly the same


def _frontier_dir(root, name: str, target: float, runs: dict[str, dict[int, tuple]],
                  budgets: list[dict]):  # noqa: ANN001, ANN202
    """A seeds-frontier directory as bench.accuracy_frontier lays it out: per method and seed a
    summary.json (best accuracy, wire bytes up/down), and frontier-seeds.json."""
    directory = root / name
    methods = {}
    for method, per_seed in runs.items():
        for seed, (best, up, down, *_) in per_seed.items():
            run = directory / "fresh" / f"{method}__lr=1" / f"seed-{seed}"
            run.mkdir(parents=True)
            entry = {"best_accuracy": best, "uplink_wire_bytes": up, "downlink_wire_bytes": down}
            (run / "summary.json").write_text(json.dumps({"methods": {method: entry}}))
        methods[method] = {
            "reached_target": sum(v[3] is not None for v in per_seed.values()),
            "seeds": len(per_seed),
            "bytes_to_target": {str(s): v[3] for s, v in per_seed.items()},
            "fewer_bytes_than_fedavg_to_target": {str(s): v[4] for s, v in per_seed.items()},
        }
    report = {"seeds": [1, 2], "target_accuracy": target, "methods": methods, "budgets": budgets}
    (directory / "frontier-seeds.json").write_text(json.dumps({"wire": report}))
    return directory


def test_a_lever_study_is_compared_seed_by_seed_with_its_baseline(tmp_path) -> None:  # noqa: ANN001
    """Known answers: the paired change, the reused method, the leaders among the study's
    methods only (a baseline-only method never leads), and a missing report is one line."""
    from bench import levers

    def budget(size: float, means: dict[str, tuple[float, int]]) -> dict:
        return {"budget_bytes": size,
                "methods": {m: {"mean": v, "trained_seeds": t} for m, (v, t) in means.items()}}

    base = _frontier_dir(tmp_path, "base", 0.90, {
        "fedavg": {1: (0.95, 50e6, 50e6, 40e6, None), 2: (0.93, 50e6, 50e6, 60e6, None)},
        "evolve": {1: (0.91, 2e6, 3e6, 4e6, 10.0), 2: (0.90, 2e6, 3e6, 5e6, 12.0)},
        "qsgd": {1: (0.99, 9e6, 9e6, 2e6, 20.0), 2: (0.99, 9e6, 9e6, 2e6, 30.0)},
    }, [budget(1e6, {"fedavg": (0.1, 0), "evolve": (0.5, 2), "qsgd": (0.1, 0)}),
        budget(1e7, {"fedavg": (0.1, 0), "evolve": (0.9, 2), "qsgd": (0.99, 2)})])
    study = _frontier_dir(tmp_path, "density", 0.90, {
        "evolve": {1: (0.93, 2e6, 4e6, 3e6, 13.0), 2: (0.89, 2e6, 4e6, None, None)},
    }, [budget(1e6, {"fedavg": (0.1, 0), "evolve": (0.6, 2)}),
        budget(1e7, {"fedavg": (0.1, 0), "evolve": (0.92, 2)})])
    fedavg_reused = study / "frontier-seeds.json"  # fedavg in the report, not among its runs
    report = json.loads(fedavg_reused.read_text())
    report["wire"]["methods"]["fedavg"] = json.loads((base / "frontier-seeds.json").read_text())[
        "wire"]["methods"]["fedavg"]
    fedavg_reused.write_text(json.dumps(report))

    text = levers.compare(base, study)
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| method")}
    assert "reused from the baseline" in rows["fedavg"]
    evolve = rows["evolve"].split(" | ")
    assert evolve[1] == "90.50 ± 0.71 → 91.00 ± 2.83"  # best accuracy, mean ± std
    assert evolve[2] == "0.50 ± 2.12"  # paired: +2 pt on seed 1, -1 pt on seed 2
    assert evolve[3] == "1/2" and evolve[4] == "2/2 → 1/2"
    assert evolve[5] == "4.50 → 3.00" and evolve[6] == "10.0–12.0x → 13.0x"
    assert evolve[7].rstrip(" |") == "5.00 ± 0.00 → 6.00 ± 0.00"
    assert "qsgd" not in rows  # not in the study
    # qsgd leads the baseline at 10 MB but is not in the study: evolve leads among fedavg, evolve
    assert "≤ 1 MB: evolve → evolve; ≤ 10 MB: evolve → evolve." in text
    assert levers.main(["--baseline", str(base), "--study", str(tmp_path / "none")]) == 2


def test_the_written_tables_name_the_command_that_rebuilds_them(tmp_path) -> None:  # noqa: ANN001
    """``--out`` heads the file with its command; running that command writes the same file
    again, the rule included (a header that dropped ``--rule window`` would rebuild the
    best-round tables instead: the windowed report below differs from the best-round one)."""
    import shlex

    from bench import levers

    base = _frontier_dir(tmp_path, "base", 0.90, {
        "fedavg": {1: (0.95, 50e6, 50e6, 40e6, None)},
        "evolve": {1: (0.91, 2e6, 3e6, 4e6, 10.0)}}, [])
    study = _frontier_dir(tmp_path, "density", 0.90, {
        "evolve": {1: (0.93, 2e6, 4e6, 3e6, 13.0)}}, [])
    for directory in (base, study):  # the windowed rule reads its own key: a lower target
        data = json.loads((directory / "frontier-seeds.json").read_text())
        data["wire_window"] = {**data["wire"], "target_accuracy": 0.85}
        (directory / "frontier-seeds.json").write_text(json.dumps(data))
    assert levers.compare(base, study, "best") != levers.compare(base, study, "window")
    for rule in ("best", "window"):
        out = tmp_path / f"levers-{rule}.md"
        argv = ["--baseline", str(base), "--study", str(study), "--out", str(out)]
        assert levers.main(argv + (["--rule", rule] if rule != "best" else [])) == 0
        first, _, rest = out.read_text().partition("\n\n")
        assert first.startswith("Command: `python -m bench.levers ")
        assert rest == levers.compare(base, study, rule)
        rebuilt = shlex.split(first.removeprefix("Command: `").removesuffix("`"))[3:]
        out.unlink()
        assert levers.main(rebuilt) == 0 and out.read_text() == f"{first}\n\n{rest}"
