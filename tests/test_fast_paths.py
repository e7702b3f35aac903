"""What only the slow suite used to cover, in the default suite (issue 25, item 2).

Seed propagation in a ``--seeds`` group, a straggler's lateness and delay in the ClientApp,
"every client late" with faults on, and a second ``--resume`` of a directory another run
holds: each through the real code path, without starting an engine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from flwr.app import ConfigRecord
from flwr.common.constant import SUPERLINK_NODE_ID

from pemn_fl import faults
from pemn_fl.accounting import Traffic
from pemn_fl.client_app import build_client_app
from pemn_fl.report import COLUMNS
from pemn_fl.server_app import empty_round_problem
from tests.harness import FIRST_NODE, another_run_holds, build_settings, context, stamp

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("flower_identity")


def test_each_seed_of_a_group_runs_with_its_own_seed(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``--seeds 3,1,2``: each seed's run gets its settings with that seed, in that order,
    into ``seed-<s>/`` (a mutant passing the group's seed on to every run survived)."""
    from simulations import fresh as F
    from simulations import run as R

    seen: list[tuple[int, Path]] = []

    def execute(settings, engine, out, resume, quiet) -> int:  # noqa: ANN001
        seen.append((settings.seed, out))
        row = dict.fromkeys(COLUMNS, 0)
        rows = [{**row, "method": m, "round": r, "accuracy": 0.5, "loss": 1.0}
                for m in settings.method_list for r in (0, 1)]  # fmt: skip
        pd.DataFrame(rows, columns=COLUMNS).to_csv(out / "rounds.csv", index=False)
        (out / "summary.json").write_text("{}")
        return 0

    monkeypatch.setattr(F, "execute", execute)
    monkeypatch.setattr(F, "check_data", lambda settings, clients: None)
    out = tmp_path / "group"
    assert R.main(["--clients", "4", "--rounds", "1", "--seeds", "3,1,2", "--quiet",
                   "--out", str(out)]) == 0  # fmt: skip
    assert [s for s, _ in seen] == [3, 1, 2]
    for seed, run in seen:
        assert run == out / f"seed-{seed}"
        assert json.loads((run / "config.json").read_text())["settings"]["seed"] == seed
    assert json.loads((out / "config.json").read_text())["seeds"] == [3, 1, 2]


def _train_message(settings_values: dict[str, object]):  # noqa: ANN202
    """Round 1's training message of FedAvg to partition 0, as its strategy builds it."""
    from pemn_fl.methods import get
    from pemn_fl.sampling import RoundSampler

    settings = build_settings(**settings_values)
    method = get("fedavg")
    side = method.server(settings, RoundSampler({0: FIRST_NODE, 1: FIRST_NODE + 1}, 1.0, 0))
    (msg, _) = side.strategy.configure_train(1, side.initial, ConfigRecord(), None)
    return stamp(msg, SUPERLINK_NODE_ID), settings


@pytest.mark.parametrize(("straggler_rate", "late"), [(1.0, True), (0.0, False)])
def test_a_straggler_answers_late_and_a_punctual_client_does_not(straggler_rate: float,
                                                                 late: bool) -> None:
    values = {"methods": "fedavg", "min_nodes": 2, "straggler_rate": straggler_rate,
              "round_deadline": 30.0, "local_epochs": 1}  # fmt: skip
    msg, settings = _train_message(values)
    app = build_client_app(settings)  # the simulator's: deadlines on own work
    reply = app(msg, context(0, 2))
    assert faults.is_late(reply) is late
    if late:  # an injected straggler, said as such, and no sleep in a shared actor
        assert reply.error.code == faults.STRAGGLED and "straggler" in reply.error.reason


def test_with_a_link_only_injected_stragglers_are_late_on_the_client() -> None:
    """``--link``: the server's time model judges lateness; the client's own CPU time is no
    longer the rule (a deadline of 1 ms would otherwise make every client late)."""
    values = {"methods": "fedavg", "min_nodes": 2, "round_deadline": 0.001, "local_epochs": 1,
              "link": "lte"}  # fmt: skip
    msg, settings = _train_message(values)
    reply = build_client_app(settings)(msg, context(0, 2))
    assert not reply.has_error()
    without = build_settings(**{**values, "link": ""})
    reply = build_client_app(without)(msg, context(0, 2))
    assert faults.is_late(reply) and reply.error.code == faults.LATE


def test_every_client_late_on_its_own_work_is_an_error_even_with_faults_on() -> None:
    settings = build_settings(methods="fedavg", min_nodes=4, drop_rate=0.2, round_deadline=5.0)
    traffic = Traffic(messages_down=2)
    traffic.late = [(11, "its own work took 9.00 s, past the 5 s round deadline"),
                    (12, "its own work took 8.00 s, past the 5 s round deadline")]
    problem = empty_round_problem(settings, 3, traffic, rejected=0)
    assert problem is not None and "raise --round-deadline" in problem
    # Lost to the injected faults alone, an empty round is no error: the run goes on.
    assert empty_round_problem(settings, 3, Traffic(messages_down=2), rejected=0) is None
    stragglers = Traffic(messages_down=2)
    stragglers.late = [(11, "an injected straggler (--straggler-rate)")]
    assert empty_round_problem(build_settings(methods="fedavg", min_nodes=4,
                                              straggler_rate=0.5, round_deadline=5.0),
                               3, stragglers, rejected=0) is None  # fmt: skip


def test_a_second_resume_of_a_directory_another_run_holds_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tests.test_damaged_state import _run_dir

    out = _run_dir(tmp_path)
    with another_run_holds(out):
        from simulations.run import main

        assert main(["--resume", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "another run (pid" in err[0], err
