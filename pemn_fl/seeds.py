"""Results across seeds: what one method does on average, with its spread, at every byte budget.

One seed is one draw of everything seeded (prototype and initial model, partition, client
sample, noise, faults); a comparison that holds on one draw may not hold on the next. Here
runs of the same settings under several seeds become one result:

* **accuracy**: mean, sample std and n of each method's best and final accuracy;
* **the target** is FedAvg's *seed-mean* curve's maximum (over its training rounds) minus one
  point. A single run's maximum is one noisy round (in the Fashion-MNIST runs every method
  jumped 0.7-1.6 pt in the round whose client sample suited everyone); the maximum of the
  mean over seeds is not decided by one lucky round. For one seed it is that run's rule
  (``report.fedavg_target``);
* **bytes to the target** (and round) per seed, "reached in k of n", FedAvg's multiple;
* **accuracy at a byte budget**: for each budget (both directions, at the chosen byte level),
  each method's best accuracy among the rounds it finished within that budget, mean and std
  over seeds; per budget the leader, the runner-up, and whether the lead exceeds the seeds'
  spread (the leader ahead on every seed and by more than either method's std);
* **banded curves**: accuracy against cumulative bytes (or simulated time), averaged over
  seeds on a common log grid, with a band of +-1 std (min-max for fewer than three seeds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pemn_fl.report import (
    BASELINE,
    fedavg_target,
    first_reach,
    label_of,
    level_of,
    marker_of,
    read_rounds,
    with_cumulative,
)

# Budgets in bytes, both directions (a 1-3-10 log grid); those past every method's total
# are left out of a table.
BUDGETS = tuple(b * 1e6 for b in (0.03, 0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000, 3000))
SEED_DIR = "seed-{}"


def seed_dirs(group: Path, marker: str = "rounds.csv") -> dict[int, Path]:
    """The seed runs of a group directory (``seed-<s>/`` holding ``marker``: a rounds.csv, a
    run begun; a summary.json, a run finished), by seed."""
    found = {}
    for path in sorted(group.glob("seed-*")):
        tail = path.name[len("seed-"):]
        if tail.isdigit() and (path / marker).is_file():
            found[int(tail)] = path
    return dict(sorted(found.items()))


def load(dirs: Mapping[int, Path]) -> dict[int, pd.DataFrame]:
    """Each seed's rounds (``report.read_rounds``: checked, torn lines dropped)."""
    return {seed: read_rounds(Path(d) / "rounds.csv") for seed, d in dirs.items()}


def stats(values: Sequence[float]) -> dict[str, float | int | None]:
    """Mean, sample std (``ddof=1``; 0 for one value) and n; ``None`` for no value."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return {"mean": float(np.mean(vals)), "std": std, "n": len(vals)}


def _method_frames(frames: Mapping[int, pd.DataFrame], level: str
                   ) -> dict[str, dict[int, pd.DataFrame]]:  # fmt: skip
    """method -> seed -> its rounds (sorted), with ``cumulative`` bytes at ``level``."""
    out: dict[str, dict[int, pd.DataFrame]] = {}
    for seed, frame in frames.items():
        # Bytes summed in round order, whatever the order of the rows.
        frame = with_cumulative(frame.sort_values("round", kind="stable"), level)
        for method, part in frame.groupby("method", sort=False):
            out.setdefault(str(method), {})[seed] = part.sort_values("round")
    return out


def mean_curve(per_seed: Mapping[int, pd.DataFrame]) -> pd.Series:
    """Accuracy by round, averaged over the seeds (rounds every seed has)."""
    table = pd.concat({s: f.set_index("round")["accuracy"] for s, f in per_seed.items()}, axis=1)
    return table.dropna().mean(axis=1)


def seed_target(methods: Mapping[str, Mapping[int, pd.DataFrame]]) -> float | None:
    """FedAvg's seed-mean curve's maximum over its training rounds - 1 point (one seed:
    ``report.fedavg_target``); ``None`` without FedAvg or if it never trained."""
    fed = methods.get(BASELINE)
    if not fed:
        return None
    if len(fed) == 1:
        return fedavg_target(next(iter(fed.values())))
    if all(f["clients_replied"].sum() == 0 for f in fed.values() if "clients_replied" in f):
        return None
    curve = mean_curve(fed)
    trained = curve[curve.index > 0]
    return None if trained.empty else float(trained.max()) - 0.01


def _reach(frame: pd.DataFrame, target: float | None) -> tuple[int | None, int | None]:
    """(round, cumulative bytes) of the first round at or above ``target``
    (``report.first_reach``: the run summary's rule)."""
    row = first_reach(frame, target)
    return (None, None) if row is None else (int(row["round"]), int(row["cumulative"]))


def best_within(frame: pd.DataFrame, budget: float) -> float:
    """Best accuracy among the rounds finished within ``budget`` bytes (round 0: 0 bytes)."""
    return float(frame[frame["cumulative"] <= budget]["accuracy"].max())


def budget_table(methods: Mapping[str, Mapping[int, pd.DataFrame]],
                 budgets: Sequence[float] = BUDGETS) -> list[dict[str, object]]:  # fmt: skip
    """Per budget: each method's best accuracy within it (mean, std, n, per seed), the
    leader, the runner-up and whether the lead exceeds the seeds' spread."""
    largest = max((float(f["cumulative"].max()) for per in methods.values()
                   for f in per.values()), default=0.0)  # fmt: skip
    rows = []
    for budget in (b for b in budgets if b <= largest * 3):
        per_method = {}
        for method, per in methods.items():
            by_seed = {seed: best_within(f, budget) for seed, f in per.items()}
            trained = sum(bool(((f["round"] > 0) & (f["cumulative"] <= budget)).any())
                          for f in per.values())  # fmt: skip
            per_method[method] = {**stats(list(by_seed.values())), "per_seed": by_seed,
                                  "trained_seeds": trained}  # fmt: skip
        # A method that finished no round within the budget holds its initial model: it is
        # ranked after every method that trained, and never leads.
        ranked = sorted(per_method, key=lambda m: (per_method[m]["trained_seeds"] == 0,
                                                   -(per_method[m]["mean"] or -1.0)))  # fmt: skip
        leader = ranked[0] if ranked and per_method[ranked[0]]["trained_seeds"] else None
        row: dict[str, object] = {"budget_bytes": budget, "methods": per_method,
                                  "leader": leader,
                                  "runner_up": ranked[1] if leader and len(ranked) > 1 else None,
                                  "lead": None, "clear_lead": None}  # fmt: skip
        if row["runner_up"] is not None:
            lead, second = per_method[ranked[0]], per_method[ranked[1]]
            seeds = set(lead["per_seed"]) & set(second["per_seed"])
            row["lead"] = lead["mean"] - second["mean"]
            ahead = all(lead["per_seed"][s] > second["per_seed"][s] for s in seeds)
            # One seed has no spread to exceed: whether a lead is clear needs two or more.
            row["clear_lead"] = None if len(seeds) < 2 else ahead and row["lead"] > max(
                lead["std"], second["std"])  # fmt: skip
        rows.append(row)
    return rows


def aggregate(frames: Mapping[int, pd.DataFrame], level: str = "wire",
              budgets: Sequence[float] = BUDGETS) -> dict[str, object]:  # fmt: skip
    """The across-seeds summary of runs of the same settings (``frames``: seed -> rounds)."""
    # Seeds in order: every mean and std sums in the same order, so ``--seeds 3,1,2`` gives
    # the summary of ``--seeds 1,2,3`` to the last digit (a tie stays a tie).
    frames = dict(sorted(frames.items()))
    level = min((level_of(f, level) for f in frames.values()),
                key=["payload", "message", "wire"].index)  # fmt: skip
    methods = _method_frames(frames, level)
    target = seed_target(methods)
    fed_bytes = {seed: _reach(f, target)[1] for seed, f in methods.get(BASELINE, {}).items()}
    out: dict[str, dict[str, object]] = {}
    for method, per in methods.items():
        reached = {seed: _reach(f, target) for seed, f in per.items()}
        ratios = {seed: (fed_bytes[seed] / b) if b and fed_bytes.get(seed) else None
                  for seed, (_, b) in reached.items()}  # fmt: skip
        out[method] = {
            "best_accuracy": stats([f["accuracy"].max() for f in per.values()]),
            "final_accuracy": stats([f["accuracy"].iloc[-1] for f in per.values()]),
            "total_bytes": stats([f["cumulative"].iloc[-1] for f in per.values()]),
            "bytes_to_target": {str(s): b for s, (_, b) in reached.items()},
            "round_to_target": {str(s): r for s, (r, _) in reached.items()},
            "reached_target": sum(b is not None for _, b in reached.values()),
            "seeds": len(per),
            **({} if method == BASELINE else {
                "fewer_bytes_than_fedavg_to_target": {str(s): r for s, r in ratios.items()},
                "fewer_bytes_than_fedavg_to_target_min": min(
                    (r for r in ratios.values() if r is not None), default=None)
                if all(r is not None for r in ratios.values()) else None,
            }),
        }  # fmt: skip
    return {
        "seeds": sorted(frames),
        "n": len(frames),
        "bytes_level": level,
        "target_accuracy": target,
        "target_rule": ("FedAvg's best - 1 pt" if len(frames) == 1 else
                        "maximum of FedAvg's seed-mean accuracy curve over its training rounds "
                        "- 1 pt"),  # fmt: skip
        "methods": out,
        "budgets": budget_table(methods, budgets),
    }


def aggregate_table(summary: Mapping[str, object]) -> str:
    """Plain text for the terminal: accuracy mean +- std and the target, then the budgets."""
    n = summary["n"]
    target = summary["target_accuracy"]
    lines = [f"{n} seed(s) {summary['seeds']}, bytes at the {summary['bytes_level']} level",
             f"{'method':<42}{'best acc':>16}{'final acc':>16}{'total MB':>12}{'target':>9}"]
    for method, m in summary["methods"].items():  # type: ignore[union-attr]
        lines.append(f"{label_of(method):<42}{plus_minus(m['best_accuracy'], 100):>16}"
                     f"{plus_minus(m['final_accuracy'], 100):>16}"
                     f"{plus_minus(m['total_bytes'], 1e-6, '.2f'):>12}"
                     f"{m['reached_target']:>5}/{m['seeds']}")  # fmt: skip
    if target is not None:
        lines.append(f"target: {summary['target_rule']} = {100 * target:.2f} %")
    lines.append("")
    lines.append(budget_markdown(summary["budgets"]))  # type: ignore[arg-type]
    return "\n".join(lines)


def plus_minus(s: Mapping[str, object], scale: float, fmt: str = ".2f") -> str:
    """``mean ± std`` of a ``stats`` dict, scaled (100 for %, 1e-6 for MB); ``-`` if empty."""
    if s["mean"] is None:
        return "-"
    return f"{s['mean'] * scale:{fmt}} ± {s['std'] * scale:{fmt}}"  # type: ignore[operator]


def megabytes(budget: float) -> str:
    return f"{budget / 1e6:g} MB"


def budget_markdown(rows: Sequence[Mapping[str, object]],
                    unit: Callable[[float], str] = megabytes) -> str:  # fmt: skip
    """The budget table as markdown: a row per method, a column per budget (``unit`` names
    it: megabytes, or a duration for a time budget), best accuracy (%) within it, mean ± std
    ("(initial)": no round finished within it); the last rows name the leader and whether
    its lead is clear."""
    if not rows:
        return ""
    methods = list(rows[0]["methods"])  # type: ignore[arg-type]
    head = "| method | " + " | ".join(f"≤ {unit(float(r['budget_bytes']))}"  # type: ignore[arg-type]
                                      for r in rows) + " |"
    lines = [head, "|" + "---|" * (len(rows) + 1)]
    for method in methods:
        cells = []
        for row in rows:
            stat = row["methods"][method]  # type: ignore[index]
            cell = plus_minus(stat, 100, ".1f") if stat["trained_seeds"] else "(initial)"
            cells.append(f"**{cell}**" if row["leader"] == method else cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    clear = {True: "yes", False: "no", None: "-"}
    lines.append("| *leads* | " + " | ".join(str(r["leader"] or "-") for r in rows) + " |")
    lines.append("| *clear lead* | " + " | ".join(clear[r["clear_lead"]] for r in rows)  # type: ignore[index]
                 + " |")
    return "\n".join(lines)


def band_grid(methods: Mapping[str, Mapping[int, pd.DataFrame]], points: int = 60
              ) -> np.ndarray:  # fmt: skip
    """A common log-bytes grid from the smallest first round to the largest total."""
    firsts = [float(f[f["cumulative"] > 0]["cumulative"].min())
              for per in methods.values() for f in per.values() if (f["cumulative"] > 0).any()]
    lasts = [float(f["cumulative"].max()) for per in methods.values() for f in per.values()]
    if not firsts:
        return np.array([])
    return np.geomspace(min(firsts), max(lasts), points)


def band(per_seed: Mapping[int, pd.DataFrame], grid: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(mean, low, high) of a method's accuracy at each byte count of ``grid``.

    At ``x`` bytes a run holds the model of its last round finished within ``x`` (its
    initial model before its first round, its final model after its last): what a user
    who stopped at that budget would have. The band is +-1 std over seeds, or min-max for
    fewer than three."""
    table = np.stack([
        f["accuracy"].to_numpy()[np.searchsorted(f["cumulative"].to_numpy(), grid, "right") - 1]
        for f in per_seed.values()
    ])  # fmt: skip
    mean = table.mean(axis=0)
    if len(per_seed) >= 3:
        std = table.std(axis=0, ddof=1)
        return mean, mean - std, mean + std
    return mean, table.min(axis=0), table.max(axis=0)


def plot_bands(groups: Mapping[str, Mapping[int, pd.DataFrame]], out: Path, level: str = "wire",
               title: str | None = None, target: float | None = None,
               axis: str = "bytes") -> Path:  # fmt: skip
    """Each method's seed-mean accuracy against cumulative bytes with its band; ``groups``
    maps a tag (one per group directory, '' for one) to its seeds' rounds. With a target, a
    second panel zooms on the band around it, where the methods are told apart. ``axis`` time
    or energy: against the time model's seconds or joules (frames with its columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if target is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(8.5 * panels, 6.5), dpi=110, sharex=True,
                             squeeze=False)  # fmt: skip
    axes = axes[0]
    levels, curves = _draw_bands(axes, groups, level, axis)
    _style_band_axes(fig, axes, levels, curves, title, target, axis)
    fig.savefig(out)
    plt.close(fig)
    return out


def _draw_bands(axes: Sequence, groups: Mapping[str, Mapping[int, pd.DataFrame]], level: str,
                axis: str) -> tuple[set[str], list[np.ndarray]]:  # fmt: skip
    """Each method's mean curve and band on each panel, from its first round to its end."""
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab20").colors
    levels: set[str] = set()
    curves: list[np.ndarray] = []  # the mean curves drawn
    scale = 1e-6 if axis == "bytes" else 1.0  # MB, or seconds / joules
    for tag, frames in groups.items():
        lvl = min((level_of(f, level) for f in frames.values()),
                  key=["payload", "message", "wire"].index)  # fmt: skip
        levels.add(lvl)
        methods = (_method_frames(frames, lvl) if axis == "bytes" else
                   _time_frames(frames, TIMED[axis][0]))  # fmt: skip
        grid = band_grid(methods)
        for method, per in methods.items():
            sent = [f["cumulative"][f["cumulative"] > 0] for f in per.values()]
            first = min((float(c.min()) for c in sent if not c.empty), default=np.inf)
            last = max(float(f["cumulative"].max()) for f in per.values())
            x = grid[(grid >= first) & (grid <= last)]
            if x.size == 0:
                continue
            mean, low, high = band(per, x)
            n, i = len(per), len(curves)
            colour = colours[(2 * i) % 20 + (i // 10) % 2]
            label = (f"{label_of(method)}{f' [{tag}]' if tag else ''} (n={n}, band "
                     f"{'±1 std' if n >= 3 else 'min-max'})")  # fmt: skip
            curves.append(mean)
            for ax in axes:
                ax.plot(x * scale, mean * 100, marker_of(method), color=colour, lw=2.0, ms=4,
                        markevery=6, label=label)  # fmt: skip
                ax.fill_between(x * scale, low * 100, high * 100, color=colour, alpha=0.15)
    return levels, curves


def _style_band_axes(fig: object, axes: Sequence, levels: set[str], curves: list[np.ndarray],
                     title: str | None, target: float | None, axis: str) -> None:  # fmt: skip
    """The target line and the zoom's limits, log x, labels, grid and the shared legend."""
    if target is not None:
        for ax in axes:
            ax.axhline(target * 100, color="grey", ls="--", lw=1.5,
                       label=f"target: FedAvg seed-mean best - 1 pt ({target * 100:.1f}%)")
        best = max((float(np.max(c)) for c in curves), default=target) * 100
        axes[1].set_ylim(target * 100 - 5, best + 0.5)
    for ax, name in zip(axes, (title, "zoom on the target"), strict=False):
        label = (f"total bytes sent, both directions, {' / '.join(sorted(levels))} level "
                 "(MB, log scale)" if axis == "bytes" else TIMED[axis][1])  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel(label, fontsize=12)
        ax.set_ylabel("test accuracy (%), mean over seeds", fontsize=12)
        ax.grid(True, which="both", alpha=0.3)
        if name:
            ax.set_title(name, fontsize=12)
    panels, (handles, labels) = len(axes), axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=9, loc="lower center",  # type: ignore[attr-defined]
               ncol=2 if panels == 1 else 3, frameon=False)  # fmt: skip
    rows = (len(labels) + (1 if panels == 1 else 2)) // (2 if panels == 1 else 3)
    fig.tight_layout(rect=(0, 0.035 * rows + 0.02, 1, 1))  # type: ignore[attr-defined]


# x axes of the time model's figures: its column and the axis label
TIMED = {"time": ("cumulative_time_s", "simulated time (s, log scale)"),
         "energy": ("cumulative_energy_j", "clients' energy (J, log scale)")}


def _time_frames(frames: Mapping[int, pd.DataFrame], column: str = "cumulative_time_s"
                 ) -> dict[str, dict[int, pd.DataFrame]]:  # fmt: skip
    """method -> seed -> its timed rounds (sorted), ``cumulative`` = ``column`` (the time
    model's seconds, or joules) so far."""
    out: dict[str, dict[int, pd.DataFrame]] = {}
    for seed, frame in frames.items():
        for method, part in frame.groupby("method", sort=False):
            part = part.sort_values("round").copy()
            part["cumulative"] = part[column]
            # The initial evaluation sends nothing: curves and budgets start at the first round.
            part.loc[part["round"] == 0, "cumulative"] = 0.0
            out.setdefault(str(method), {})[seed] = part
    return out


def aggregate_time(frames: Mapping[int, pd.DataFrame],
                   budgets: Sequence[float] | None = None) -> dict[str, object]:  # fmt: skip
    """The across-seeds summary in simulated time and energy (frames with the time model's
    columns, ``pemn_fl.timeline.TIME_COLUMNS``): the same target as the byte summary,
    time and energy to it per seed, FedAvg's multiples, and the time-budget table."""
    from pemn_fl.timesummary import TIME_BUDGETS

    methods = _time_frames(dict(sorted(frames.items())))  # seeds in order, as ``aggregate``
    target = seed_target(methods)
    fed = methods.get(BASELINE, {})

    def at(frame: pd.DataFrame, column: str) -> float | None:
        row = first_reach(frame, target)
        return None if row is None else float(row[column])

    out: dict[str, dict[str, object]] = {}
    for method, per in methods.items():
        entry: dict[str, object] = {"seeds": len(per)}
        for kind, column in (("time", "cumulative_time_s"), ("energy", "cumulative_energy_j")):
            ours = {seed: at(f, column) for seed, f in per.items()}
            theirs = {seed: at(f, column) for seed, f in fed.items()}
            entry[f"{kind}_to_target"] = {str(s): v for s, v in ours.items()}
            entry[f"{kind}_to_target_mean"] = stats([v for v in ours.values() if v is not None])
            if method != BASELINE:
                ratios = {seed: theirs[seed] / v if v and theirs.get(seed) else None
                          for seed, v in ours.items()}  # fmt: skip
                entry[f"less_{kind}_than_fedavg"] = {str(s): r for s, r in ratios.items()}
                entry[f"less_{kind}_than_fedavg_min"] = (
                    min(ratios.values()) if ratios and all(r is not None for r in
                                                           ratios.values()) else None)  # type: ignore[type-var]
        entry["reached_target"] = sum(v is not None for v in
                                      entry["time_to_target"].values())  # type: ignore[union-attr]
        entry["total_time"] = stats([float(f["cumulative_time_s"].iloc[-1]) for f in per.values()])
        entry["total_energy"] = stats([float(f["cumulative_energy_j"].iloc[-1])
                                       for f in per.values()])  # fmt: skip
        out[method] = entry
    return {"seeds": sorted(frames), "n": len(frames), "target_accuracy": target,
            "methods": out, "time_budgets": budget_table(methods, budgets or TIME_BUDGETS)}


def time_table(summary: Mapping[str, object]) -> str:
    """Plain text of ``aggregate_time``: time and energy to the target, then the budgets."""
    from pemn_fl.timesummary import duration, energy

    lines = [f"{summary['n']} seed(s) {summary['seeds']}; target "
             + ("none" if summary["target_accuracy"] is None
                else f"{100 * float(summary['target_accuracy']):.2f} %"),  # type: ignore[arg-type]
             f"{'method':<42}{'reached':>9}{'time to target':>16}{'vs FedAvg':>16}"
             f"{'energy to target':>18}{'vs FedAvg':>16}"]  # fmt: skip

    def span(per: Mapping[str, float | None] | None) -> str:
        vals = [v for v in (per or {}).values() if v is not None]
        if not vals:
            return "-"
        text = f"{min(vals):.1f}-{max(vals):.1f}x" if len(vals) > 1 else f"{vals[0]:.1f}x"
        return text if len(vals) == len(per or {}) else text + f" ({len(vals)}/{len(per or {})})"

    for method, m in summary["methods"].items():  # type: ignore[union-attr]
        t, e = m["time_to_target_mean"], m["energy_to_target_mean"]
        lines.append(f"{label_of(method):<42}{m['reached_target']:>5}/{m['seeds']:<3}"
                     f"{duration(t['mean']):>16}{span(m.get('less_time_than_fedavg')):>16}"
                     f"{energy(e['mean']):>18}{span(m.get('less_energy_than_fedavg')):>16}")
    lines += ["", budget_markdown(summary["time_budgets"], unit=duration)]  # type: ignore[arg-type]
    return "\n".join(lines)
