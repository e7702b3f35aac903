"""Run records: the per-round log and the summary.

``RoundLog`` receives one row per method per round (bytes come from ``accounting``,
accuracy from server-side evaluation on the held-out test set) and writes ``rounds.csv``.
``summarize`` and the bandwidth-accuracy figure (``pemn_fl.figure``) work on that CSV alone,
so ``python -m simulations.plot`` can redraw any past run.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pemn_fl.accounting import Traffic
from pemn_fl.timeline import RoundTiming
from pemn_fl.timing import TIME_COLUMNS

COLUMNS = [
    "method", "round", "clients_sampled", "clients_replied", "clients_rejected", "clients_failed",
    "uplink_payload_bytes", "downlink_payload_bytes", "uplink_bytes", "downlink_bytes",
    "uplink_wire_bytes", "downlink_wire_bytes", "cumulative_bytes",
    "uplink_bits_per_param", "downlink_bits_per_param",
    "accuracy", "loss", "wall_s", "server_flops",
]  # fmt: skip
def columns_for(timed: bool) -> list[str]:
    """rounds.csv's columns: the time model's too when it ran in the loop (each round's
    simulated duration and energy, cumulated, and the sampled clients whose reply counted)."""
    return COLUMNS + TIME_COLUMNS if timed else list(COLUMNS)


# Three byte levels (``--bytes``): the method's payload, the whole Flower message, and what
# the transport puts on the wire (measured by the proxy in deployments, modelled in
# simulation). ``cumulative_bytes`` in rounds.csv is the message level, kept for old readers.
LEVELS = {
    "payload": ("uplink_payload_bytes", "downlink_payload_bytes"),
    "message": ("uplink_bytes", "downlink_bytes"),
    "wire": ("uplink_wire_bytes", "downlink_wire_bytes"),
}
DEFAULT_LEVEL = "wire"
BASELINE = "fedavg"  # the method every ratio is taken against, and whose best sets the target
# A round reaches a target at or above it, with this tolerance for the float round trip of
# "best - 0.01" (so the best round itself always reaches "best - 0 pt"). One rule for a run's
# summary and for the across-seeds one.
REACH_TOLERANCE = 1e-12


def first_reach(frame: pd.DataFrame, target: float | None) -> pd.Series | None:
    """The first row of ``frame`` (one method's rounds, in order) at or above ``target``
    (``None``: no target, or never reached)."""
    if target is None:
        return None
    hit = frame[frame["accuracy"] >= target - REACH_TOLERANCE]
    return None if hit.empty else hit.iloc[0]


def level_of(frame: pd.DataFrame, level: str) -> str:
    """``level`` if ``frame`` has its columns, else ``message`` (runs made before ``wire``)."""
    if level not in LEVELS:
        raise ValueError(f"unknown byte level {level!r}: choose one of {', '.join(LEVELS)}")
    return level if all(c in frame.columns for c in LEVELS[level]) else "message"


def with_cumulative(frame: pd.DataFrame, level: str) -> pd.DataFrame:
    """``frame`` with ``bytes`` (both directions, this round) and ``cumulative`` at ``level``."""
    up, down = LEVELS[level_of(frame, level)]
    frame = frame.copy()
    frame["bytes"] = frame[up] + frame[down]
    frame["cumulative"] = frame.groupby("method", sort=False)["bytes"].cumsum()
    return frame


def label_of(method: str) -> str:
    """The method's label for tables and plots (its registry entry), else its name."""
    from pemn_fl.methods import get, names

    return get(method).label if method in names() else method


def marker_of(method: str) -> str:
    """The method's line style in plots."""
    from pemn_fl.methods import get, names

    return get(method).marker if method in names() else "-^"


@dataclass
class RoundLog:
    """Accumulates rows; ``params[method]`` = parameters one message's payload describes."""

    params: dict[str, int]
    path: Path | None = None  # if set, every row is appended as soon as it exists
    rows: list[dict[str, object]] = field(default_factory=list)
    timed: bool = False  # rows carry the time model's columns (``TIME_COLUMNS``)
    _cumulative: dict[str, int] = field(default_factory=dict)
    _clock: dict[str, tuple[float, float]] = field(default_factory=dict)  # seconds, joules

    @property
    def columns(self) -> list[str]:
        return columns_for(self.timed)

    def add(
        self, method: str, server_round: int, traffic: Traffic, *, sampled: int, rejected: int,
        accuracy: float, loss: float, wall_s: float, server_flops: int = 0,
        timing: RoundTiming | None = None,
    ) -> dict[str, object]:  # fmt: skip
        total = self._cumulative.get(method, 0) + traffic.total_bytes
        self._cumulative[method] = total
        n = self.params[method]

        def bpp(payload: int, messages: int) -> float:
            return 8.0 * payload / (n * messages) if messages and n else float("nan")

        # Three kinds of sampled client: replied (a valid update, used), rejected (it replied,
        # but the payload was refused), failed (no reply, or an error reply: a crashed client,
        # a node the SuperLink reports unavailable). ``rejected`` from the strategy counts
        # both refused payloads and error replies.
        failed = traffic.error_replies + max(0, sampled - traffic.messages_up)
        bad = max(0, rejected - traffic.error_replies)
        answered = traffic.messages_up - traffic.error_replies  # messages that carry an update
        row = {
            "method": method,
            "round": server_round,
            "clients_sampled": sampled,
            "clients_replied": answered - bad,
            "clients_rejected": bad,
            "clients_failed": failed if server_round else 0,
            "uplink_payload_bytes": traffic.uplink_payload_bytes,
            "downlink_payload_bytes": traffic.downlink_payload_bytes,
            "uplink_bytes": traffic.uplink_bytes,
            "downlink_bytes": traffic.downlink_bytes,
            "uplink_wire_bytes": round(traffic.uplink_wire_bytes),
            "downlink_wire_bytes": round(traffic.downlink_wire_bytes),
            "cumulative_bytes": total,
            "uplink_bits_per_param": bpp(traffic.uplink_payload_bytes, answered),
            "downlink_bits_per_param": bpp(traffic.downlink_payload_bytes, traffic.messages_down),
            "accuracy": accuracy,
            "loss": loss,
            "wall_s": wall_s,
            "server_flops": server_flops,
        }
        if self.timed:
            if timing is None:
                raise ValueError("a timed round log needs each round's timing")
            seconds, joules = self._clock.get(method, (0.0, 0.0))
            seconds, joules = timing.next_start, joules + timing.energy_j
            self._clock[method] = (seconds, joules)
            row.update({"time_s": timing.duration, "cumulative_time_s": seconds,
                        "energy_j": timing.energy_j, "cumulative_energy_j": joules,
                        "clients_counted": sum(c.counted for c in timing.clients)})  # fmt: skip
        self.rows.append(row)
        if self.path is not None:
            # A crash or Ctrl-C mid-run keeps every finished round on disk.
            self.path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame([row], columns=self.columns).to_csv(
                self.path, mode="a", header=len(self.rows) == 1, index=False
            )
        return row

    def extend(self, rows: list[dict[str, object]]) -> None:
        """Take rows logged before (a resumed run's finished rounds), written out again."""
        for row in rows:
            self.rows.append(row)
            cumulative = row["cumulative_bytes"]
            self._cumulative[str(row["method"])] = int(cumulative)  # type: ignore[call-overload]
            if self.timed:
                self._clock[str(row["method"])] = (float(row["cumulative_time_s"]),  # type: ignore[arg-type]
                                                   float(row["cumulative_energy_j"]))  # type: ignore[arg-type]
        if self.path is not None and rows:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.frame().to_csv(self.path, index=False)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=self.columns)

    def write(self, path: Path) -> None:
        self.frame().to_csv(path, index=False)


def bytes_to_target(frame: pd.DataFrame, target: float,
                    level: str = DEFAULT_LEVEL) -> float | None:  # fmt: skip
    """Cumulative bytes (at ``level``) at the first round reaching ``target`` (None: never).

    ``frame``: one method's rounds, in any row order (summed and searched in round order)."""
    row = first_reach(with_cumulative(frame.sort_values("round", kind="stable"), level), target)
    return None if row is None else int(row["cumulative"])


def fedavg_target(rounds: pd.DataFrame) -> float | None:
    """FedAvg's best accuracy - 1 point, over the rounds it trained; ``None`` if it never
    took an update (every reply lost to faults): the untrained model is no target.

    One run's rule. Across seeds the target is the maximum of FedAvg's seed-mean curve
    (``pemn_fl.seeds``), so one lucky round cannot set it.
    """
    fed = rounds[(rounds["method"] == BASELINE) & (rounds["round"] > 0)]
    if fed.empty or ("clients_replied" in fed.columns and fed["clients_replied"].sum() == 0):
        return None
    return float(fed["accuracy"].max()) - 0.01


def summarize(rounds: pd.DataFrame, setup_bytes: int = 0,
              level: str = DEFAULT_LEVEL) -> dict[str, object]:  # fmt: skip
    """Per-method totals and the headline: bytes to reach FedAvg's best accuracy - 1 point.

    ``total_bytes``, ``bytes_to_target`` and the ratios are at byte ``level``; the message
    (``uplink_bytes``), payload and wire totals are all given beside it.
    """
    level = level_of(rounds, level)
    methods: dict[str, dict[str, object]] = {}
    target = fedavg_target(rounds)
    for method, frame in rounds.groupby("method", sort=False):
        frame = frame.sort_values("round")
        trained = frame[frame["round"] > 0]
        up, down = LEVELS[level]
        methods[str(method)] = {
            "rounds": int(trained["round"].max()) if not trained.empty else 0,
            "final_accuracy": float(frame["accuracy"].iloc[-1]),
            "best_accuracy": float(frame["accuracy"].max()),
            "uplink_bytes": int(frame["uplink_bytes"].sum()),
            "downlink_bytes": int(frame["downlink_bytes"].sum()),
            "uplink_payload_bytes": int(frame["uplink_payload_bytes"].sum()),
            "downlink_payload_bytes": int(frame["downlink_payload_bytes"].sum()),
            **({"uplink_wire_bytes": int(frame["uplink_wire_bytes"].sum()),
                "downlink_wire_bytes": int(frame["downlink_wire_bytes"].sum())}
               if "uplink_wire_bytes" in frame.columns else {}),
            "total_bytes": int(frame[up].sum() + frame[down].sum()),
            "median_uplink_bits_per_param_after_round_1": _median(
                trained[trained["round"] > 1]["uplink_bits_per_param"]
            ),
            "bytes_to_target": None if target is None
            else bytes_to_target(frame, target, level),
        }
    headline = next((m for m in methods if m != BASELINE), None)
    for name, m in methods.items():
        if name != BASELINE and BASELINE in methods:
            ours, theirs = m["bytes_to_target"], methods[BASELINE]["bytes_to_target"]
            m["fewer_bytes_than_fedavg_to_target"] = theirs / ours if ours and theirs else None
    return {
        "target_accuracy": target,
        "headline_method": headline,
        "ratio_vs_fedavg": None if headline is None or target is None
        else methods[headline].get("fewer_bytes_than_fedavg_to_target"),
        "at_best": _at_best(rounds, methods, headline, level),
        "bytes_level": level,
        "setup_bytes": setup_bytes,
        "methods": methods,
    }


def _at_best(
    rounds: pd.DataFrame, methods: dict[str, dict[str, object]], headline: str | None,
    level: str,
) -> dict | None:
    """The reverse question: bytes FedAvg and the headline method need to reach the headline
    method's best accuracy.

    Answers "how much cheaper is it at the accuracy it does reach?" when it never reaches
    FedAvg's target; ``None`` unless FedAvg and another method ran.
    """
    if headline is None or BASELINE not in methods:
        return None
    accuracy = float(methods[headline]["best_accuracy"])
    ours = bytes_to_target(rounds[rounds["method"] == headline], accuracy, level)
    theirs = bytes_to_target(rounds[rounds["method"] == BASELINE], accuracy, level)
    return {
        "method": headline,
        "accuracy": accuracy,
        "method_bytes": ours,
        "fedavg_bytes": theirs,
        "ratio": theirs / ours if ours and theirs else None,
    }


def _median(series: pd.Series) -> float | None:
    series = series.dropna()
    return None if series.empty else float(series.median())


def summary_table(summary: dict[str, object]) -> str:
    """Plain-text table for the terminal (and the README), at the summary's byte level
    (a run with ``--link`` adds ``timesummary.time_lines`` after it)."""
    level = str(summary.get("bytes_level", "message"))
    up_key, down_key = LEVELS[level]  # summary keys are named as the columns
    lines = [
        f"bytes: {level} level"
        + {"payload": " (the methods' payloads only)",
           "message": " (whole Flower messages, protobuf)",
           "wire": " (HTTP requests a Flower 1.42 deployment makes for them)"}[level],
        f"{'method':<42}{'final acc':>10}{'best acc':>10}{'uplink MB':>11}{'downlink MB':>13}"
        f"{'total MB':>11}{'MB to target':>14}",
    ]  # fmt: skip
    for method, m in summary["methods"].items():  # type: ignore[union-attr]
        btt = m["bytes_to_target"]
        lines.append(
            f"{label_of(method):<42}"
            f"{m['final_accuracy']:>10.3f}{m['best_accuracy']:>10.3f}"
            f"{m[up_key] / 1e6:>11.3f}{m[down_key] / 1e6:>13.3f}"
            f"{m['total_bytes'] / 1e6:>11.3f}{'never' if btt is None else f'{btt / 1e6:.3f}':>14}"
        )
    target = summary["target_accuracy"]
    if target is not None:
        lines.append(f"target accuracy (FedAvg best - 1 pt): {target:.3f}")
        for method, m in summary["methods"].items():  # type: ignore[union-attr]
            if method == BASELINE:
                continue
            ratio = m.get("fewer_bytes_than_fedavg_to_target")
            lines.append(
                f"{label_of(method)} never reached the target"
                if m["bytes_to_target"] is None
                else f"{label_of(method)} reached it"
                + ("" if ratio is None else f"; FedAvg needed {ratio:.1f}x more bytes")
            )
    best = summary.get("at_best")
    if best:
        fed, name, ratio = best["fedavg_bytes"], label_of(best["method"]), best["ratio"]
        # No ratio when either side needed 0 bytes: its initial model was already that good
        # (a run whose every round was lost to faults keeps its round-0 model).
        lines.append(
            f"at the best accuracy of {name} ({best['accuracy']:.3f}): it sent "
            f"{best['method_bytes'] / 1e6:.3f} MB, FedAvg "
            + ("never reached it" if fed is None else f"{fed / 1e6:.3f} MB")
            + ("" if ratio is None else f" ({ratio:.1f}x more)")
        )
    return "\n".join(lines)


class RoundsFileError(ValueError):
    """A ``rounds.csv`` that is not one ``simulations.run`` wrote (empty, binary, cut short)."""


def read_rounds(path: Path) -> pd.DataFrame:
    """A run's ``rounds.csv``, checked: the columns the plots need, one complete row or more.

    A last line without its newline, or missing a needed value, is one a run killed
    mid-write cut short: it is dropped (``attrs["torn_line"]`` names it, so that a command
    can say so), and what is drawn is only what was fully recorded. Every other line must be
    whole: a missing or non-numeric value where a number is needed (a repeated header line,
    a line from another file, a ``nan`` accuracy), an accuracy outside [0, 1] or a negative
    byte count is a ``RoundsFileError`` naming the line, never a row silently left out nor
    a traceback further on.
    """
    need = ["method", "round", "cumulative_bytes", "accuracy", "uplink_bytes", "downlink_bytes"]
    try:
        text = Path(path).read_text()
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise RoundsFileError(f"{path}: not a rounds.csv written by simulations.run "
                              f"({type(exc).__name__})") from None  # fmt: skip
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise RoundsFileError(f"{path}: lacks the column(s) {', '.join(missing)}")
    # Every byte level's columns the file has are summed by ``with_cumulative``: numbers too.
    numeric = [*need[1:], *(c for cols in LEVELS.values() for c in cols
                            if c in frame.columns and c not in need)]  # fmt: skip
    values = frame[numeric].apply(pd.to_numeric, errors="coerce")
    bad = values.isna().any(axis=1) | (frame["method"] == "")
    torn = bool(len(frame)) and (not text.endswith("\n") or bool(bad.iloc[-1]))
    if torn:  # a torn last line (cut short, or missing a value): dropped, and said
        frame, values, bad = frame.iloc[:-1], values.iloc[:-1], bad.iloc[:-1]
    for index in bad[bad].index[:1]:
        row = frame.loc[index]
        column = next((c for c in numeric if pd.isna(values.loc[index, c])), "method")
        raise RoundsFileError(f"{path}, line {index + 2}: {column}={row[column]!r} is not a "
                              f"number (a repeated header line, or a damaged or edited file); "
                              "rerun or repair that line")  # fmt: skip
    byte_columns = [c for c in numeric if c.endswith("_bytes")]
    out_of_range = ~values["accuracy"].between(0.0, 1.0) | (values[byte_columns] < 0).any(axis=1)
    for index in out_of_range[out_of_range].index[:1]:
        raise RoundsFileError(f"{path}, line {index + 2}: accuracy must be in [0, 1] and byte "
                              f"counts >= 0 (accuracy={frame.loc[index, 'accuracy']}); a "
                              "damaged or edited file")  # fmt: skip
    frame = frame.copy()
    for column in frame.columns:
        if column != "method":
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame[numeric] = values
    if frame.empty:
        raise RoundsFileError(f"{path}: no complete round recorded")
    frame = frame.reset_index(drop=True)
    frame.attrs["torn_line"] = len(frame) + 2 if torn else None
    return frame
