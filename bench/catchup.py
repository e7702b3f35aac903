"""How much of each method's downlink is catch-up: ``python -m bench.catchup DIR [DIR ...]``.

A node sampled in round r must hold the state of round r - 1; a node that sat out rounds
receives every round it missed (``pemn_fl.methods.frames.replica``). Each run records, per
sampled client and round, the downlink payload and the part of it that serves only to catch
up (``down_catchup_payload_bytes`` in ``clients.csv``: the updates of rounds before the last
one, or a snapshot). This reads the runs of a seeds frontier (``DIR/fresh/<method>__*/
seed-*``) or any run directories, and prints per method, summed over its seeds and rounds:
the downlink payload, the catch-up part, its share of the payload and of the downlink's wire
bytes, and the mean number of rounds a sampled client had missed.

With a fraction f of the clients sampled uniformly each round, a sampled client has missed
1/f - 1 rounds on average whatever the sampler (over a run, each client's missed rounds add
up to the rounds it sat out), so catch-up is a property of partial participation; the
sampler only moves it between clients (``pemn_fl.sampling``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from bench import fresh_runs
from pemn_fl import clientlog


def runs_of(directory: Path) -> list[Path]:
    """Run directories under ``directory``: a seeds frontier's reported fresh-seed runs only
    (``bench.fresh_runs``: tuning or neighbour runs beside them, and a configuration the
    report does not use, are other configurations), or every run under any other folder."""
    if (directory / "clients.csv").is_file():
        return [directory]
    if (directory / "fresh").is_dir():
        return [run for by_seed in fresh_runs.reported_runs(directory).values()
                for run in by_seed.values() if (run / "clients.csv").is_file()]
    return sorted(p.parent for p in directory.glob("**/clients.csv")
                  if ".partial" not in str(p))  # fmt: skip


def missed_rounds(clients: pd.DataFrame) -> pd.Series:
    """Per client-round, the rounds its partition sat out since it last trained (or since
    the start), per method."""
    out = []
    for _, part in clients.groupby("method", sort=False):
        last: dict[int, int] = {}
        for row in part.sort_values("round").itertuples():
            out.append((row.Index, int(row.round) - last.get(int(row.partition), 0) - 1))
            last[int(row.partition)] = int(row.round)
    index, values = zip(*out, strict=True) if out else ((), ())
    return pd.Series(values, index=list(index), dtype="int64")


def table(directories: list[Path]) -> pd.DataFrame:
    rows = []
    for run in (r for d in directories for r in runs_of(d)):
        clients = clientlog.read(run / "clients.csv")
        clients["missed"] = missed_rounds(clients)
        rows.append(clients)
    if not rows:
        raise SystemExit("error: no clients.csv under the given directories (runs made before "
                         "the time model's record have none)")
    frame = pd.concat(rows, ignore_index=True)
    frame["down_wire"] = frame["down_request_bytes"] + frame["down_response_bytes"]
    out = frame.groupby("method", sort=False).agg(
        client_rounds=("round", "size"),
        payload_mb=("down_payload_bytes", lambda s: s.sum() / 1e6),
        catchup_mb=("down_catchup_payload_bytes", lambda s: s.sum() / 1e6),
        wire_mb=("down_wire", lambda s: s.sum() / 1e6),
        missed_rounds=("missed", "mean"),
    )
    out["catchup_share_of_payload"] = out["catchup_mb"] / out["payload_mb"]
    out["catchup_share_of_wire"] = out["catchup_mb"] / out["wire_mb"]
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.catchup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", type=Path, help="seeds frontiers or run directories")
    p.add_argument("--out", type=Path, default=None, help="write the table as markdown here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = table(args.dirs)
    except ValueError as err:  # fresh/ holds two configurations and no record of which
        print(f"error: {err}", file=sys.stderr)
        return 2
    lines = ["| method | client-rounds | rounds missed (mean) | downlink payload MB | catch-up MB "
             "| catch-up share of payload | of downlink wire |", "|---|---|---|---|---|---|---|"]
    for method, r in out.iterrows():
        lines.append(f"| {method} | {r['client_rounds']:.0f} | {r['missed_rounds']:.2f} | "
                     f"{r['payload_mb']:.2f} | {r['catchup_mb']:.2f} | "
                     f"{100 * r['catchup_share_of_payload']:.1f} % | "
                     f"{100 * r['catchup_share_of_wire']:.1f} % |")
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        command = "python -m bench.catchup " + " ".join(str(d) for d in args.dirs)
        args.out.write_text(f"# Catch-up in the downlink\n\nCommand: `{command}`\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
