"""The reliability probe: bad values, damaged files, and every fault with every method.

``python -m bench.reliability [--out results/reliability] [--skip-faults]``

What a new user does to the simulator, tried systematically (issue 17's probe, wider):

1. **Bad values.** Every option of ``python -m simulations.run`` (the shared settings and every
   method's own, from their declarations) with values of the wrong kind for its type (not a
   number, NaN, infinities, negative, zero, huge, fractional for an integer, an unknown
   choice). Each is judged by the command's own check, before any run starts: a clean
   refusal is exit status 2 with one line naming the option (argparse's usage line beside its
   ``error:`` line counts as clean); an accepted value is listed, to be judged valid or not.
2. **Damaged files.** A real finished run (3 clients, 2 rounds, ``pemn,evolve_dither,fedavg``),
   then every file a command reads back (config.json, rounds.csv, the server and client
   checkpoints for ``--resume``; rounds.csv and summary.json for ``simulations.plot``; a
   model file for ``pemn_fl evaluate``), each damaged four ways (emptied, cut in half, one
   byte flipped, replaced by garbage) in a fresh copy of the run. A clean outcome is one
   ``error:`` line and exit status 2, or exit 0 where the damage cannot be told from data (a
   flipped digit in a csv: listed).
3. **Issue 25's cases**, on the same reference run, each with the outcome it must have
   (refused in one clean ``error:`` line; accepted; or accepted with one ``note:`` line):
   crafted model files with valid CRCs (a method naming a module, with that module in the
   working directory: it must not run; a plug-in in the run's ``methods``; shapes numpy
   cannot hold; a weight of 3e38; a NaN accuracy), deleted checkpoints and impossible
   rounds.csv values on ``--resume`` (and the untouched run, which must resume), damaged seed
   groups for ``simulations.plot`` (and the intact group), ``simulations.deploy`` options it
   cannot apply (in-process, with the deployment stubbed: nothing starts), method options no
   method reads, and ``describe`` widths past the size bound. A **silent acceptance** is a
   case that must be refused or said and exits 0 without a word (or runs the module).
4. **Faults x methods.** Every registered method in one real simulation per fault
   (``--drop-rate``, ``--corrupt-rate``, ``--straggler-rate``, ``--byzantine`` for the
   methods that define an attack), 4 clients, 3 rounds, synthetic data: the run must end
   with exit 0, every method must have every round, and every round must count each sampled
   client as replied, rejected or failed.

Writes ``<out>/values.csv``, ``files.csv``, ``cases.csv``, ``faults.csv`` and ``README.md``
(the counts and every non-clean case).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BAD = {
    float: ["nan", "inf", "-inf", "-1", "0", "1e300", "abc"],
    int: ["-1", "0", "2.5", "99999999999", "abc"],
    str: ["", "nonsense"],
}
SKIP = {"--out", "--resume", "--seeds", "--ray-address", "--data-dir", "--methods", "--help"}


def validate(argv: list[str]) -> tuple[int, str]:
    """What ``simulations.run`` says of ``argv`` before it starts anything: (code, stderr)."""
    from pemn_fl.checkpoint import CheckpointError
    from pemn_fl.config import SettingsError
    from pemn_fl.data import DataError
    from pemn_fl.models import ModelError
    from pemn_fl.partition import PartitionError
    from simulations import fresh as F
    from simulations import run as R
    from simulations.engine import Engine

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            args = R.build_parser(R.plugin_specs(argv)).parse_args(argv)
            engine = Engine.from_args(args)
            engine.check()
            settings = R.settings_from_args(args)
            F.check_data(settings, engine.clients)
        except SystemExit as exc:  # argparse
            return int(exc.code or 0), err.getvalue()
        except (SettingsError, DataError, PartitionError, ModelError, CheckpointError) as exc:
            return 2, f"error: {exc}\n"
        except Exception as exc:  # noqa: BLE001 - the probe records any escape
            return 99, f"{type(exc).__name__}: {exc}"
    return 0, err.getvalue()


def clean(code: int, stderr: str) -> bool:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    usage_only = all(line.startswith(("usage:", " ")) or "error:" in line for line in lines)
    return code == 2 and len(errors) == 1 and usage_only and "Traceback" not in stderr


def probe_values() -> pd.DataFrame:
    from simulations.run import build_parser

    parser = build_parser()
    rows = []
    for action in parser._actions:  # noqa: SLF001 - the parser's own list of options
        flags = [f for f in action.option_strings if f.startswith("--")]
        if not flags or flags[0] in SKIP or action.nargs == 0:
            continue
        kind = action.type if action.type in (float, int) else str
        for value in BAD[kind]:
            argv = [flags[0], value] + ([] if flags[0] == "--rounds" else ["--rounds", "1"])
            code, stderr = validate(argv)
            rows.append({"option": flags[0], "value": value, "code": code,
                         "clean": clean(code, stderr), "accepted": code == 0,
                         "said": stderr.strip().splitlines()[-1][:160] if stderr.strip() else ""})
    return pd.DataFrame(rows)


# -- damaged files ------------------------------------------------------------------------
DAMAGES = {
    "emptied": lambda b: b"",
    "cut in half": lambda b: b[: len(b) // 2],
    "one byte flipped": lambda b: b[: len(b) // 2] + bytes([b[len(b) // 2] ^ 0x55])
    + b[len(b) // 2 + 1 :] if b else b"\x55",
    "garbage": lambda b: bytes(range(256)) * 4,
}


def _command(argv: list[str]) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    return proc.returncode, proc.stderr


def reference_run(work: Path) -> Path:
    """The finished run every file case damages a copy of (3 clients, 2 rounds)."""
    run = work / "run"
    code, stderr = _command(["simulations.run", "--clients", "3", "--rounds", "2", "--dataset",
                             "synthetic", "--model", "mlp", "--width", "0.5", "--methods",
                             "pemn,evolve_dither,fedavg", "--dense-width", "0.5", "--quiet",
                             "--out", str(run)])  # fmt: skip
    if code != 0:
        raise SystemExit(f"error: the probe's reference run failed:\n{stderr[-2000:]}")
    return run


def probe_files(work: Path, run: Path) -> pd.DataFrame:
    state = next((run / "checkpoint" / "clients").glob("p0/*.state"))
    targets = {  # file -> the command that reads it back
        "config.json": ["simulations.run", "--resume"],
        "rounds.csv": ["simulations.run", "--resume"],
        "checkpoint/server.pkl": ["simulations.run", "--resume"],
        str(state.relative_to(run)): ["simulations.run", "--resume"],
        "clients.csv": ["simulations.run", "--resume"],
        "rounds.csv (plot)": ["simulations.plot"],
        "summary.json": ["simulations.plot"],
        "models/pemn.pemn": ["pemn_fl", "evaluate"],
    }
    rows = []
    for name, command in targets.items():
        path = name.split(" ")[0]
        for damage, spoil in DAMAGES.items():
            copy = work / "copy"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(run, copy)
            target = copy / path
            target.write_bytes(spoil(target.read_bytes()))
            if command[0] == "pemn_fl":
                argv = [*command, str(target)]
            elif command[0] == "simulations.plot":
                argv = [*command, str(copy), "--out", str(copy / "x.png")]
            else:
                argv = [*command, str(copy)]
            code, stderr = _command(argv)
            rows.append({"file": name, "damage": damage, "code": code,
                         "clean": clean(code, stderr) or code == 0,
                         "accepted": code == 0, "traceback": "Traceback" in stderr,
                         "noted": _noted(stderr), "well_formed": _well_formed(path, target),
                         "said": stderr.strip().splitlines()[-1][:160] if stderr.strip() else ""})
    return pd.DataFrame(rows)


def _noted(stderr: str) -> bool:
    """The command said something of what it accepted: a ``note:`` line."""
    return any(line.startswith("note:") for line in stderr.splitlines())


def _well_formed(name: str, path: Path) -> bool:
    """A damaged file that is still a well-formed file of its kind, which no check can tell
    from a real one (a flipped byte that turns one letter of a method name into a digit):
    for a CSV, every line has the header's number of fields and every number parses."""
    if not name.endswith(".csv"):
        return False
    import csv

    try:
        table = list(csv.reader(path.read_text().splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    if len(table) < 2 or not path.read_text().endswith("\n"):
        return False
    from pemn_fl.clientlog import decode_calls

    header, body = table[0], table[1:]
    for fields in body:
        if len(fields) != len(header):
            return False
        for column, value in zip(header, fields, strict=True):
            try:
                if column.endswith("_calls_detail"):
                    decode_calls(value)
                elif column not in ("method", "status") and value:
                    float(value)
            except ValueError:
                return False
    return True


# -- issue 25's cases ---------------------------------------------------------------------
EVIL = "from pathlib import Path\nPath({marker!r}).write_text('a model file ran code')\n"


def _recrafted(data: bytes, edit: Callable[[dict], object]) -> bytes:
    """A model file with its header edited and a valid CRC (a forger's file)."""
    import json
    import struct
    import zlib

    (n,) = struct.unpack("<I", data[8:12])
    header = json.loads(data[12 : 12 + n])
    edit(header)
    raw = json.dumps(header).encode()
    body = data[:8] + struct.pack("<I", len(raw)) + raw + data[12 + n : -4]
    return body + struct.pack("<I", zlib.crc32(body))


def _reweighted(data: bytes, value: float) -> bytes:
    """A FedAvg model file with one float32 weight set to ``value`` and a valid CRC."""
    import struct
    import zlib

    import numpy as np

    from pemn_fl.modelfile import loads

    model = loads(data)
    first = next(n for n in model.arrays if model.arrays[n].numpy().dtype == np.float32)
    old = model.arrays[first].numpy().reshape(-1)[:1].tobytes()
    at = data.index(old, 12 + struct.unpack("<I", data[8:12])[0])
    body = data[:at] + np.float32(value).tobytes() + data[at + 4 : -4]
    return body + struct.pack("<I", zlib.crc32(body))


def _judge(area: str, case: str, expected: str, code: int, stderr: str,
           ran_code: bool = False) -> dict[str, object]:  # fmt: skip
    """One case's row: did the command do what it must (``refuse``: exit 2 and one clean
    ``error:`` line; ``accept``: exit 0; ``note``: exit 0 and one ``note:`` line)?"""
    if expected == "refuse":
        ok = clean(code, stderr)
    elif expected == "note":
        ok = code == 0 and sum(line.startswith("note:") for line in stderr.splitlines()) == 1
    else:
        ok = code == 0
    ok = ok and not ran_code and "Traceback" not in stderr
    silent = (expected != "accept" and code == 0 and not _noted(stderr)) or ran_code
    said = [line for line in stderr.strip().splitlines() if line.strip()]
    return {"area": area, "case": case, "expected": expected, "code": code,
            "as_expected": ok, "traceback": "Traceback" in stderr, "silent": silent,
            "said": ("MODULE RAN; " if ran_code else "") + (said[-1][:200] if said else "")}


def probe_model_files(work: Path, run: Path) -> list[dict[str, object]]:
    """``python -m pemn_fl evaluate`` on crafted files, in a directory holding evil.py."""
    import os

    here = work / "evaluate"
    here.mkdir()
    marker = here / "executed"
    (here / "evil.py").write_text(EVIL.format(marker=str(marker)))
    pemn, fedavg = (run / "models" / "pemn.pemn").read_bytes(), (
        run / "models" / "fedavg.pemn").read_bytes()  # fmt: skip
    cases: dict[str, tuple[str, bytes]] = {
        "method 'evil.m' (evil.py in the working directory)":
            ("refuse", _recrafted(pemn, lambda h: h.update(method="evil.m"))),
        "run config methods 'pemn,evil.m'":
            ("accept", _recrafted(pemn, lambda h: h["run_config"].update(
                methods="pemn,evil.m"))),
        "a shape of 100,000 dimensions":
            ("refuse", _recrafted(pemn, lambda h: h["arrays"][0].update(shape=[1] * 100_000))),
        "shape [0, 2**39 * 5]":
            ("refuse", _recrafted(pemn, lambda h: h["arrays"][0].update(shape=[0, 2**39 * 5]))),
        "shape [0, 2**39, 2**39, 2**39, 2**39, 2**39]":
            ("refuse", _recrafted(fedavg, lambda h: h["arrays"][0].update(
                shape=[0, *[2**39] * 5]))),
        "a weight of 3e38": ("refuse", _reweighted(fedavg, 3e38)),
        "accuracy NaN in the header":
            ("refuse", _recrafted(pemn, lambda h: h.update(accuracy=float("nan")))),
        "final round Infinity":
            ("refuse", _recrafted(pemn, lambda h: h.update(final_round=float("inf")))),
        "the untouched file": ("accept", pemn),
    }  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # pemn-fl from here; the cwd stays first
    rows = []
    for case, (expected, data) in cases.items():
        marker.unlink(missing_ok=True)
        (here / "model.pemn").write_bytes(data)
        proc = subprocess.run([sys.executable, "-m", "pemn_fl", "evaluate", "model.pemn"],
                              cwd=here, env=env, capture_output=True, text=True,
                              timeout=900)  # fmt: skip
        rows.append(_judge("model file", case, expected, proc.returncode, proc.stderr,
                           ran_code=marker.exists()))  # fmt: skip
    return rows


def probe_resume(work: Path, run: Path) -> list[dict[str, object]]:
    """``simulations.run --resume`` of a copy of the finished run, damaged."""
    def newest(copy: Path, pid: int) -> Path:
        return sorted((copy / "checkpoint" / "clients" / f"p{pid}").glob("*.state"),
                      key=lambda p: tuple(map(int, p.stem.split("-"))))[-1]  # fmt: skip

    def edit_rounds(copy: Path, change: Callable[[list[str]], list[str]]) -> None:
        path = copy / "rounds.csv"
        path.write_text("\n".join(change(path.read_text().splitlines())) + "\n")

    def accuracy(lines: list[str], value: str) -> list[str]:
        index = lines[0].split(",").index("accuracy")
        fields = lines[2].split(",")
        fields[index] = value
        return [lines[0], lines[1], ",".join(fields), *lines[3:]]

    cases: dict[str, tuple[str, Callable[[Path], object]]] = {
        "untouched": ("accept", lambda c: None),
        "partition 0's newest client checkpoint deleted":
            ("refuse", lambda c: newest(c, 0).unlink()),
        "partition 1's checkpoint folder deleted":
            ("refuse", lambda c: shutil.rmtree(c / "checkpoint" / "clients" / "p1")),
        "clients.csv deleted": ("refuse", lambda c: (c / "clients.csv").unlink()),
        "accuracy nan in rounds.csv": ("refuse", lambda c: edit_rounds(
            c, lambda lines: accuracy(lines, "nan"))),
        "accuracy 1.5 in rounds.csv": ("refuse", lambda c: edit_rounds(
            c, lambda lines: accuracy(lines, "1.5"))),
        "two rows of rounds.csv swapped": ("refuse", lambda c: edit_rounds(
            c, lambda lines: [lines[0], lines[2], lines[1], *lines[3:]])),
    }  # fmt: skip
    rows = []
    for case, (expected, damage) in cases.items():
        copy = work / "resume-copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(run, copy)
        damage(copy)
        code, stderr = _command(["simulations.run", "--resume", str(copy), "--quiet"])
        rows.append(_judge("resume", case, expected, code, stderr))
    return rows


def probe_seed_groups(work: Path, run: Path) -> list[dict[str, object]]:
    """``simulations.plot GROUP`` on a group of three copies of the run, damaged."""
    import json

    def group() -> Path:
        path = work / "group"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
        (path / "config.json").write_text(json.dumps({"seeds": [1, 2, 3]}))
        for seed in (1, 2, 3):
            member = path / f"seed-{seed}"
            member.mkdir()
            shutil.copy(run / "rounds.csv", member / "rounds.csv")
            config = json.loads((run / "config.json").read_text())
            config["settings"]["seed"] = seed
            (member / "config.json").write_text(json.dumps(config))
        return path

    def halve(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    def header_twice(path: Path) -> None:
        lines = path.read_text().splitlines()
        path.write_text("\n".join([*lines[:3], lines[0], *lines[3:]]) + "\n")

    def other_seed(path: Path) -> None:
        config = json.loads(path.read_text())
        config["settings"]["seed"] = 2
        path.write_text(json.dumps(config))

    cases: dict[str, tuple[str, Callable[[Path], object]]] = {
        "intact group": ("accept", lambda g: None),
        "seed 2's rounds.csv missing": ("refuse", lambda g: (g / "seed-2" / "rounds.csv")
                                        .unlink()),
        "seed 3's rounds.csv cut in half": ("refuse", lambda g: halve(g / "seed-3" /
                                                                       "rounds.csv")),
        "seed 1's config.json says seed 2": ("refuse", lambda g: other_seed(
            g / "seed-1" / "config.json")),
        "a repeated header line in seed 1's rounds.csv": ("refuse", lambda g: header_twice(
            g / "seed-1" / "rounds.csv")),
    }  # fmt: skip
    rows = []
    for case, (expected, damage) in cases.items():
        path = group()
        damage(path)
        code, stderr = _command(["simulations.plot", str(path), "--out",
                                 str(work / "group.png")])  # fmt: skip
        rows.append(_judge("seed group", case, expected, code, stderr))
    return rows


def probe_commands(work: Path) -> list[dict[str, object]]:
    """Options a command cannot apply, in-process with the run or deployment stubbed:
    whatever a command accepted, nothing starts."""
    from pemn_fl.__main__ import main as pemn_main
    from simulations import deploy as D
    from simulations import fresh as F
    from simulations import run as R

    started: list[object] = []
    real_deploy, real_execute = D.deploy, F.execute
    D.deploy = lambda *args, **kwargs: started.append(args)  # type: ignore[assignment]
    F.execute = lambda *args, **kwargs: started.append(args) or 0  # type: ignore[assignment]
    synthetic = ["--dataset", "synthetic", "--model", "mlp", "--width", "0.5"]
    cases = [
        *[("deploy", f"--timeout {v}", "refuse", D.main, ["--timeout", v])
          for v in ("nan", "0", "-1", "inf")],
        ("deploy", "--ray-address 127.0.0.1:6379", "refuse", D.main,
         ["--ray-address", "127.0.0.1:6379"]),
        ("deploy", "--cpus-per-client 2", "refuse", D.main, ["--cpus-per-client", "2"]),
        ("deploy", "--seeds 1,2", "refuse", D.main, ["--seeds", "1,2"]),
        ("deploy", "--clients 4", "refuse", D.main, ["--clients", "4"]),
        ("deploy", "--methods fedavg --density 0.5", "note", D.main,
         ["--methods", "fedavg", "--density", "0.5", *synthetic]),
        ("run", "--methods fedavg --density 0.5", "note", R.main,
         ["--methods", "fedavg", "--density", "0.5", "--rounds", "1", *synthetic]),
        ("describe", "--width 1e12", "refuse", pemn_main, ["describe", "--width", "1e12"]),
        ("describe", "--width 50", "refuse", pemn_main, ["describe", "--width", "50"]),
    ]  # fmt: skip
    rows = []
    try:
        for i, (area, case, expected, main, argv) in enumerate(cases):
            out = ["--out", str(work / f"cmd-{i}")] if area != "describe" else []
            err = io.StringIO()
            before = len(started)
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    code = main([*argv, *out])
                except SystemExit as exc:
                    code = int(exc.code or 0)
                except Exception as exc:  # noqa: BLE001 - the probe records any escape
                    code, err = 99, io.StringIO(f"Traceback: {type(exc).__name__}: {exc}")
            row = _judge(area, case, expected, code, err.getvalue())
            row["as_expected"] = row["as_expected"] and (
                expected != "refuse" or len(started) == before)  # refused: nothing started
            rows.append(row)
    finally:
        D.deploy, F.execute = real_deploy, real_execute
        import signal

        signal.signal(signal.SIGINT, signal.default_int_handler)  # deploy.main set these
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return rows


def probe_issue25(work: Path, run: Path) -> pd.DataFrame:
    return pd.DataFrame([*probe_model_files(work, run), *probe_resume(work, run),
                         *probe_seed_groups(work, run), *probe_commands(work)])  # fmt: skip


# -- faults x methods ---------------------------------------------------------------------
FAULTS = {
    "drop": ["--drop-rate", "0.5"],
    "corrupt": ["--corrupt-rate", "0.5"],
    "straggle": ["--straggler-rate", "0.5", "--round-deadline", "30"],
    "byzantine": ["--byzantine", "0.25"],
}


def probe_faults(work: Path) -> pd.DataFrame:
    from pemn_fl.methods import get, names

    rows = []
    for fault, options in FAULTS.items():
        methods = [n for n in names() if fault != "byzantine" or get(n).attack]
        out = work / f"fault-{fault}"
        started = time.monotonic()
        code, stderr = _command(["simulations.run", "--clients", "4", "--rounds", "3",
                                 "--dataset", "synthetic", "--model", "mlp", "--width", "0.5",
                                 "--dense-width", "0.5", "--methods", ",".join(methods),
                                 *options, "--quiet", "--out", str(out)])  # fmt: skip
        frame = pd.read_csv(out / "rounds.csv") if (out / "rounds.csv").is_file() else None
        for method in methods:
            part = None if frame is None else frame[frame["method"] == method]
            trained = None if part is None else part[part["round"] > 0]
            every_round = trained is not None and sorted(trained["round"]) == [1, 2, 3]
            counted = trained is not None and bool((trained[["clients_replied",
                "clients_rejected", "clients_failed"]].sum(axis=1)
                == trained["clients_sampled"]).all())  # fmt: skip
            hit = 0 if trained is None else int(
                trained[["clients_rejected", "clients_failed"]].to_numpy().sum())
            rows.append({"fault": fault, "method": method, "exit": code,
                         "every_round": every_round, "every_client_counted": counted,
                         "clients_hit": hit, "complete": code == 0 and every_round and counted,
                         "wall_s": round(time.monotonic() - started, 1),
                         "said": "" if code == 0 else stderr.strip().splitlines()[-1][:160]})
    return pd.DataFrame(rows)


def report(values: pd.DataFrame, files: pd.DataFrame, faults: pd.DataFrame | None,
           cases: pd.DataFrame | None = None) -> str:  # fmt: skip
    lines = ["# Reliability probe", "", "Command: `python -m bench.reliability`", ""]
    accepted = values[values["accepted"]]
    lines += [f"**Bad values:** {len(values)} tried over {values['option'].nunique()} options; "
              f"{int(values['clean'].sum())} refused in one clean error line; "
              f"{len(accepted)} accepted (listed: each within the option's documented range, "
              "such as a rate of 0 or a huge but legal count or step size); "
              f"{int((~values['clean'] & ~values['accepted']).sum())} otherwise.", ""]
    if not accepted.empty:
        lines += ["| option | value accepted |", "|---|---|"]
        lines += [f"| `{r.option}` | `{r.value}` |" for r in accepted.itertuples()]
        lines.append("")
    bad = values[~values["clean"] & ~values["accepted"]]
    if not bad.empty:
        lines += ["Not clean:", "", "| option | value | exit | said |", "|---|---|---|---|"]
        lines += [f"| `{r.option}` | `{r.value}` | {r.code} | {r.said} |" for r in bad.itertuples()]
        lines.append("")
    refused = int((files["clean"] & ~files["accepted"]).sum())
    accepted = files[files["accepted"]]
    noted = int(accepted["noted"].sum())
    formed = int((~accepted["noted"] & accepted["well_formed"]).sum())
    silent_files = int((~accepted["noted"] & ~accepted["well_formed"]).sum())
    lines += [f"**Damaged files:** {len(files)} cases ({files['file'].nunique()} files x "
              f"{files['damage'].nunique()} damages); {refused} "
              f"refused in one clean error line, {len(accepted)} accepted (exit 0: {noted} "
              f"with a `note:` line saying what was left out, {formed} whose damage left a "
              f"well-formed file no check can tell from a real one, {silent_files} silently), "
              f"{int((~files['clean']).sum())} otherwise, "
              f"{int(files['traceback'].sum())} with a traceback.", "",
              "| file | damage | exit | said |", "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r.file} | {r.damage} | {r.code} | {r.said} |" for r in files.itertuples()]
    lines.append("")
    if cases is not None:
        good = int(cases["as_expected"].sum())
        lines += [f"**Issue 25's cases:** {good} of {len(cases)} as expected (refused in one "
                  "clean `error:` line, accepted, or accepted with one `note:` line); "
                  f"{int(cases['traceback'].sum())} with a traceback, "
                  f"{int(cases['silent'].sum())} silent acceptances.", "",
                  "| area | case | expected | exit | as expected | said |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {r.area} | {r.case} | {r.expected} | {r.code} | {r.as_expected} | "
                  f"{str(r.said).replace('|', '/')} |" for r in cases.itertuples()]
        lines.append("")
    tracebacks = int(files["traceback"].sum()) + int((values["code"] == 99).sum()) + (
        0 if cases is None else int(cases["traceback"].sum()))  # fmt: skip
    silent = silent_files + (0 if cases is None else int(cases["silent"].sum()))
    lines[4:4] = [f"**Claim: {tracebacks} tracebacks and {silent} silent acceptances** over "
                  "every case below (a bad value accepted is one in its documented range; a "
                  "damaged file accepted either says so in a `note:` line or is a "
                  "well-formed file of its kind).", ""]  # fmt: skip
    if faults is not None:
        done = int(faults["complete"].sum())
        lines += [f"**Faults x methods:** {done} of {len(faults)} complete with every round and "
                  "every sampled client counted (replied, rejected or failed).", "",
                  "| fault | method | exit | every round | every client counted | clients "
                  "hit | complete |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {r.fault} | {r.method} | {r.exit} | {r.every_round} | "
                  f"{r.every_client_counted} | {r.clients_hit} | {r.complete} |"
                  for r in faults.itertuples()]  # fmt: skip
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("results/reliability"),
                   help="output directory (values, files, cases and faults CSVs and README.md)")
    p.add_argument("--skip-faults", action="store_true",
                   help="only the bad values and damaged files (no fault simulations; the "
                   "report keeps the last faults.csv in --out)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    values = probe_values()
    values.to_csv(args.out / "values.csv", index=False)
    with tempfile.TemporaryDirectory() as tmp:
        run = reference_run(Path(tmp))
        files = probe_files(Path(tmp), run)
        files.to_csv(args.out / "files.csv", index=False)
        cases = probe_issue25(Path(tmp), run)
        cases.to_csv(args.out / "cases.csv", index=False)
        faults = None if args.skip_faults else probe_faults(Path(tmp))
    if faults is None and (args.out / "faults.csv").is_file():  # the last full probe's
        faults = pd.read_csv(args.out / "faults.csv")
    if faults is not None and not args.skip_faults:
        faults.to_csv(args.out / "faults.csv", index=False)
    text = report(values, files, faults, cases)
    (args.out / "README.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
