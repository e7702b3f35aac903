"""Bad input to the command-line tools: one clear ``error:`` line naming what was wrong,
exit status 2, no traceback, and nothing started or written. (The fault-injection issue's
probe found each of these giving a traceback or a silently wrong run.)

The commands run in-process (their ``main``, as ``python -m`` runs it: an exception that
escaped would fail the test with its traceback), which keeps this file fast; the last two
tests run real processes, to show what a user's terminal shows.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import another_run_holds

ROOT = Path(__file__).resolve().parents[1]
MAINS = {"simulations.run": "simulations.run", "simulations.plot": "simulations.plot",
         "simulations.deploy": "simulations.deploy", "pemn_fl": "pemn_fl.__main__"}  # fmt: skip


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m argv[0] argv[1:]``, in this process: its exit status and output."""
    main = importlib.import_module(MAINS[argv[0]]).main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv[1:]))
        except SystemExit as exc:  # argparse's own refusals
            code = int(exc.code or 0)
    return subprocess.CompletedProcess(list(argv), code, out.getvalue(), err.getvalue())


def _clear(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, proc.stdout[-500:] + proc.stderr[-1500:]
    assert proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)


@pytest.mark.parametrize(("option", "value", "word"), [
    ("--seed", "4294967296", "seed"),
    ("--margin", "nan", "margin"),
    ("--width", "1e-9", "width"),
    ("--width", "inf", "width"),
    ("--bits", "3", "bits"),
    ("--methods", "pemn,pemn", "only once"),
    ("--methods", "no_such_pkg.method", "cannot import"),
])  # fmt: skip
def test_simulator_rejects_bad_settings(option: str, value: str, word: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _clear(_run("simulations.run", option, value, "--rounds", "1", "--out", str(out)), word)
    assert not out.exists()  # rejected before anything was written


def test_simulator_rejects_an_unusable_out(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    _clear(_run("simulations.run", "--out", str(a_file)), "not a directory")
    _clear(_run("simulations.run", "--out", "/proc/pemn-fl-cannot-write"), "cannot write")
    full = tmp_path / "full"
    full.mkdir()
    (full / "rounds.csv").write_text("precious")
    _clear(_run("simulations.run", "--out", str(full)), "--overwrite")
    assert (full / "rounds.csv").read_text() == "precious" and a_file.read_text() == "keep me"


@pytest.mark.parametrize(("argv", "word"), [
    (["--width", "inf"], "width"), (["--width", "nan"], "width"), (["--keep", "1"], "keep"),
])  # fmt: skip
def test_describe_rejects_bad_settings(argv: list[str], word: str) -> None:
    _clear(_run("pemn_fl", "describe", "--model", "mlp", *argv), word)


@pytest.mark.parametrize(("content", "word"), [
    (b"", "not a rounds.csv"),
    (b"\x7fELF\x02\x01\x01\x00\xd0\xff\xfe binary", "not a rounds.csv"),
    (b"method,round\n", "lacks the column"),
    (b"method,round,cumulative_bytes,accuracy,uplink_bytes,downlink_bytes\npemn,0,0,",
     "no complete round"),
    (b"method,round,cumulative_bytes,accuracy\npemn,0,0,0.1\n", "lacks the column"),
])  # fmt: skip
def test_plot_rejects_a_bad_rounds_file(content: bytes, word: str, tmp_path: Path) -> None:
    (tmp_path / "rounds.csv").write_bytes(content)
    _clear(_run("simulations.plot", str(tmp_path), "--out", str(tmp_path / "x.png")), word)
    assert not (tmp_path / "x.png").exists()


def test_deploy_resume_of_nothing_and_a_bad_bytes_level_are_clear_errors(tmp_path: Path) -> None:
    _clear(_run("simulations.deploy", "--resume", str(tmp_path)), "no readable config.json")
    proc = _run("simulations.run", "--bytes", "bits", "--out", str(tmp_path / "o"))
    _clear(proc, "bytes-level='bits'", "use one of payload, message, wire")


@pytest.mark.parametrize(("argv", "words"), [
    (["--cpus-per-client", "nan"], ["--cpus-per-client nan", "finite"]),
    (["--cpus-per-client", "inf"], ["--cpus-per-client inf"]),
    (["--cpus-per-client", "100"], ["--cpus-per-client 100.0", "this machine has"]),
    (["--dither-levels", "1000000"], ["dither-levels=1000000", "[1, 4096]"]),
    (["--noise-scale", "1e300"], ["noise-scale=1e+300", "(0, 100]"]),
    (["--data-dir", "/tmp"], ["data-dir='/tmp'", "digits needs no files"]),
    (["--clients", "4", "--byzantine", "0.45"], ["4 clients that is 2 attackers"]),
    (["--model", "conv2", "--width", "2000"], ["width=2000.0", "at most 1e+08"]),
])  # fmt: skip
def test_values_that_used_to_get_through_are_one_error_line(
    argv: list[str], words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """In-process (the same ``main`` as the command): each was a traceback, a hang or a
    silently wrong run before (issue 17)."""
    from simulations.run import main

    out = tmp_path / "out"
    assert main([*argv, "--rounds", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for word in words:
        assert word in err[0], (word, err[0])
    assert not out.exists()


def test_plot_to_an_unwritable_place_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from simulations.plot import main

    (tmp_path / "rounds.csv").write_text("method,round,cumulative_bytes,accuracy,uplink_bytes,"
                                         "downlink_bytes\npemn,0,0,0.1,0,0\n"
                                         "pemn,1,10,0.5,4,6\n")  # fmt: skip
    assert main([str(tmp_path), "--out", "/proc/pemn-fl/x.png"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --out /proc/pemn-fl/x.png: cannot write")


def test_a_second_run_on_the_same_out_is_refused_while_the_first_holds_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Two runs at once on one --out used to mix their files silently (issue 17)."""
    from simulations.run import main

    out = tmp_path / "shared"
    out.mkdir()
    with another_run_holds(out) as first:
        for argv in (["--out", str(out), "--overwrite"], ["--resume", str(out)]):
            code = main([*argv, "--rounds", "1"] if "--out" in argv else argv)
            err = capsys.readouterr().err.strip().splitlines()
            # --resume takes the lock first (a second run may be writing there), so it is
            # refused for the same reason as a fresh run.
            assert code == 2 and len(err) == 1, err
            assert "another run (pid" in err[0] and str(first.pid) in err[0], err
    assert main(["--out", str(out), "--overwrite", "--rounds", "1", "--width", "inf"]) == 2
    capsys.readouterr()
    from simulations.outdir import lock_out

    lock_out(out).close()  # the first run gone, its lock went with it


def test_bad_option_is_one_clear_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "simulations.run", "--prototype", "rp:abc"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "rp:abc" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_bad_plugin_method_is_one_clear_line(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "simulations.run", "--methods", "no_such_pkg.method"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "cannot import module no_such_pkg.method" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plot_of_a_run_with_a_damaged_summary_draws_without_the_target(tmp_path: Path) -> None:
    """summary.json only gives the target line: damaged, the figure is drawn without it."""
    (tmp_path / "rounds.csv").write_text("method,round,cumulative_bytes,accuracy,uplink_bytes,"
                                         "downlink_bytes\npemn,0,0,0.1,0,0\n"
                                         "pemn,1,10,0.5,4,6\n")  # fmt: skip
    (tmp_path / "summary.json").write_bytes(b'{"target_accuracy": 0.')
    proc = _run("simulations.plot", str(tmp_path), "--out", str(tmp_path / "x.png"))
    assert proc.returncode == 0 and (tmp_path / "x.png").stat().st_size > 1000
    assert "no target line" in proc.stderr and "Traceback" not in proc.stderr


# -- simulations.plot: damaged rounds files and unequal seed groups (issue 25) -------------


def _rounds(accuracies: list[float], methods: tuple[str, ...] = ("pemn", "fedavg")) -> str:
    """A whole rounds.csv of this version (every column), one row per method and round."""
    from pemn_fl.report import COLUMNS

    lines = [",".join(COLUMNS)]
    for method in methods:
        for r, acc in enumerate(accuracies):
            row = {c: "0" for c in COLUMNS} | {"method": method, "round": str(r),
                                               "accuracy": str(acc)}  # fmt: skip
            for c in ("uplink_bytes", "downlink_bytes", "uplink_wire_bytes",
                      "downlink_wire_bytes", "cumulative_bytes"):  # fmt: skip
                row[c] = str(100 * r)
            lines.append(",".join(row[c] for c in COLUMNS))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("edit", "words"), [
    (lambda lines: lines[:4] + [lines[0]] + lines[4:], ["line 5", "round='round' is not a number",
                                                        "repeated header"]),
    (lambda lines: lines[:3] + [lines[3].replace(",0.5,", ",nan,")] + lines[4:],
     ["line 4", "accuracy='nan' is not a number"]),
    (lambda lines: lines[:3] + [lines[3].replace(",0.5,", ",,")] + lines[4:],
     ["line 4", "accuracy='' is not a number"]),
    (lambda lines: lines[:3] + [lines[3].replace(",0.5,", ",1.7,")] + lines[4:],
     ["line 4", "accuracy must be in [0, 1]", "accuracy=1.7"]),
])  # fmt: skip
def test_plot_reads_a_damaged_rounds_file_as_one_error_line(
    edit, words: list[str], tmp_path: Path  # noqa: ANN001
) -> None:
    """Finding 3 of issue 25: a rounds.csv with a repeated header line was a TypeError
    traceback (the wire columns stayed text and ``cumsum`` failed); a ``nan`` or empty
    accuracy mid-file was dropped without a word, an accuracy of 1.7 drawn."""
    lines = _rounds([0.1, 0.4, 0.5, 0.6]).splitlines()
    (tmp_path / "rounds.csv").write_text("\n".join(edit(lines)) + "\n")
    _clear(_run("simulations.plot", str(tmp_path), "--out", str(tmp_path / "x.png")), *words)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("cut", [
    "fedavg,4,3,",  # cut before a needed value
    ",".join(["fedavg", "4", *["0"] * 13, "0.7", "1"]),  # every value plotted, no newline
])  # fmt: skip
def test_plot_drops_a_torn_last_line_and_says_so(cut: str, tmp_path: Path) -> None:
    """The one damage that is expected (a run killed mid-write): drawn without that line,
    and one ``note:`` line says so (a rounds.csv cut in half was drawn without a word,
    also when the cut fell after every value the plot needs)."""
    text = _rounds([0.1, 0.4, 0.5, 0.6])
    (tmp_path / "rounds.csv").write_text(text + cut)
    proc = _run("simulations.plot", str(tmp_path), "--out", str(tmp_path / "x.png"))
    assert proc.returncode == 0 and (tmp_path / "x.png").stat().st_size > 0
    assert proc.stderr == (f"note: {tmp_path / 'rounds.csv'}, line 10: cut short (a run "
                           "killed mid-write?); drawn without it\n")  # fmt: skip


def _group(tmp_path: Path, seeds: tuple[int, ...] = (1, 2, 3)) -> Path:
    """A finished ``--seeds`` group: its config.json, and one run per seed with its own."""
    import json

    group = tmp_path / "group"
    group.mkdir()
    (group / "config.json").write_text(json.dumps({"seeds": list(seeds),
                                                   "settings": {"seed": 0}}))  # fmt: skip
    for seed in seeds:
        run = group / f"seed-{seed}"
        run.mkdir()
        (run / "rounds.csv").write_text(_rounds([0.1, 0.3 + seed / 100, 0.5, 0.6, 0.7]))
        (run / "config.json").write_text(json.dumps({"settings": {
            "seed": seed, "num-server-rounds": 4, "methods": "pemn,fedavg",
            "checkpoint-dir": str(run / "checkpoint")}}))  # fmt: skip
    return group


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(("damage", "words"), [
    (lambda g: (g / "seed-2" / "rounds.csv").unlink(),
     ["lists seeds 1, 2, 3 but seed 2 has no rounds.csv"]),
    (lambda g: _cut_in_half(g / "seed-3" / "rounds.csv"),
     ["seed 3 has no rounds of fedavg where seed 1 has rounds 0-4"]),
    (lambda g: (g / "seed-1" / "rounds.csv").write_text(_rounds([0.1, 0.3, 0.5]) + "pemn,3"),
     ["seed 2 has rounds 0-4 of fedavg where seed 1 has rounds 0-2"]),
    (lambda g: (g / "seed-2" / "config.json").write_text('{"settings": {"seed": 1}}'),
     ["seed-2/config.json says seed 1"]),
    (lambda g: (g / "seed-3" / "config.json").write_text(
        '{"settings": {"seed": 3, "num-server-rounds": 8}}'),
     ["seed 3 ran with num-server-rounds=8, seed 1 with 4"]),
])  # fmt: skip
def test_plot_refuses_a_seed_group_whose_members_differ(
    damage, words: list[str], tmp_path: Path  # noqa: ANN001
) -> None:
    """Finding 4 of issue 25: ``simulations.plot GROUP`` averaged a group with one seed's
    rounds.csv missing or cut in half without a word (n differed per method)."""
    group = _group(tmp_path)
    out = tmp_path / "bands.png"
    assert _run("simulations.plot", str(group), "--out", str(out)).returncode == 0
    out.unlink()
    damage(group)
    proc = _run("simulations.plot", str(group), "--out", str(out))
    _clear(proc, *words, "--resume", "draw its seeds as separate runs")
    assert proc.stderr.count("\n") == 1 and not out.exists()


def test_run_says_which_method_options_no_method_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule ``simulations.deploy`` now shares (issue 25): an option no method of the run
    reads is said in one ``note:`` line, once every check has passed (a refused run says
    only its error). ``execute`` is stubbed: nothing runs."""
    import simulations.fresh as F
    import simulations.run as R

    monkeypatch.setattr(F, "execute", lambda *args, **kwargs: 0)
    argv = ["--methods", "fedavg,pemn", "--bits", "4", "--noise-scale", "2", "--rounds", "1"]
    assert R.main([*argv, "--out", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().err == (
        "note: --noise-scale 2.0 (read by evolve, evolve_dither, evolve_lattice, "
        "evolve_momentum); --bits 4 (read by qsgd): no method of this run (fedavg,pemn) reads "
        "them, so the value changes nothing\n")  # fmt: skip
    assert R.main([*argv, "--out", str(tmp_path / "o")]) == 2  # now it holds files
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --out") and "note" not in err
