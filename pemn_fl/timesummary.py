"""Time and energy to the target: the time model's answers in words and numbers.

A timed run (``pemn_fl.timeline.replay`` or a run with ``--link``) has per round its
duration and energy; here they become what a user asks: how long, and how many joules,
until the model reaches the target, per method, and how many times more FedAvg needs. The
target and the reach rule are the byte summary's (``pemn_fl.report``), so a method reaches
the target in the same round whether counted in bytes, seconds or joules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from pemn_fl.report import BASELINE, first_reach, label_of

# Budgets of simulated time for the time-budget table: 1 min, 10 min, 1 h, ... (seconds).
TIME_BUDGETS = (60.0, 180.0, 600.0, 1800.0, 3600.0, 3 * 3600.0, 10 * 3600.0, 30 * 3600.0,
                100 * 3600.0)  # fmt: skip


def at_target(frame: pd.DataFrame, target: float | None, column: str) -> float | None:
    """``column`` (a cumulative one) at the first round reaching ``target``; None: never."""
    row = first_reach(frame, target)
    return None if row is None else float(row[column])


def summarize_time(timed: pd.DataFrame, target: float | None) -> dict[str, dict[str, object]]:
    """Per method: time and energy to the target and in all, and FedAvg's multiples."""
    out: dict[str, dict[str, object]] = {}
    for method, frame in timed.groupby("method", sort=False):
        frame = frame.sort_values("round")
        out[str(method)] = {
            "time_to_target_s": at_target(frame, target, "cumulative_time_s"),
            "energy_to_target_j": at_target(frame, target, "cumulative_energy_j"),
            "total_time_s": float(frame["cumulative_time_s"].iloc[-1]),
            "total_energy_j": float(frame["cumulative_energy_j"].iloc[-1]),
        }
    base = out.get(BASELINE)
    for method, m in out.items():
        if method == BASELINE or base is None:
            continue
        for kind in ("time", "energy"):
            unit = "s" if kind == "time" else "j"
            ours, theirs = m[f"{kind}_to_target_{unit}"], base[f"{kind}_to_target_{unit}"]
            m[f"less_{kind}_than_fedavg_to_target"] = (
                theirs / ours if ours and theirs else None)  # type: ignore[operator]
    return out


def duration(seconds: float | None) -> str:
    """``1 h 12 min``, ``3 min 5 s``, ``42 s``, ``0.8 s``; ``never`` for None."""
    if seconds is None or math.isnan(seconds):
        return "never"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if minutes < 10 and secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def energy(joules: float | None) -> str:
    """``12.3 kJ``, ``450 J``; ``never`` for None."""
    if joules is None or math.isnan(joules):
        return "never"
    return f"{joules / 1000:.1f} kJ" if joules >= 1000 else f"{joules:.0f} J"


def upper_first(text: str) -> str:
    """``text`` with its first letter in capitals (``str.capitalize`` lowers the rest: 3G)."""
    return text[:1].upper() + text[1:]


def where(timed: Mapping[str, object]) -> str:
    """"on 3G links (phone devices, Flower 1.42's polling)" from a summary's time section."""
    from pemn_fl.profiles import display

    transport = ("Flower 1.42's polling" if timed.get("transport") == "flower"
                 else "no polling")  # fmt: skip
    return (f"on {display(str(timed['link']))} links ({display(str(timed['client_device']))}"
            f" devices, {transport})")


def sentence(summary: Mapping[str, Mapping[str, object]], where: str) -> str:
    """The classroom's one line: how long FedAvg and each other method need to the target."""
    if BASELINE not in summary:
        return ""
    fed = summary[BASELINE]["time_to_target_s"]
    parts = [f"{label_of(m)} {duration(s['time_to_target_s'])}"  # type: ignore[arg-type]
             for m, s in summary.items() if m != BASELINE]  # fmt: skip
    head = (f"{where}, FedAvg needs {duration(fed)} to reach the target" if fed is not None
            else f"{where}, FedAvg never reaches the target")  # type: ignore[arg-type]
    return head + (", " + ", ".join(parts) if parts else "") + "."


def table(summary: Mapping[str, Mapping[str, object]]) -> str:
    """Plain text: time and energy to the target and in all, per method."""
    lines = [f"{'method':<42}{'to target':>14}{'energy to target':>18}{'vs FedAvg':>11}"
             f"{'total time':>14}{'total energy':>14}"]  # fmt: skip
    for method, m in summary.items():
        ratio = m.get("less_time_than_fedavg_to_target")
        lines.append(f"{label_of(method):<42}{duration(m['time_to_target_s']):>14}"  # type: ignore[arg-type]
                     f"{energy(m['energy_to_target_j']):>18}"  # type: ignore[arg-type]
                     f"{'-' if ratio is None else f'{ratio:.1f}x':>11}"
                     f"{duration(m['total_time_s']):>14}{energy(m['total_energy_j']):>14}")  # type: ignore[arg-type]
    return "\n".join(lines)


def time_lines(summary: Mapping[str, object]) -> str:
    """The terminal's time section of a run's summary (``""`` without ``--link``)."""
    timed = summary.get("time")
    if not isinstance(timed, Mapping):
        return ""
    methods = timed["methods"]  # type: ignore[index]
    return "\n".join(["", f"time and energy {where(timed)}:", table(methods),  # type: ignore[arg-type]
                      sentence(methods, upper_first(where(timed)))])  # type: ignore[arg-type]
