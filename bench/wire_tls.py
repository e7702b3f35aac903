"""``python -m bench.wire_tls``: bytes on the wire with TLS, beside the cleartext deployment.

Runs ``simulations.deploy`` twice with the same settings: once in cleartext, once with
``--secure`` (TLS and SuperNode authentication). The byte-counting proxy between the nodes
and the SuperLink counts every byte of each direction in both runs (under TLS it cannot
parse anything, so per-direction totals are the only honest level there; in cleartext it
also parses the HTTP calls, which gives the per-round wire columns of ``rounds.csv``).

Two tables come out, in ``OUT/README.md`` with the command that made them:

* **whole deployment**, per direction: every byte the nodes and the SuperLink exchanged
  from the first connection to the last (registration, app bundle downloads, idle polling,
  every round), with the number of TCP connections and the run's duration;
* **per method**, per direction: the bytes between the moment the method's initial
  evaluation row appeared and the moment its last row appeared (the deploy command polls
  ``rounds.csv`` every 0.5 s and notes the proxy's totals at each new row:
  ``wire-timeline.csv``). Those spans hold the method's rounds *and* the idle polling
  meanwhile, in both runs alike; the cleartext run's parsed round traffic (``rounds.csv``)
  is given beside them for scale.

Both runs' directories (``cleartext/``, ``tls/``: rounds.csv, summary.json, wire-meter.json,
wire-timeline.csv, config.json, logs) are kept, less the model files.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

from bench.common import add_methods, add_nodes, add_rounds
from pemn_fl.config import RunSettings
from simulations.deploy import deploy

DIRECTIONS = ("node_to_link", "link_to_node")
EXPLAINED = """\
Counted, not estimated: the byte-counting proxy between the SuperNodes and the SuperLink
(`simulations/wireproxy.py`) counts the TCP payload of each direction in both runs. Under TLS
it parses nothing (it cannot), so there are no rounds, calls or categories at that level,
only directions; the cleartext run is counted the same way, so the two compare like for like.
TCP/IP headers are not counted in either. The TLS run also carries SuperNode authentication
(each request signed with the node's registered key, as in cleartext, where Flower signs with
a key the node makes itself). `cleartext/` and `tls/` hold both runs (rounds.csv,
summary.json with `wire.proxy`, wire-meter.json, wire-timeline.csv, logs); `wire_tls.json` the
numbers below."""


def spans(run: Path) -> dict[str, dict[str, float]]:
    """Per method, from its round-0 row to its last row: bytes per direction, new TCP
    connections (each a TLS handshake in a secure run) and seconds."""
    with (run / "wire-timeline.csv").open() as f:
        rows = list(csv.DictReader(f))
    out: dict[str, dict[str, float]] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        first = next(r for r in mine if int(r["round"]) == 0)
        last = max(mine, key=lambda r: int(r["round"]))
        out[method] = {d: int(last[d]) - int(first[d]) for d in (*DIRECTIONS, "connections")}
        out[method]["seconds"] = float(last["seconds"]) - float(first["seconds"])
    return out


def parsed_rounds(run: Path) -> dict[str, dict[str, int]]:
    """Cleartext only: per method, the rounds' HTTP calls the proxy parsed (rounds.csv)."""
    with (run / "rounds.csv").open() as f:
        rows = list(csv.DictReader(f))
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        m = out.setdefault(r["method"], {"uplink": 0, "downlink": 0})
        m["uplink"] += int(float(r["uplink_wire_bytes"]))
        m["downlink"] += int(float(r["downlink_wire_bytes"]))
    return out


def whole(run: Path) -> dict[str, float]:
    proxy = json.loads((run / "summary.json").read_text())["wire"]["proxy"]
    return {k: proxy[k] for k in (*DIRECTIONS, "connections", "level")}


def ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}x" if b else "n/a"


def report(clear: Path, tls: Path, seconds: dict[str, float]) -> tuple[str, dict[str, object]]:
    wc, wt = whole(clear), whole(tls)
    sc, st, parsed = spans(clear), spans(tls), parsed_rounds(clear)
    lines = ["### Whole deployment (every byte between the nodes and the SuperLink)", "",
             "| direction | cleartext HTTP | TLS | TLS / cleartext |", "|---|---:|---:|---:|"]
    for d, label in zip(DIRECTIONS, ("node → SuperLink", "SuperLink → node"), strict=True):
        lines.append(f"| {label} | {wc[d]:,} | {wt[d]:,} | {ratio(wt[d], wc[d])} |")
    total_c, total_t = sum(wc[d] for d in DIRECTIONS), sum(wt[d] for d in DIRECTIONS)
    lines.append(f"| both | {total_c:,} | {total_t:,} | {ratio(total_t, total_c)} |")
    lines += ["", f"TCP connections (each a TLS handshake in the secure run): {wc['connections']} "
              f"cleartext, {wt['connections']} TLS. Run time: {seconds['cleartext']:.0f} s "
              f"cleartext, {seconds['tls']:.0f} s TLS (idle polling runs all the time, so a "
              "longer run has more of it).", "",
              "### Per method (from its initial evaluation to its last round, idle polling "
              "included)", "",
              "| method | node → SuperLink: cleartext | TLS | TLS / clear | SuperLink → node: "
              "cleartext | TLS | TLS / clear | new connections (clear / TLS) | seconds "
              "(clear / TLS) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for method, c in sc.items():
        t = st.get(method, dict.fromkeys((*DIRECTIONS, "connections", "seconds"), 0))
        cells = [f"{c[d]:,} | {t[d]:,} | {ratio(t[d], c[d])}" for d in DIRECTIONS]
        lines.append(f"| {method} | {' | '.join(cells)} | {c['connections']} / "
                     f"{t['connections']} | {c['seconds']:.0f} / {t['seconds']:.0f} |")  # fmt: skip
    shares = []
    for m, c in sc.items():
        if m in parsed:
            calls = parsed[m]["uplink"] + parsed[m]["downlink"]
            span = sum(c[d] for d in DIRECTIONS)
            shares.append(f"{m} {calls:,} B ({100 * calls / max(1, span):.0f} %)")
    lines += ["", "Of each cleartext span, the rounds' own Fleet API calls (parsed by the proxy: "
              "`rounds.csv` wire columns, both directions): " + ", ".join(shares)
              + "; the rest is idle polling and heartbeats meanwhile."]  # fmt: skip
    data = {"whole": {"cleartext": wc, "tls": wt}, "spans": {"cleartext": sc, "tls": st},
            "parsed_rounds_cleartext": parsed, "seconds": seconds}  # fmt: skip
    return "\n".join(lines), data


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.wire_tls",
                                description=__doc__.split("\n\n")[0])  # fmt: skip
    add_nodes(p, 3)
    add_rounds(p, 2, of="every deployment")
    add_methods(p, "pemn,evolve_dither,fedavg")
    p.add_argument("--dataset", default="digits", help="the data set")
    p.add_argument("--out", type=Path, default=Path("results/wire/tls"),
                   help="output directory")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild README.md from the runs already in --out (no deployment)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.nodes < 1 or args.rounds < 1:
        print("error: --nodes and --rounds must be at least 1", file=sys.stderr)
        return 2
    numbers = args.out / "wire_tls.json"
    if args.report_only:
        try:
            made = json.loads(numbers.read_text())
            seconds, command = made["seconds"], made["command"]
            args.nodes, args.rounds, args.methods, args.dataset = (
                made["nodes"], made["rounds"], made["methods"], made["dataset"])
        except (OSError, ValueError, KeyError) as exc:
            print(f"error: --report-only: no runs of this command in {args.out} ({exc})",
                  file=sys.stderr)  # fmt: skip
            return 2
    else:
        command = ("python -m bench.wire_tls " + " ".join(
            argv if argv is not None else sys.argv[1:])).strip()  # fmt: skip
        settings = RunSettings(methods=args.methods, num_server_rounds=args.rounds,
                               dataset=args.dataset, min_nodes=args.nodes)  # fmt: skip
        seconds = {}
        for name, secure in (("cleartext", False), ("tls", True)):
            run = args.out / name
            if run.exists():
                shutil.rmtree(run)
            run.mkdir(parents=True)
            started = time.monotonic()
            deploy(settings, args.nodes, run, timeout=3600, secure=secure)
            seconds[name] = time.monotonic() - started
            shutil.rmtree(run / "models", ignore_errors=True)
    text, data = report(args.out / "cleartext", args.out / "tls", seconds)
    data.update(command=command, nodes=args.nodes, rounds=args.rounds, methods=args.methods,
                dataset=args.dataset)  # fmt: skip
    numbers.write_text(json.dumps(data, indent=2) + "\n")
    (args.out / "README.md").write_text(
        "# Bytes on the wire with TLS, beside cleartext\n\n"
        f"`{command}`\n\n(Flower 1.42, {args.nodes} SuperNodes on 127.0.0.1, "
        f"{args.dataset}/mlp, {args.rounds} rounds, methods {args.methods}; the same settings "
        "deployed twice: cleartext, then `--secure`.)\n\n" + EXPLAINED + "\n\n" + text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
