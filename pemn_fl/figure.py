"""The bandwidth-accuracy figure of one or more runs: accuracy against the bytes sent (or
the time model's seconds or joules), a curve per method, drawn from ``rounds.csv`` alone
(``report.read_rounds``), so ``python -m simulations.plot`` can redraw any past run.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from pemn_fl.report import (
    DEFAULT_LEVEL,
    RoundsFileError,
    label_of,
    level_of,
    marker_of,
    read_rounds,
    with_cumulative,
)

AXES = {  # x axis of a figure: the column (cumulated per method) and its label
    "bytes": ("cumulative", "total bytes sent, both directions, {level} level (MB, log scale)",
              1e-6),
    "time": ("cumulative_time_s", "simulated time (s, log scale)", 1.0),
    "energy": ("cumulative_energy_j", "clients' energy (J, log scale)", 1.0),
}


def rounds_file(run_dir: Path) -> Path:
    """A run's rounds: ``rounds.csv``, or the ``timeline.csv`` of ``simulations.timeline``."""
    run_dir = Path(run_dir)
    return run_dir / ("rounds.csv" if (run_dir / "rounds.csv").is_file() else "timeline.csv")


def plot_runs(run_dirs: Sequence[Path], out: Path, title: str | None = None,
              level: str = DEFAULT_LEVEL, x: str = "bytes") -> Path:  # fmt: skip
    """Accuracy vs cumulative MB at byte ``level`` (log x), a curve per method per run; with
    ``x`` time or energy, against the time model's seconds or joules instead. A figure of
    bytes for runs that all carry the time model's columns gains a panel against time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = {Path(d): read_rounds(rounds_file(Path(d))) for d in run_dirs}
    for run_dir, frame in frames.items():
        if frame.attrs.get("torn_line"):  # drawn without it, and said: never silently
            print(f"note: {rounds_file(run_dir)}, line {frame.attrs['torn_line']}: cut short "
                  "(a run killed mid-write?); drawn without it", file=sys.stderr)  # fmt: skip
    timed = all("cumulative_time_s" in f.columns for f in frames.values())
    if x != "bytes" and not timed:
        bare = [str(d) for d, f in frames.items() if "cumulative_time_s" not in f.columns]
        raise RoundsFileError(f"{', '.join(bare)}: no time model columns; run with --link, or "
                              "time it first: python -m simulations.timeline RUN --link 3g")
    axes_wanted = [x] if x != "bytes" else (["bytes", "time"] if timed else ["bytes"])
    fig, axes = plt.subplots(1, len(axes_wanted), figsize=(9 * len(axes_wanted), 6), dpi=120,
                             squeeze=False)  # fmt: skip
    drawn = set()
    for ax, axis in zip(axes[0], axes_wanted, strict=True):
        column, xlabel, scale = AXES[axis]
        for run_dir, frame in frames.items():
            drawn.add(level_of(frame, level))
            frame = with_cumulative(frame, level)
            tag = "" if len(run_dirs) == 1 else f" [{run_dir.name}]"
            for method, part in frame.groupby("method", sort=False):
                part = part[(part[column] > 0) & (part["round"] > 0)]
                ax.plot(part[column] * scale, part["accuracy"] * 100,
                        marker_of(str(method)), lw=2.5, ms=6,
                        label=label_of(str(method)) + tag)  # fmt: skip
            target = _target_line(run_dir) if len(run_dirs) == 1 else None
            if target is not None:
                ax.axhline(target * 100, color="grey", ls="--", lw=1.5,
                           label=f"target: FedAvg best - 1 pt ({target * 100:.1f}%)")  # fmt: skip
        ax.set_xscale("log")
        # Older runs without wire columns draw message bytes, and the axis says so.
        ax.set_xlabel(xlabel.format(level=" / ".join(sorted(drawn))), fontsize=14)
        ax.set_ylabel("test accuracy (%)", fontsize=14)
        ax.tick_params(labelsize=12)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=12, loc="lower right")
        if title:
            ax.set_title(title if axis == axes_wanted[0] else f"{title}: against time",
                         fontsize=14)  # fmt: skip
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _target_line(run_dir: Path) -> float | None:
    """The target of a run's summary.json, if readable (a damaged one costs the line only)."""
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        return None
    try:
        target = json.loads(summary_path.read_text()).get("target_accuracy")
    except (ValueError, AttributeError):
        print(f"note: {summary_path} is unreadable; the figure has no target line",
              file=sys.stderr)  # fmt: skip
        return None
    return target if isinstance(target, float) and math.isfinite(target) else None
