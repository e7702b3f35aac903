"""``python -m bench.wire_calibrate``: measure bytes on the wire, fit and check the transport model.

Runs ``simulations.deploy`` (a real SuperLink and SuperNodes on 127.0.0.1, the SuperNodes
behind the byte-counting proxy) and prints, per method, the wire bytes the proxy measured
beside the transport model's figure for the same messages (computed in the same run with the
constants in ``pemn_fl/wire_constants.json`` as they were when it started: an out-of-sample
check once they are committed), the message bytes for scale, and the traffic that belongs to
no round (idle polling, the app bundle, registration). It then fits the header constants
from this run's calls; ``--write`` stores them in ``pemn_fl/wire_constants.json`` (rerun to
check the model with them). Results go to ``results/wire/`` (table + the run itself).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from bench.common import add_methods, add_nodes, add_rounds
from pemn_fl.config import RunSettings
from pemn_fl.transport import CONSTANTS_FILE, fit_constants
from simulations.deploy import deploy


def compare(run: Path) -> tuple[list[dict[str, object]], dict[str, object]]:
    """Per-method rows (measured, model, message bytes, ratios) and the non-round traffic."""
    summary = json.loads((run / "summary.json").read_text())
    wire = summary["wire"]
    if not wire["source"].startswith("measured"):
        raise SystemExit(f"error: {run} has no measured wire bytes (source: {wire['source']}); "
                         "see its logs/")  # fmt: skip
    rows = []
    for method, m in summary["methods"].items():
        model = wire["model"][method]
        for direction in ("uplink", "downlink"):
            measured, modelled = m[f"{direction}_wire_bytes"], model[f"{direction}_wire_bytes"]
            rows.append({
                "method": method, "direction": direction, "message_bytes": m[f"{direction}_bytes"],
                "wire_measured": measured, "wire_model": modelled,
                "wire_per_message_byte": round(measured / m[f"{direction}_bytes"], 3),
                "model_error_pct": round(100 * (modelled - measured) / measured, 2),
            })  # fmt: skip
    extra = {k: wire[k] for k in ("idle_bytes", "bundle_bytes", "control_bytes", "unparsed_bytes")}
    return rows, extra


def table(rows: list[dict[str, object]], extra: dict[str, object], seconds: float) -> str:
    lines = [
        "| method | direction | message bytes | wire measured | wire model | wire/message "
        "| model error |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['direction']} | {r['message_bytes']:,} | "
            f"{r['wire_measured']:,} | {r['wire_model']:,} | {r['wire_per_message_byte']:.2f}x "
            f"| {r['model_error_pct']:+.2f} % |"
        )
    lines.append("")
    lines.append(
        f"Not in any round (whole run, {seconds:.0f} s): idle polling and heartbeats "
        f"{extra['idle_bytes']:,} B ({extra['idle_bytes'] / seconds:,.0f} B/s), app bundle "
        f"{extra['bundle_bytes']:,} B, node registration and run info {extra['control_bytes']:,}"
        f" B, unparsed {extra['unparsed_bytes']:,} B."
    )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.wire_calibrate", description=__doc__)
    add_nodes(p, 3, of="the deployment")
    add_rounds(p, 2, of="the deployment")
    add_methods(p, "pemn,evolve_dither,fedavg")
    p.add_argument("--out", type=Path, default=Path("results/wire"),
                   help="output directory")
    p.add_argument("--write", action="store_true",
                   help=f"store the fitted header constants in {CONSTANTS_FILE.name}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = RunSettings(methods=args.methods, num_server_rounds=args.rounds,
                           min_nodes=args.nodes)  # fmt: skip
    run = args.out / "run"
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    started = time.monotonic()
    deploy(settings, args.nodes, run, timeout=1800)
    seconds = time.monotonic() - started
    shutil.rmtree(run / "models", ignore_errors=True)
    rows, extra = compare(run)
    text = table(rows, extra, seconds)
    meter = json.loads((run / "wire-meter.json").read_text())
    fitted = fit_constants(meter)
    command = "python -m bench.wire_calibrate " + " ".join(argv if argv is not None
                                                             else sys.argv[1:])  # fmt: skip
    report = (f"# Bytes on the wire: measured vs the transport model\n\n`{command}` "
              f"(Flower 1.42, {args.nodes} SuperNodes on 127.0.0.1, digits/mlp, "
              f"{args.rounds} rounds)\n\n{text}\n")  # fmt: skip
    (args.out / "wire.md").write_text(report)
    (args.out / "fitted_constants.json").write_text(json.dumps(
        {"request_header": fitted.request_header, "response_header": fitted.response_header},
        indent=2) + "\n")  # fmt: skip
    print(report)
    print("header constants fitted from this run:", json.dumps(fitted.request_header),
          json.dumps(fitted.response_header))  # fmt: skip
    if args.write:
        CONSTANTS_FILE.write_text(json.dumps({
            "_comment": f"fitted by `{command}`: mean HTTP header bytes per call type, "
                        "without the Content-Length digits",
            "request_header": fitted.request_header,
            "response_header": fitted.response_header,
        }, indent=2) + "\n")  # fmt: skip
        print(f"wrote {CONSTANTS_FILE}; rerun to check the model with them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
