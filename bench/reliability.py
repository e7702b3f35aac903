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
3. **Faults x methods.** Every registered method in one real simulation per fault
   (``--drop-rate``, ``--corrupt-rate``, ``--straggler-rate``, ``--byzantine`` for the
   methods that define an attack), 4 clients, 3 rounds, synthetic data: the run must end
   with exit 0, every method must have every round, and every round must count each sampled
   client as replied, rejected or failed.

Writes ``<out>/values.csv``, ``files.csv``, ``faults.csv`` and ``README.md`` (the counts and
every non-clean case).
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
    from simulations import run as R

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            args = R.build_parser(R.plugin_specs(argv)).parse_args(argv)
            engine = R.Engine.from_args(args)
            engine.check()
            settings = R.settings_from_args(args)
            R.check_data(settings, engine.clients)
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


def probe_files(work: Path) -> pd.DataFrame:
    run = work / "run"
    code, stderr = _command(["simulations.run", "--clients", "3", "--rounds", "2", "--dataset",
                             "synthetic", "--model", "mlp", "--width", "0.5", "--methods",
                             "pemn,evolve_dither,fedavg", "--dense-width", "0.5", "--quiet",
                             "--out", str(run)])  # fmt: skip
    if code != 0:
        raise SystemExit(f"error: the probe's reference run failed:\n{stderr[-2000:]}")
    state = next((run / "checkpoint" / "clients").glob("p0/*.state"))
    targets = {  # file -> the command that reads it back
        "config.json": ["simulations.run", "--resume"],
        "rounds.csv": ["simulations.run", "--resume"],
        "checkpoint/server.pkl": ["simulations.run", "--resume"],
        str(state.relative_to(run)): ["simulations.run", "--resume"],
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
                         "said": stderr.strip().splitlines()[-1][:160] if stderr.strip() else ""})
    return pd.DataFrame(rows)


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


def report(values: pd.DataFrame, files: pd.DataFrame, faults: pd.DataFrame | None) -> str:
    lines = ["# Reliability probe", "", "Command: `python -m bench.reliability`", ""]
    accepted = values[values["accepted"]]
    lines += [f"**Bad values:** {len(values)} tried over {values['option'].nunique()} options; "
              f"{int(values['clean'].sum())} refused in one clean error line; "
              f"{len(accepted)} accepted (listed: each a valid setting or a finding); "
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
    lines += [f"**Damaged files:** {len(files)} cases ({files['file'].nunique()} files x "
              f"{files['damage'].nunique()} damages); {refused} "
              f"refused in one clean error line, {int(files['accepted'].sum())} accepted "
              f"(exit 0), {int((~files['clean']).sum())} otherwise, "
              f"{int(files['traceback'].sum())} with a traceback.", "",
              "| file | damage | exit | said |", "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r.file} | {r.damage} | {r.code} | {r.said} |" for r in files.itertuples()]
    lines.append("")
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("results/reliability"))
    p.add_argument("--skip-faults", action="store_true",
                   help="only the bad values and damaged files (no fault simulations; the "
                   "report keeps the last faults.csv in --out)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    values = probe_values()
    values.to_csv(args.out / "values.csv", index=False)
    with tempfile.TemporaryDirectory() as tmp:
        files = probe_files(Path(tmp))
        files.to_csv(args.out / "files.csv", index=False)
        faults = None if args.skip_faults else probe_faults(Path(tmp))
    if faults is None and (args.out / "faults.csv").is_file():  # the last full probe's
        faults = pd.read_csv(args.out / "faults.csv")
    if faults is not None and not args.skip_faults:
        faults.to_csv(args.out / "faults.csv", index=False)
    text = report(values, files, faults)
    (args.out / "README.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
