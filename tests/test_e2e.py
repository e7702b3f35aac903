"""End to end through Flower's real Simulation Engine (Ray): 3 clients x 2 rounds, synthetic data.

Real engine runs take a minute or more each on the 2-core machine (Ray start-up, actors), so
this module is in the slow suite (``pytest -m slow``, which CI runs); the quick checks of the
same commands' refusals are in ``test_bad_input.py``. One simulation is shared by every
assertion that can read it (module-scoped fixtures).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pemn_fl.report import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def simulate(out: Path, *options: str) -> Path:
    """``python -m simulations.run`` on 3 clients, 2 rounds of synthetic data, into ``out``."""
    cmd = [
        sys.executable, "-m", "simulations.run", "--clients", "3", "--rounds", "2",
        "--dataset", "synthetic", "--model", "mlp", "--width", "0.5", *options,
        "--quiet", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate(tmp_path_factory.mktemp("run"), "--dense-width", "0.5",
                    "--methods", "pemn,fedavg")  # fmt: skip


def test_outputs_exist(run_dir: Path) -> None:
    """Every output is what its reader needs, not merely a non-empty file."""
    import struct

    from pemn_fl.modelfile import load

    rounds = pd.read_csv(run_dir / "rounds.csv")
    assert list(rounds.columns) == COLUMNS
    assert list(zip(rounds["method"], rounds["round"], strict=True)) == [
        (m, r) for m in ("pemn", "fedavg") for r in range(3)]  # fmt: skip
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["methods"]) == ["pemn", "fedavg"] and summary["headline_method"] == "pemn"
    png = (run_dir / "bandwidth_accuracy.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == (9 * 120, 6 * 120)  # figsize x dpi
    config = json.loads((run_dir / "config.json").read_text())
    assert config["clients"] == 3 and config["settings"]["methods"] == "pemn,fedavg"
    assert config["settings"]["num-server-rounds"] == 2
    for method in ("pemn", "fedavg"):
        model = load(run_dir / "models" / f"{method}.pemn")
        assert model.method == method and model.final_round == 2
        final = rounds[(rounds["method"] == method) & (rounds["round"] == 2)]["accuracy"]
        assert model.accuracy == pytest.approx(float(final.iloc[0]))


def test_clients_file_holds_every_sampled_client_and_adds_up_to_the_rounds(
    run_dir: Path,
) -> None:
    """clients.csv: a row per sampled client and round, whose wire bytes sum to the round's
    (rounds.csv rounds the float total once; the rows round each call to the cent)."""
    from pemn_fl import clientlog

    clients = clientlog.read(run_dir / "clients.csv")
    rounds = pd.read_csv(run_dir / "rounds.csv")
    trained = rounds[rounds["round"] > 0]
    assert len(clients) == int(trained["clients_sampled"].sum())
    for (method, r), part in clients.groupby(["method", "round"]):
        row = trained[(trained["method"] == method) & (trained["round"] == r)].iloc[0]
        assert len(part) == row["clients_sampled"] and (part["status"] == "replied").all()
        down = part["down_request_bytes"].sum() + part["down_response_bytes"].sum()
        up = part["up_request_bytes"].sum() + part["up_response_bytes"].sum()
        assert abs(down - row["downlink_wire_bytes"]) <= 2 * len(part)
        assert abs(up - row["uplink_wire_bytes"]) <= 2 * len(part)
        assert part["down_payload_bytes"].sum() == row["downlink_payload_bytes"]
        assert (part["train_flops"] > 0).all()
    assert (rounds["server_flops"] > 0).all()


def test_csv_schema_and_rows(run_dir: Path) -> None:
    rounds = pd.read_csv(run_dir / "rounds.csv")
    assert list(rounds.columns) == COLUMNS
    for method in ("pemn", "fedavg"):
        part = rounds[rounds["method"] == method]
        assert list(part["round"]) == [0, 1, 2]
        trained = part[part["round"] > 0]
        assert (trained["clients_sampled"] == 3).all()
        assert (trained["clients_replied"] == 3).all()
        assert (trained["clients_rejected"] == 0).all()
        assert part["accuracy"].between(0, 1).all()


def test_cumulative_bytes_is_running_sum(run_dir: Path) -> None:
    rounds = pd.read_csv(run_dir / "rounds.csv")
    for _, part in rounds.groupby("method"):
        running = (part["uplink_bytes"] + part["downlink_bytes"]).cumsum()
        assert list(part["cumulative_bytes"]) == list(running)


def test_positive_bytes_both_directions(run_dir: Path) -> None:
    trained = pd.read_csv(run_dir / "rounds.csv").query("round > 0")
    for col in ("uplink_payload_bytes", "downlink_payload_bytes", "uplink_bytes", "downlink_bytes"):
        assert (trained[col] > 0).all(), col
    # Message bytes wrap the payload: never smaller than it.
    assert (trained["uplink_bytes"] > trained["uplink_payload_bytes"]).all()
    assert (trained["downlink_bytes"] > trained["downlink_payload_bytes"]).all()


def test_pemn_uplink_at_most_a_25th_of_fedavg(run_dir: Path) -> None:
    trained = pd.read_csv(run_dir / "rounds.csv").query("round > 0")
    up = trained.groupby("method")["uplink_payload_bytes"].sum()
    assert up["pemn"] * 25 <= up["fedavg"], up.to_dict()


def test_summary_and_config(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    for method in ("pemn", "fedavg"):
        m = summary["methods"][method]
        for key in ("final_accuracy", "best_accuracy", "uplink_bytes", "downlink_bytes",
                    "total_bytes", "bytes_to_target"):  # fmt: skip
            assert key in m
        # total_bytes is at the summary's byte level (wire by default): measured larger
        # than the message bytes (HTTP headers, one request per object).
        assert summary["bytes_level"] == "wire"
        assert m["total_bytes"] == m["uplink_wire_bytes"] + m["downlink_wire_bytes"]
        assert m["uplink_wire_bytes"] > m["uplink_bytes"] > m["uplink_payload_bytes"] > 0
        assert m["downlink_wire_bytes"] > m["downlink_bytes"]
    assert summary["wire"]["source"].startswith("transport model")
    fedavg_best = summary["methods"]["fedavg"]["best_accuracy"]
    assert summary["target_accuracy"] == pytest.approx(fedavg_best - 0.01)
    assert "ratio_vs_fedavg" in summary
    config = json.loads((run_dir / "config.json").read_text())
    assert config["settings"]["dataset"] == "synthetic"
    assert config["versions"]["flwr"].startswith("1.42")


def test_results_unchanged_by_the_method_registry(run_dir: Path) -> None:
    """Same seed, same run as before pemn and fedavg moved to ``pemn_fl/methods``.

    ``tests/data/e2e_before_registry.csv`` was written by this very command at the commit
    before the move. Message bytes may differ by a byte or two (Flower's random ids are
    varints), so compare everything the methods decide: accuracies, losses, payload bytes.
    """
    before = pd.read_csv(ROOT / "tests" / "data" / "e2e_before_registry.csv")
    after = pd.read_csv(run_dir / "rounds.csv")
    cols = ["method", "round", "clients_sampled", "clients_replied", "clients_rejected",
            "uplink_payload_bytes", "downlink_payload_bytes"]  # fmt: skip
    pd.testing.assert_frame_equal(before[cols], after[cols])
    for col in ("accuracy", "loss"):
        assert list(before[col]) == pytest.approx(list(after[col]), abs=1e-6), col


@pytest.fixture(scope="module")
def variants_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The accuracy-study variants, each through the real engine: 3 clients, 2 rounds."""
    methods = "evolve,evolve_dither,evolve_lattice,evolve_momentum,pemn_wide,fedpm,fedpm_bayes"
    return simulate(tmp_path_factory.mktemp("variants"), "--fraction", "0.67",
                    "--methods", methods)  # fmt: skip


def test_every_variant_runs_end_to_end_and_sends_bytes_both_ways(variants_dir: Path) -> None:
    rounds = pd.read_csv(variants_dir / "rounds.csv")
    assert list(rounds["method"].unique()) == ["evolve", "evolve_dither", "evolve_lattice",
                                               "evolve_momentum", "pemn_wide", "fedpm",
                                               "fedpm_bayes"]  # fmt: skip
    for method, part in rounds.groupby("method"):
        assert list(part["round"]) == [0, 1, 2], method
        trained = part[part["round"] > 0]
        assert (trained["clients_replied"] == 2).all() and (trained["clients_rejected"] == 0).all()
        for col in ("uplink_payload_bytes", "downlink_payload_bytes"):
            assert (trained[col] > 0).all(), (method, col)
        # Round 2 carries the round-1 update down; the uplink is a coded mask (<= ~1 bpp).
        assert (trained["uplink_bits_per_param"] < 1.05).all(), method
        if method != "evolve_lattice":  # the lattice takes a few rounds to add up to a step
            assert part["accuracy"].iloc[-1] > part["accuracy"].iloc[0], method


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compressed-update baselines through the real engine: 3 clients, 2 rounds."""
    return simulate(tmp_path_factory.mktemp("zoo"), "--fraction", "0.67",
                    "--methods", "signsgd,qsgd,topk", "--bits", "4")  # fmt: skip


def test_every_baseline_runs_end_to_end_and_compresses_both_ways(zoo_dir: Path) -> None:
    rounds = pd.read_csv(zoo_dir / "rounds.csv")
    assert list(rounds["method"].unique()) == ["signsgd", "qsgd", "topk"]
    for method, part in rounds.groupby("method"):
        assert list(part["round"]) == [0, 1, 2], method
        trained = part[part["round"] > 0]
        assert (trained["clients_replied"] == 2).all() and (trained["clients_rejected"] == 0).all()
        assert (trained["uplink_payload_bytes"] > 0).all(), method
        # Round 1 needs no downlink payload (W_0 comes from the seed); round 2 carries a step.
        assert part.loc[part["round"] == 2, "downlink_payload_bytes"].iloc[0] > 0, method
        for col in ("uplink_bits_per_param", "downlink_bits_per_param"):
            assert (trained[col] < 5).all(), (method, col)  # far below FedAvg's 32


def test_frontier_report_from_real_runs(run_dir: Path, tmp_path: Path) -> None:
    """``bench.accuracy_frontier --report-only`` on runs laid out as the sweep writes them."""
    from bench import accuracy_frontier as F

    rounds = pd.read_csv(run_dir / "rounds.csv")
    for method, config in (("pemn", {"lr": 0.3}), ("fedavg", {"dense-lr": 0.05})):
        d = F.run_dir(tmp_path, method, config)
        d.mkdir(parents=True)
        rounds[rounds["method"] == method].to_csv(d / "rounds.csv", index=False)
        (d / "summary.json").write_text((run_dir / "summary.json").read_text())
    assert F.main(["--methods", "pemn,fedavg", "--report-only", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "frontier.csv").set_index("method")
    fed = rounds[rounds["method"] == "fedavg"]
    assert table.loc["fedavg", "best_accuracy"] == pytest.approx(fed["accuracy"].max())
    target = fed["accuracy"].max() - 0.01
    first = fed[fed["accuracy"] >= target]["cumulative_bytes"].iloc[0]
    assert table.loc["fedavg", "bytes_to_fedavg_best_minus_1pt"] == first
    assert table.loc["fedavg", "tuned"] == "dense-lr=0.05"
    assert (tmp_path / "frontier.png").stat().st_size > 0
    assert "| fedavg | dense-lr=0.05 |" in (tmp_path / "frontier.md").read_text()


TOY = '''"""A method from outside the package: FedAvg's client and server under another name,
with an option of its own."""

from pemn_fl import networks as N
from pemn_fl.methods import fedavg
from pemn_fl.methods.base import Method
from pemn_fl.methods.frames.dense import DENSE_LR, DENSE_OPTIONS
from pemn_fl.options import Option

LR_SCALE = Option("toy-lr-scale", 1.0, "multiplies FedAvg's dense-lr", low=0, low_open=True)


def client_step(msg, context, settings):
    scaled = settings[DENSE_LR] * settings[LR_SCALE]
    return fedavg.client_step(msg, context, settings.with_options(**{"dense-lr": scaled}))


def server(settings, sampler):
    side = fedavg.server(settings, sampler)
    side.strategy.message_type = "train.toy"
    return side


METHOD = Method(name="toy", label="Toy (FedAvg, renamed)", client_step=client_step,
                server=server, num_params=fedavg.METHOD.num_params,
                options=(*DENSE_OPTIONS, LR_SCALE))
'''


def test_a_method_added_through_the_registry_alone_runs_end_to_end(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    ) -> None:  # fmt: skip
    """One module, no other file touched: its option is a flag (in --help), checked, passed
    to every client through the real engine and recorded in config.json."""
    package = tmp_path / "pemn_toy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "toy.py").write_text(TOY)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    helped = subprocess.run([sys.executable, "-m", "simulations.run", "--methods",
                             "pemn_toy.toy", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert helped.returncode == 0 and "--toy-lr-scale" in helped.stdout
    assert "multiplies FedAvg's dense-lr [toy]" in " ".join(helped.stdout.split())
    bad = subprocess.run([sys.executable, "-m", "simulations.run", "--methods", "pemn_toy.toy",
                          "--toy-lr-scale", "-1", "--out", str(tmp_path / "bad")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "toy-lr-scale=-1.0: must be in (0, inf)" in bad.stderr
    out = simulate(tmp_path / "out", "--dense-width", "0.5", "--methods", "pemn_toy.toy,fedavg",
                   "--toy-lr-scale", "1")  # fmt: skip
    assert json.loads((out / "config.json").read_text())["settings"]["toy-lr-scale"] == 1.0
    rounds = pd.read_csv(out / "rounds.csv")
    assert list(rounds["method"].unique()) == ["toy", "fedavg"]
    toy, fed = (rounds[rounds["method"] == m].reset_index(drop=True) for m in ("toy", "fedavg"))
    assert (toy.loc[1:, "uplink_payload_bytes"] > 0).all()
    # The same client step and strategy as FedAvg at scale 1: the same accuracies.
    assert list(toy["accuracy"]) == pytest.approx(list(fed["accuracy"]), abs=1e-9)


def test_fedavg_payload_is_exactly_its_float32_weights(run_dir: Path) -> None:
    """Byte accounting itself: FedAvg's payload = messages x parameters x 4, both ways."""
    from pemn_fl import networks as N
    from pemn_fl.models import count_params
    from tests.harness import build_settings

    params = count_params(N.dense_model(build_settings(dataset="synthetic", model="mlp",
                                                    dense_width=0.5)))  # fmt: skip
    rounds = pd.read_csv(run_dir / "rounds.csv")
    fed = rounds[(rounds["method"] == "fedavg") & (rounds["round"] > 0)]
    assert (fed["uplink_payload_bytes"] == fed["clients_replied"] * params * 4).all()
    assert (fed["downlink_payload_bytes"] == fed["clients_sampled"] * params * 4).all()
    # Message bytes = payload + Flower's framing (metadata, record names, metrics): a little more.
    assert (fed["uplink_bytes"] > fed["uplink_payload_bytes"]).all()
    assert (fed["uplink_bytes"] < 1.01 * fed["uplink_payload_bytes"] + 2000).all()


def test_the_same_job_twice_gives_the_same_results(run_dir: Path, tmp_path: Path) -> None:
    again = simulate(tmp_path / "again", "--dense-width", "0.5", "--methods", "pemn,fedavg")
    a, b = (pd.read_csv(d / "rounds.csv") for d in (run_dir, again))
    for col in ("method", "round", "clients_replied", "clients_rejected", "clients_failed",
                "uplink_payload_bytes", "downlink_payload_bytes", "accuracy", "loss"):
        assert list(a[col]) == list(b[col]), col
    # Message bytes may differ by a few bytes a message: Flower's random node and run ids
    # are serialised as varints.
    assert (abs(a["uplink_bytes"] - b["uplink_bytes"]) <= 4 * a["clients_sampled"] + 4).all()


def test_injected_faults_are_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    out = simulate(tmp_path / "faulty", "--dense-width", "0.5", "--methods", "pemn,fedavg",
                   "--rounds", "4", "--drop-rate", "0.3", "--corrupt-rate", "0.3")  # fmt: skip
    rounds = pd.read_csv(out / "rounds.csv")
    trained = rounds[rounds["round"] > 0]
    assert list(trained.groupby("method")["round"].max()) == [4, 4]  # every round ran
    assert trained["clients_failed"].sum() > 0  # drops: error replies, recorded as failed
    pemn = trained[trained["method"] == "pemn"]
    assert pemn["clients_rejected"].sum() > 0  # a flipped bit fails the codec's CRC
    counts = trained[["clients_replied", "clients_rejected", "clients_failed"]].sum(axis=1)
    assert (counts == trained["clients_sampled"]).all()


def test_stragglers_miss_the_deadline_and_nobody_else_does(tmp_path: Path) -> None:
    """Exactly the seeded stragglers fail: one asleep in a shared actor used to make the
    clients queued behind it miss the deadline too (issue 17: 0 of 4 replied)."""
    from pemn_fl import faults
    from pemn_fl.config import RunSettings

    deadline = 20.0
    out = simulate(tmp_path / "late", "--clients", "4", "--dense-width", "0.5",
                   "--methods", "pemn,fedavg", "--rounds", "3", "--straggler-rate", "0.3",
                   "--round-deadline", f"{deadline:g}")  # fmt: skip
    rounds = pd.read_csv(out / "rounds.csv")
    trained = rounds[rounds["round"] > 0]
    assert list(trained.groupby("method")["round"].max()) == [3, 3]
    settings = RunSettings(straggler_rate=0.3, round_deadline=deadline)
    for _, row in trained.iterrows():
        late = sum(faults.fault_of(settings, row["method"], pid, row["round"])[0] == "straggle"
                   for pid in range(4))  # fmt: skip
        assert row["clients_failed"] == late, row.to_dict()
        assert row["clients_replied"] == 4 - late, row.to_dict()
    assert trained["clients_failed"].sum() > 0  # the seeded draws did make stragglers
    # A straggler's late reply is never used, and a PEMN-FL node that straggled can still
    # decode what it is sent next (no rejections follow).
    assert trained["clients_rejected"].sum() == 0
    # A late reply costs no bytes: a round whose every client straggled has no uplink.
    everyone = trained[trained["clients_failed"] == 4]
    assert not everyone.empty and (everyone["uplink_bytes"] == 0).all()


def test_a_deadline_shorter_than_a_clients_work_is_one_clear_error(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "simulations.run", "--clients", "2", "--rounds", "2",
           "--dataset", "synthetic", "--model", "mlp", "--width", "0.5", "--methods", "pemn",
           "--round-deadline", "0.0001", "--quiet", "--out", str(tmp_path / "short")]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "raise --round-deadline" in errors[0], proc.stderr[-2000:]
    assert "fingerprint" not in errors[0]


@pytest.mark.parametrize("which", ["run_dir", "variants_dir", "zoo_dir"])
def test_every_run_writes_a_model_that_evaluates_to_its_final_accuracy(
    which: str, request: pytest.FixtureRequest
) -> None:
    from pemn_fl.export import evaluate_model
    from pemn_fl.modelfile import load

    out = request.getfixturevalue(which)
    rounds = pd.read_csv(out / "rounds.csv")
    for method, part in rounds.groupby("method"):
        model = load(out / "models" / f"{method}.pemn")
        assert model.method == method and model.final_round == 2
        _, acc = evaluate_model(model)
        assert acc == model.accuracy, method  # the very same network, not a close one
        assert acc == pytest.approx(part["accuracy"].iloc[-1], abs=1e-12), method


def test_export_and_evaluate_commands(run_dir: Path, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pemn_fl", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)  # fmt: skip

    target = tmp_path / "model.pemn"
    done = cli("export", str(run_dir), "--out", str(target))
    assert done.returncode == 0, done.stderr
    size = target.stat().st_size
    # The default is the run's subject (PEMN-FL), not FedAvg: a mask, ~1 bit per weight.
    assert "pemn after round 2" in done.stdout and f"{size:,} bytes" in done.stdout
    from pemn_fl.modelfile import load

    dense = int(load(target).info["float32_bytes"])
    assert f"against {dense:,} bytes" in done.stdout
    assert size < dense / 10  # 1 bit per weight plus a ~1 KB header, against 32 bits
    final = pd.read_csv(run_dir / "rounds.csv").query("method == 'pemn'")["accuracy"].iloc[-1]
    done = cli("evaluate", str(target), "--dataset", "synthetic")
    assert done.returncode == 0, done.stderr
    assert f"test accuracy {final:.4f}" in done.stdout
    # A corrupted file, a foreign file and the wrong dataset: one clear line, exit 2.
    broken = tmp_path / "broken.pemn"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x10
    broken.write_bytes(bytes(data))
    for args, words in [((str(broken),), "CRC32"),
                        ((str(run_dir / "summary.json"),), "not a pemn-fl model file"),
                        ((str(target), "--dataset", "digits"), "not digits"),
                        ((str(tmp_path / "missing.pemn"),), "cannot read")]:  # fmt: skip
        done = cli("evaluate", *args)
        assert done.returncode == 2 and words in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    done = cli("export", str(tmp_path), "--out", str(tmp_path / "x.pemn"))
    assert done.returncode == 2 and "holds no models" in done.stderr


def test_time_model_in_the_loop_equals_the_post_hoc_replay_and_slow_links_straggle(
    tmp_path: Path,
) -> None:
    """--link in the loop: rounds.csv gains time and energy that ``simulations.timeline``
    recomputes exactly from the record; with a deadline, the NB-IoT clients (26 kbps down)
    cannot fetch FedAvg's weights in time and are the failed clients, nobody else; PEMN-FL's
    masks reach everyone in time."""
    from pemn_fl import profiles
    from pemn_fl.timing import TIME_COLUMNS

    out = simulate(tmp_path / "timed", "--dense-width", "0.5", "--methods", "pemn,fedavg",
                   "--link", "lte:0.5,3g:0.5")  # fmt: skip
    rounds = pd.read_csv(out / "rounds.csv")
    assert list(rounds.columns) == COLUMNS + TIME_COLUMNS
    assert (rounds[rounds["round"] > 0]["time_s"] > 0).all()
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["time"]["methods"]) == {"pemn", "fedavg"}
    replay = subprocess.run([sys.executable, "-m", "simulations.timeline", str(out), "--link",
                             "lte:0.5,3g:0.5", "--out", str(tmp_path / "post")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    post = pd.read_csv(tmp_path / "post" / "timeline.csv")
    assert (post[TIME_COLUMNS].to_numpy() == rounds[TIME_COLUMNS].to_numpy()).all()

    slow = simulate(tmp_path / "slow", "--dense-width", "0.5", "--methods", "pemn,fedavg",
                    "--clients", "4", "--link", "fibre:0.5,nbiot:0.5",
                    "--round-deadline", "30")  # fmt: skip
    rounds = pd.read_csv(slow / "rounds.csv")
    fed = rounds[(rounds["method"] == "fedavg") & (rounds["round"] > 0)]
    nbiot = list(profiles.population("fibre:0.5,nbiot:0.5", "phone", range(4), 0)
                 .links.values()).count(profiles.links()["nbiot"])  # fmt: skip
    assert nbiot == 2
    # FedAvg's 100+ KB instruction takes > 30 s at 26 kbps: both NB-IoT clients are late.
    assert (fed["clients_failed"] == nbiot).all() and (fed["clients_counted"] == 2).all()
    pemn = rounds[(rounds["method"] == "pemn") & (rounds["round"] > 0)]
    assert (pemn["clients_failed"] == 0).all()  # small masks arrive in time
