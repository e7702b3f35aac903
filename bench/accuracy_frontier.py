"""The bandwidth-accuracy frontier: every method, tuned on an equal budget, on one meter.

``python -m bench.accuracy_frontier --preset digits|fashion-mnist [--rounds N]``

For each method in the registry (or ``--methods``) this runs ``python -m simulations.run``
(Flower's Simulation Engine, every byte metered) once per configuration in its grid
(``Method.grid``): three each, FedAvg included, so every method gets the same tuning budget
(mostly its step size). All runs share the preset's clients, partitions, per-round client
sample, rounds and data. The configuration kept for a method is the one with the best test
accuracy over the rounds (ties: fewer bytes), the same rule for every method.

Resumable: each run lives in ``<out>/runs/<method>__<option>=<value>,.../`` and is
skipped when its ``summary.json`` exists, so a sweep that cannot finish in one sitting is
continued by running the same command again; a run killed part-way (``<run>.partial/`` with a
checkpoint, made with the same options) goes on from its last round. ``--report-only``
rebuilds the table and figure from the runs on disk.

Writes ``frontier.csv`` (every run), ``frontier.md`` (the tuned table) and ``frontier.png``
(accuracy against cumulative message bytes, both directions, log x) to ``<out>``: the
*tuning* report, on the tuning seed (the preset's ``--seed``, 0).

**Tune on one seed, report on fresh ones** (``--seeds 1,2,3``): each method's configuration
is the one picked above on the tuning seed's runs (its test accuracy; no fresh seed is ever
looked at to pick), then that configuration runs once per fresh seed
(``fresh/<method>__<config>/seed-<s>/``, seed by seed, so a partial sweep has whole seeds).
Only those runs are reported, across seeds (``pemn_fl.seeds``), at the wire level with the
message level beside it: ``frontier-seeds.md`` (accuracy mean ± std, bytes to FedAvg's
seed-mean best - 1 pt per seed, accuracy within byte budgets), ``frontier-seeds.json`` and
``frontier-seeds.png`` (mean curves with bands).

**A longer horizon** (``--rounds 100 --picked-from <the 30-round sweep>``) keeps the short
tuning's picks unless ``--repick-from DIR`` names a neighbours check made at these rounds
(``bench.neighbours``: the kept configuration and its neighbours on the tuning seed, still no
fresh seed looked at); a method it re-picked runs and is reported with the new configuration,
marked *(re-picked)*. The report records the configuration it used per method
(``frontier-seeds.json``'s ``configs``), so the short pick's runs may stay beside it in
``fresh/`` (``bench.fresh_runs``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pemn_fl import window as W
from pemn_fl.report import BASELINE

PRESETS: dict[str, list[str]] = {
    # The classroom default (python -m simulations.run --clients 20), longer.
    "digits": ["--clients", "20", "--dataset", "digits", "--model", "mlp"],
    # The Fashion-MNIST reference setting of the README.
    "fashion-mnist": [
        "--clients", "20", "--dataset", "fashion-mnist", "--model", "conv2", "--width", "0.25",
        "--dense-width", "0.25", "--partition", "dirichlet", "--alpha", "0.5",
        "--fraction", "0.5", "--local-epochs", "1", "--margin", "0.1",
    ],
}  # fmt: skip
DEFAULT_ROUNDS = {"digits": 30, "fashion-mnist": 40}

# Three configurations per method, FedAvg included: an equal tuning budget. Each tunes the
# method's step size; evolve_dither spends one of its three on its rate knob instead. Each
# method declares its own (``Method.grid``); a method without one is not in the study.
Config = dict[str, float]
# A method re-picked at a longer horizon whose new configuration has not run on every seed yet:
# method -> (kept configuration, re-picked one, the seeds it lacks).
Pending = dict[str, tuple[str, str, list[int]]]


def grids() -> dict[str, tuple[Config, ...]]:
    """Every registered method's tuning grid, the baseline's first (the table is read
    against it), then in the registry's order."""
    from pemn_fl.methods import registry

    found = {name: tuple(dict(c) for c in m.grid) for name, m in registry().items() if m.grid}
    return dict(sorted(found.items(), key=lambda item: item[0] != BASELINE))


def config_name(config: Config) -> str:
    return ",".join(f"{k}={v:g}" for k, v in config.items())


def run_dir(out: Path, method: str, config: Config) -> Path:
    return out / "runs" / f"{method}__{config_name(config)}"


def fresh_dir(out: Path, method: str, config: Config, seed: int) -> Path:
    """A picked configuration's run on a fresh (reporting) seed."""
    return out / "fresh" / f"{method}__{config_name(config)}" / f"seed-{seed}"


def _killed_run_of(partial: Path, args: list[str]) -> bool:
    """Whether ``partial`` is a checkpointed run of exactly ``args`` (its config.json's
    command, less the script and ``--out``): only then may it be resumed."""
    try:
        command = json.loads((partial / "config.json").read_text())["command"].split()
    except (OSError, ValueError, KeyError, AttributeError):
        return False
    if "--out" in command:
        i = command.index("--out")
        command = command[:i] + command[i + 2:]
    return (partial / "checkpoint" / "server.pkl").is_file() and command[1:] == args


def run_one(base: list[str], method: str, config: Config, rounds: int, out: Path,
            seed: int | None = None) -> None:  # fmt: skip
    """One real simulation; skipped if its results are already on disk.

    ``seed`` None: a tuning run (the preset's seed, ``runs/``); else a fresh-seed run of a
    picked configuration (``fresh/``)."""
    target = run_dir(out, method, config) if seed is None else fresh_dir(out, method, config, seed)
    if (target / "summary.json").exists():
        print(f"skip (done): {target.name}", flush=True)
        return
    partial = target.with_name(target.name + ".partial")
    options = [part for k, v in config.items() for part in (f"--{k}", f"{v:g}")]
    seeding = [] if seed is None else ["--seed", str(seed)]
    args = [*base, "--methods", method, *options, *seeding, "--rounds", str(rounds), "--quiet"]
    if _killed_run_of(partial, args):
        # A run killed part-way (a session's end) with these very options: it goes on from
        # its last checkpointed round rather than starting again (a 100-round Fashion-MNIST
        # run is an hour on 2 cores); simulations.run checks its checkpoints and rows.
        print(f"resume: {partial.name}", flush=True)
        cmd = [sys.executable, "-m", "simulations.run", "--resume", str(partial), "--quiet"]
    else:
        shutil.rmtree(partial, ignore_errors=True)
        cmd = [sys.executable, "-m", "simulations.run", *args, "--out", str(partial)]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-1500:]}{proc.stderr[-3000:]}")
    (partial / "bandwidth_accuracy.png").unlink(missing_ok=True)  # the frontier figure has it
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(target)
    print(f"done: {target.name} in {time.monotonic() - started:.0f} s", flush=True)


def parse_config(name: str) -> Config:
    """The configuration ``config_name`` wrote as ``name`` (``bits=4,dense-lr=0.05``)."""
    return {key: float(value) for key, value in (part.split("=", 1) for part in name.split(","))}


def _config_of(method: str, name: str) -> Config:
    """A configuration by its name: the grid's own entry, else the name read back (one
    re-picked beyond the grid at a longer horizon by ``bench.neighbours``)."""
    found = next((c for c in grids()[method] if config_name(c) == name), None)
    return found if found is not None else parse_config(name)


def repicked(picked: pd.DataFrame, directory: Path,
             rounds: int) -> tuple[pd.DataFrame, dict[str, tuple[str, str]]]:  # fmt: skip
    """The picks, each method re-picked where a neighbours check at this horizon decided on
    another configuration (``directory/picks.json``, written by ``bench.neighbours``), and
    what changed (method -> (kept, re-picked)). A method the check has not decided keeps the
    short tuning's pick. Raises ValueError with the fix when the check does not fit here."""
    path = directory / "picks.json"
    if not path.is_file():
        raise ValueError(f"{path} not found: run python -m bench.neighbours --rounds {rounds} "
                         f"... --out {directory} first (it writes the picks)")  # fmt: skip
    try:
        data = json.loads(path.read_text())
        checked, entries = data["rounds"], data["methods"]
        picks = {m: (str(e["kept"]), str(e["pick"]), bool(e["decided"]))
                 for m, e in entries.items()}  # fmt: skip
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path} is not a bench.neighbours picks file ({err!r}): rebuild it "
                         "with python -m bench.neighbours ... --report-only") from None
    if checked != rounds:
        raise ValueError(f"{path} checked {checked} rounds and this frontier runs {rounds}: "
                         f"check the neighbours at --rounds {rounds}")  # fmt: skip
    picked, changed = picked.copy(), {}
    for method, (kept, pick, decided) in picks.items():
        if method not in picked.index or not decided:
            continue
        if kept != picked.loc[method, "config"]:
            raise ValueError(f"{path}: {method}'s kept configuration {kept} is not the one "
                             f"picked here ({picked.loc[method, 'config']}): that check started "
                             "from another tuning sweep; give the same --picked-from")
        if pick != kept:
            picked.loc[method, "config"] = pick
            changed[method] = (kept, pick)
    return picked, changed


def _bytes_to(frame: pd.DataFrame, level: float | None) -> int | None:
    if level is None:
        return None
    hit = frame[frame["accuracy"] >= level - 1e-12]
    return None if hit.empty else int(hit["cumulative_bytes"].iloc[0])


def _median(series: pd.Series) -> float | None:
    series = series.dropna()
    return None if series.empty else float(series.median())


def collect(out: Path, methods: list[str]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """One row per finished run; the kept (tuned) run's rounds per method."""
    rows, curves = [], {}
    for method in methods:
        for config in grids()[method]:
            d = run_dir(out, method, config)
            if not (d / "rounds.csv").exists() or not (d / "summary.json").exists():
                continue
            frame = pd.read_csv(d / "rounds.csv")
            frame = frame[frame["method"] == method].sort_values("round")
            curves[f"{method}|{config_name(config)}"] = frame
            best = float(frame["accuracy"].max())
            after1 = frame[frame["round"] > 1]
            rows.append({
                "method": method, "config": config_name(config),
                "rounds": int(frame["round"].max()),
                "best_accuracy": best,
                "bytes_at_best": _bytes_to(frame, best),
                "total_bytes": int(frame["cumulative_bytes"].iloc[-1]),
                "median_uplink_bpp": _median(after1["uplink_bits_per_param"]),
                "median_downlink_bpp": _median(after1["downlink_bits_per_param"]),
            })  # fmt: skip
    return pd.DataFrame(rows), curves


def tuned(runs: pd.DataFrame) -> pd.DataFrame:
    """The kept configuration per method: best accuracy, then fewer bytes to reach it."""
    ordered = runs.sort_values(["method", "best_accuracy", "bytes_at_best"],
                               ascending=[True, False, True])  # fmt: skip
    return ordered.groupby("method", sort=False).head(1).set_index("method")


def frontier_table(runs: pd.DataFrame, curves: dict[str, pd.DataFrame],
                   methods: list[str]) -> tuple[pd.DataFrame, dict[str, float | None]]:  # fmt: skip
    kept = tuned(runs)
    targets: dict[str, float | None] = {"target_1pt": None, "target_2pt": None}
    if BASELINE in kept.index:
        fed_best = float(kept.loc[BASELINE, "best_accuracy"])
        targets = {"target_1pt": fed_best - 0.01, "target_2pt": fed_best - 0.02}
    rows = []
    for method in methods:
        if method not in kept.index:
            continue
        row = kept.loc[method]
        frame = curves[f"{method}|{row['config']}"]
        tried = runs[runs["method"] == method]
        rows.append({
            "method": method,
            "tuned": row["config"],
            "tried": "; ".join(f"{c}: {a:.4f}" for c, a in
                               zip(tried["config"], tried["best_accuracy"], strict=True)),
            "best_accuracy": float(row["best_accuracy"]),
            "bytes_to_fedavg_best_minus_1pt": _bytes_to(frame, targets["target_1pt"]),
            "bytes_to_fedavg_best_minus_2pt": _bytes_to(frame, targets["target_2pt"]),
            "total_bytes": int(row["total_bytes"]),
            "median_uplink_bpp": row["median_uplink_bpp"],
            "median_downlink_bpp": row["median_downlink_bpp"],
        })  # fmt: skip
    table = pd.DataFrame(rows)
    if not table.empty and BASELINE in set(table["method"]):
        fed = table.set_index("method").loc[BASELINE]
        for col, name in (("bytes_to_fedavg_best_minus_1pt", "fewer_bytes_than_fedavg_1pt"),
                          ("bytes_to_fedavg_best_minus_2pt", "fewer_bytes_than_fedavg_2pt")):
            table[name] = [
                (fed[col] / b) if (b and b == b and fed[col] and fed[col] == fed[col]) else None
                for b in table[col]
            ]  # fmt: skip
    return table, targets


def markdown(table: pd.DataFrame, targets: dict[str, float | None], header: str) -> str:
    def mb(v: object) -> str:
        return "never" if v is None or v != v else f"{float(v) / 1e6:.3f}"

    def x(v: object) -> str:
        return "-" if v is None or v != v else f"{float(v):.1f}x"

    def bpp(v: object) -> str:
        return "-" if v is None or v != v else f"{float(v):.3f}"

    lines = [header, ""]
    if targets["target_1pt"] is not None:
        lines.append(f"Targets: tuned FedAvg best - 1 pt = {targets['target_1pt']:.4f}, "
                     f"- 2 pt = {targets['target_2pt']:.4f}.")  # fmt: skip
        lines.append("")
    lines += [
        "| method | tuned | best acc | MB to -1 pt | vs FedAvg | MB to -2 pt | vs FedAvg "
        "| up bpp | down bpp | total MB | tried (config: best acc) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        lines.append(
            f"| {r['method']} | {r['tuned']} | {r['best_accuracy']:.4f} "
            f"| {mb(r['bytes_to_fedavg_best_minus_1pt'])} "
            f"| {x(r.get('fewer_bytes_than_fedavg_1pt'))} "
            f"| {mb(r['bytes_to_fedavg_best_minus_2pt'])} "
            f"| {x(r.get('fewer_bytes_than_fedavg_2pt'))} "
            f"| {bpp(r['median_uplink_bpp'])} | {bpp(r['median_downlink_bpp'])} "
            f"| {mb(r['total_bytes'])} | {r['tried']} |"
        )
    lines += ["", "MB: message bytes (Flower's serialised messages, both directions, all "
              "clients), cumulative until the first round at or above the target. up/down bpp: "
              "median over rounds 2.. of payload bits per parameter per client message."]
    return "\n".join(lines) + "\n"


def plot(table: pd.DataFrame, curves: dict[str, pd.DataFrame], targets: dict[str, float | None],
         path: Path, title: str) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pemn_fl.report import label_of, marker_of

    # Two panels on one x axis: every curve, and a zoom on the band around the targets where
    # the methods are told apart. One colour per method (tab20), the legend beside the plot.
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(17, 7), dpi=110, sharex=True)
    colours = plt.get_cmap("tab20").colors
    shown = []
    for i, (_, r) in enumerate(table.iterrows()):
        frame = curves[f"{r['method']}|{r['tuned']}"]
        shown.append(frame)
        part = frame[frame["cumulative_bytes"] > 0]
        for axis in (ax, zoom):
            axis.plot(part["cumulative_bytes"] / 1e6, part["accuracy"] * 100,
                      marker_of(r["method"]), color=colours[(2 * i) % 20 + (i // 10) % 2],
                      lw=2.2, ms=4, label=f"{label_of(r['method'])} ({r['tuned']})")  # fmt: skip
    for key, style, points in (("target_1pt", "--", 1), ("target_2pt", ":", 2)):
        if targets[key] is not None:
            for axis in (ax, zoom):
                axis.axhline(targets[key] * 100, color="grey", ls=style, lw=1.5,
                             label=f"tuned FedAvg best - {points} pt")  # fmt: skip
    # Left: from the worst tuned curve's round-2 accuracy up (round 1 of a slow starter would
    # squash the rest). Right: 4 points below the -2 pt target to just above the best.
    low = min((float(f[f["round"] >= 2]["accuracy"].min()) for f in shown if len(f) > 2),
              default=0.0)  # fmt: skip
    ax.set_ylim(max(0.0, low * 100 - 2), None)
    best = max((float(f["accuracy"].max()) for f in shown), default=1.0) * 100
    if targets["target_2pt"] is not None:
        zoom.set_ylim(targets["target_2pt"] * 100 - 4, best + 0.5)
    for axis, name in ((ax, title), (zoom, "zoom on the targets")):
        axis.set_xscale("log")
        axis.set_xlabel("cumulative message bytes, both directions (MB, log scale)", fontsize=13)
        axis.set_ylabel("test accuracy (%)", fontsize=13)
        axis.grid(True, which="both", alpha=0.3)
        axis.set_title(name, fontsize=13)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=10, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.03 + 0.035 * ((len(labels) + 2) // 3), 1, 1))
    fig.savefig(path)
    plt.close(fig)


def fresh_frames(out: Path, methods: list[str], seeds: list[int], picked: pd.DataFrame,
                 reuse_from: Path | None = None, reuse: list[str] | None = None,
                 ) -> tuple[dict[int, pd.DataFrame], dict[str, list[int]]]:  # fmt: skip
    """Per fresh seed, the rounds of every method's picked configuration that ran on it;
    and per method, the seeds it has run on (``reuse`` methods' runs are ``reuse_from``'s)."""
    from pemn_fl.report import read_rounds

    frames: dict[int, list[pd.DataFrame]] = {}
    done: dict[str, list[int]] = {}
    for method in methods:
        if method not in picked.index:
            continue
        config = _config_of(method, str(picked.loc[method, "config"]))
        for seed in seeds:
            where = reuse_from if reuse_from is not None and method in (reuse or []) else out
            d = fresh_dir(where, method, config, seed)
            if (d / "summary.json").is_file():
                frames.setdefault(seed, []).append(read_rounds(d / "rounds.csv"))
                done.setdefault(method, []).append(seed)
    return {s: pd.concat(f, ignore_index=True) for s, f in frames.items()}, done


def seeds_table(summaries: dict[str, dict], picked: pd.DataFrame, done: dict[str, list[int]],
                frames: dict[int, pd.DataFrame],
                changed: dict[str, tuple[str, str]] | None = None) -> str:  # fmt: skip
    """The seeds frontier as markdown: accuracy, then bytes to the target per level
    (``changed``: the methods re-picked at this horizon, marked in the tuned column)."""
    wire, message = summaries["wire"], summaries["message"]

    def pm(stat: dict, scale: float = 100, fmt: str = ".2f") -> str:
        if stat["mean"] is None:
            return "-"
        return f"{stat['mean'] * scale:{fmt}} ± {stat['std'] * scale:{fmt}}"

    def mb(per_seed: dict[str, int | None]) -> str:
        hit = [b for b in per_seed.values() if b is not None]
        return "never" if not hit else f"{np.mean(hit) / 1e6:.3f}"

    def ratios(m: dict) -> str:
        per = m.get("fewer_bytes_than_fedavg_to_target")
        if not per:
            return "-"
        vals = [r for r in per.values() if r is not None]
        if not vals:
            return "-"
        text = f"{min(vals):.1f}x-{max(vals):.1f}x" if len(vals) > 1 else f"{vals[0]:.1f}x"
        return text if len(vals) == len(per) else f"{text} ({len(vals)}/{len(per)} seeds)"

    def bpp(method: str, column: str) -> str:
        vals = pd.concat([f[(f["method"] == method) & (f["round"] > 1)][column]
                          for f in frames.values()]).dropna()  # fmt: skip
        return "-" if vals.empty else f"{vals.median():.3f}"

    lines = [
        "| method | tuned (seed 0) | seeds | best acc % | final acc % | reached | wire MB to "
        "target | vs FedAvg (wire, per seed) | message MB to target | vs FedAvg (message) "
        "| up bpp | down bpp | total wire MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, m in wire["methods"].items():
        mm = message["methods"][method]
        lines.append(
            f"| {method} | {picked.loc[method, 'config']}"
            + (" (re-picked)" if method in (changed or {}) else "")
            + f" | {','.join(map(str, done[method]))} "
            f"| {pm(m['best_accuracy'])} | {pm(m['final_accuracy'])} "
            f"| {m['reached_target']}/{m['seeds']} | {mb(m['bytes_to_target'])} | {ratios(m)} "
            f"| {mb(mm['bytes_to_target'])} | {ratios(mm)} "
            f"| {bpp(method, 'uplink_bits_per_param')} | {bpp(method, 'downlink_bits_per_param')} "
            f"| {pm(m['total_bytes'], 1e-6, '.2f')} |"
        )
    return "\n".join(lines)


def horizon_sensitivity(frames: dict[int, pd.DataFrame], rounds: int) -> dict[str, float]:
    """How far each target rule moves when the run ends one round earlier (points)."""
    from pemn_fl import seeds as S

    if rounds < 2:
        return {}
    shorter = W.truncated(frames, rounds - 1)
    out = {}
    for rule, prepare in (("best_round", lambda f: f), ("window", W.smoothed_frames)):
        now = S.aggregate(prepare(frames), level="wire")["target_accuracy"]
        before = S.aggregate(prepare(shorter), level="wire")["target_accuracy"]
        if now is not None and before is not None:
            out[rule] = round(100 * (now - before), 3)
    return out


def window_section(summaries: dict[str, dict], picked: pd.DataFrame, done: dict[str, list[int]],
                   smooth: dict[int, pd.DataFrame], frames: dict[int, pd.DataFrame],
                   changed: dict[str, tuple[str, str]] | None = None) -> str:
    """The frontier under the windowed target (``pemn_fl.window``): table and budgets."""
    from pemn_fl import seeds as S

    window = summaries["wire_window"]
    moved = summaries["horizon_sensitivity"]
    common = sorted(frames)
    table = seeds_table({"wire": window, "message": window}, picked, {m: common for m in done},
                        smooth, changed)  # fmt: skip
    # The message-level columns repeat the wire level here: the windowed rule is reported
    # at the wire level only; drop them for clarity.
    lines = table.splitlines()
    keep = [i for i, h in enumerate(lines[0].split("|")) if "message" not in h]
    table = "\n".join("|".join(c for i, c in enumerate(line.split("|")) if i in keep)
                      for line in lines)  # fmt: skip
    return "\n".join([
        f"## The windowed target: each curve the mean of its last {W.WINDOW} rounds", "",
        "Target: FedAvg's seed-mean smoothed maximum - 1 pt = "
        + ("none" if window["target_accuracy"] is None
           else f"**{100 * window['target_accuracy']:.2f} %**")
        + f"; a method reaches it on a seed when its own {W.WINDOW}-round mean does. Ending "
        f"the runs one round earlier moves the best-round target by "
        f"{moved.get('best_round', float('nan')):+.2f} pt and the windowed one by "
        f"{moved.get('window', float('nan')):+.2f} pt. Accuracy columns: smoothed.", "",
        table, "",
        "### Accuracy within a byte budget, smoothed curves (wire level)", "",
        S.budget_markdown(window["budgets"]), ""])


def seeds_report(out: Path, methods: list[str], seeds: list[int], picked: pd.DataFrame,
                 preset: str, rounds: int, base: list[str], reuse_from: Path | None = None,
                 reuse: list[str] | None = None, picked_from: Path | None = None,
                 repick_from: Path | None = None,
                 changed: dict[str, tuple[str, str]] | None = None,
                 pending: Pending | None = None,
                 ) -> None:  # fmt: skip
    """``frontier-seeds.{md,json,png}``: the picked configurations on the fresh seeds
    (``changed``: those re-picked at this horizon from ``repick_from``'s neighbours check)."""
    from pemn_fl import seeds as S

    frames, done = fresh_frames(out, methods, seeds, picked, reuse_from, reuse)
    if not frames:
        print("no fresh-seed runs finished yet", file=sys.stderr)
        return
    # Only the seeds every reported method has finished are compared (same draws for all).
    common = sorted(set.intersection(*(set(v) for v in done.values())))
    # Runs longer than --rounds: the report is a view of their first rounds, written beside
    # the full one (frontier-seeds-<rounds>-rounds.*) instead of over it.
    ran_rounds = max(int(frames[s]["round"].max()) for s in common) if common else rounds
    name = "frontier-seeds" if ran_rounds <= rounds else f"frontier-seeds-{rounds}-rounds"
    frames = W.truncated({s: frames[s] for s in common}, rounds)
    summaries = {level: S.aggregate(frames, level=level) for level in ("wire", "message")}
    # The target no single round decides: every curve the mean of its last WINDOW rounds.
    smooth = W.smoothed_frames(frames)
    summaries["wire_window"] = S.aggregate(smooth, level="wire")
    summaries["horizon_sensitivity"] = horizon_sensitivity(frames, rounds)
    # The configuration reported per method: readers of fresh/ take these runs only
    # (bench.fresh_runs), whatever else ran beside them.
    summaries["configs"] = {m: str(picked.loc[m, "config"]) for m in done}
    summaries["repicked"] = {m: list(pair) for m, pair in (changed or {}).items()}
    summaries["repick_pending"] = {m: {"kept": k, "pick": p, "missing_seeds": miss}
                                   for m, (k, p, miss) in (pending or {}).items()}  # fmt: skip
    (out / f"{name}.json").write_text(json.dumps(summaries, indent=2) + "\n")
    wire = summaries["wire"]
    target = wire["target_accuracy"]
    missing = {m: sorted(set(seeds) - set(done.get(m, []))) for m in methods}
    ran = ("every method on every seed" if not any(missing.values()) else
           "partial: " + "; ".join(f"{m} lacks seed(s) {','.join(map(str, v))}"
                                   for m, v in missing.items() if v))  # fmt: skip
    command = (f"python -m bench.accuracy_frontier --preset {preset} --rounds {rounds} "
               f"--methods {','.join(methods)} --seeds {','.join(map(str, seeds))}"
               + (" --report-only" if ran_rounds > rounds else ""))
    picked_from = picked_from or reuse_from
    if picked_from is not None:
        command += f" --picked-from {picked_from}"
        command += f" --reuse {','.join(reuse)}" if reuse else ""
        if reuse and reuse_from is not None and reuse_from != picked_from:
            command += f" --reuse-from {reuse_from}"
    if repick_from is not None:
        command += f" --repick-from {repick_from}"
    extra = [part for part in base if part not in PRESETS[preset]]
    if extra:
        command += f" --extra '{' '.join(extra)}'"
    md = "\n".join([
        f"# Seeds frontier: {preset}, {rounds} rounds, fresh seeds {', '.join(map(str, common))}",
        "",
        f"Command: `{command}`  ",
        f"Base options: `{' '.join(base)}`  ",
        f"What has run: {ran}. Reported: the seeds every method finished ({len(common)})."
        + (f" A view of the first {rounds} rounds of {ran_rounds}-round runs (the full "
           "report: `frontier-seeds.md`)." if ran_rounds > rounds else "")
        + (f" Reused unchanged from `{reuse_from}`: {', '.join(reuse)}." if reuse else "")
        + ("" if repick_from is None else
           f" Re-picked at {rounds} rounds on the tuning seed by the neighbours check "
           f"`{repick_from}` (`bench.neighbours`, its rule in `neighbours.md`): "
           + ("none" if not changed else "; ".join(f"{m} `{a}` → `{b}`"
                                                  for m, (a, b) in changed.items()))
           + "".join(f"; {m} `{k}` → `{p}` not run yet on seed(s) "
                     f"{','.join(map(str, miss))}, shown with `{k}` until it has"
                     for m, (k, p, miss) in (pending or {}).items())
           + "."),
        "",
        "Each method's configuration was picked on the tuning seed 0 (best test accuracy "
        "over the rounds, three configurations each: `frontier.md`); these runs are on fresh "
        "seeds only (each seed redraws prototype and initial model, partition, client sample "
        "and noise). Accuracy: mean ± sample std over the seeds. Target: "
        + ("none (no FedAvg)" if target is None else
           f"{wire['target_rule']} = **{100 * target:.2f} %**")
        + ". MB to target: mean over the seeds that reached it, both directions; vs FedAvg: "
        "FedAvg's bytes to the target over the method's, on the same seed (range over "
        "seeds). Wire: the HTTP traffic of a Flower 1.42 deployment (modelled, within 0.03 % "
        "of a real SuperLink); message: Flower's serialised messages.",
        "",
        seeds_table(summaries, picked, {m: common for m in done}, frames, changed),
        "",
        "## Accuracy within a byte budget (wire level, both directions)",
        "",
        "Best test accuracy (%) among the rounds finished within the budget, mean ± std over "
        "the seeds. *leads*: the highest mean; *clear*: the leader is ahead of the runner-up "
        "on every seed and by more than either one's std (with one seed: -, no spread to "
        "exceed).",
        "",
        S.budget_markdown(wire["budgets"]),
        "",
        window_section(summaries, picked, done, smooth, frames, changed),
    ])
    (out / f"{name}.md").write_text(md)
    # A lever study's figure says which curves carry the lever (the legend names methods only).
    lever = (f"; {', '.join(m for m in methods if m not in (reuse or []))} with {' '.join(extra)}"
             if extra else "")  # fmt: skip
    S.plot_bands({"": frames}, out / f"{name}.png", level="wire",
                 title=f"{preset}: {rounds} rounds, fresh seeds {', '.join(map(str, common))}"
                 + lever, target=target)  # fmt: skip
    print(md)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.accuracy_frontier", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="digits",
                   help="the shared settings of every run: digits (the classroom default) "
                   "or fashion-mnist (the README's reference setting)")
    p.add_argument("--rounds", type=int, default=None, help="default: 30 digits, 40 fashion-mnist")
    p.add_argument("--methods", default=",".join(grids()), help="comma list of methods")
    p.add_argument("--out", type=Path, default=None, help="default results/frontier/<preset>")
    p.add_argument("--report-only", action="store_true", help="no new runs; rebuild the report")
    p.add_argument("--extra", default="", help="extra simulations.run options for every run")
    p.add_argument("--seeds", default="",
                   help="fresh seeds to report on, e.g. 1,2,3: each method's configuration "
                   "is picked on the tuning seed's runs, then run once per fresh seed")
    p.add_argument("--picked-from", type=Path, default=None, metavar="DIR",
                   help="a lever study: take each method's configuration from DIR's tuning "
                   "runs (no tuning here), run it on --seeds with --extra into --out")
    p.add_argument("--reuse", default="", metavar="METHODS",
                   help="with --picked-from: these methods' fresh-seed runs are DIR's (the "
                   "lever does not touch them, e.g. fedavg under an evolve-only lever)")
    p.add_argument("--reuse-from", type=Path, default=None, metavar="DIR",
                   help="with --reuse: take those runs from DIR instead of --picked-from (a "
                   "lever on a longer horizon: picks from the tuning runs, FedAvg's runs "
                   "from the converged frontier)")
    p.add_argument("--repick-from", type=Path, default=None, metavar="DIR",
                   help="a longer horizon: use the configurations a bench.neighbours check "
                   "at these --rounds re-picked (DIR/picks.json) instead of the short "
                   "tuning's, where it decided another one")
    p.add_argument("--max-configs", type=int, default=None,
                   help="run only the first N configurations of each method (a partial "
                   "sweep; the report says how many each method got)")
    return p


def _picks(picked: pd.DataFrame, repick_from: Path | None,
           rounds: int) -> tuple[pd.DataFrame, dict[str, tuple[str, str]]]:  # fmt: skip
    return (picked, {}) if repick_from is None else repicked(picked, repick_from, rounds)


def shown_until_run(picked: pd.DataFrame, changed: dict[str, tuple[str, str]], out: Path,
                    seeds: list[int], reuse_from: Path | None, reuse: list[str],
                    ) -> tuple[pd.DataFrame, dict[str, tuple[str, str]], Pending]:  # fmt: skip
    """A re-picked configuration is reported once it has run on every seed; until then the
    report shows the kept one and says which seeds the re-picked one lacks (a sweep cut short
    keeps a whole report instead of one that drops the seeds the new runs have not reached)."""
    picked, changed, pending = picked.copy(), dict(changed), {}
    for method, (kept, pick) in list(changed.items()):
        where = reuse_from if reuse_from is not None and method in reuse else out
        config = _config_of(method, pick)
        missing = [s for s in seeds
                   if not (fresh_dir(where, method, config, s) / "summary.json").is_file()]
        if missing:
            picked.loc[method, "config"] = kept
            pending[method] = (kept, pick, missing)
            del changed[method]
    return picked, changed, pending


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    grid = grids()
    unknown = [m for m in methods if m not in grid]
    if unknown:
        print(f"error: no tuning grid for {unknown}; choose from {', '.join(grid)}",
              file=sys.stderr)  # fmt: skip
        return 2
    rounds = args.rounds or DEFAULT_ROUNDS[args.preset]
    out = args.out or Path("results/frontier") / args.preset
    base = PRESETS[args.preset] + args.extra.split()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    tuning_dir = args.picked_from or out
    reuse = [m.strip() for m in args.reuse.split(",") if m.strip()]
    if (args.picked_from is None) != (not reuse) and reuse:
        print("error: --reuse needs --picked-from (whose runs it reuses)", file=sys.stderr)
        return 2
    if args.repick_from is not None:
        if not seeds:
            print("error: --repick-from re-picks the fresh seeds' configurations: give --seeds",
                  file=sys.stderr)  # fmt: skip
            return 2
        tuning, _ = collect(tuning_dir, methods)
        try:  # checked before any run: a check that does not fit here stops nothing half-way
            if not tuning.empty:
                repicked(tuned(tuning), args.repick_from, rounds)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if not args.report_only:
        if args.picked_from is None:
            for method in methods:
                for config in grid[method][: args.max_configs]:
                    run_one(base, method, config, rounds, out)
        if seeds:
            tuning, _ = collect(tuning_dir, methods)
            picked, _ = _picks(tuned(tuning), args.repick_from, rounds)
            for seed in seeds:  # seed by seed: a partial sweep has whole seeds
                for method in (m for m in methods if m not in reuse):
                    config = _config_of(method, str(picked.loc[method, "config"]))
                    run_one(base, method, config, rounds, out, seed=seed)
    runs, curves = collect(tuning_dir, methods)
    if runs.empty:
        print("no finished runs yet", file=sys.stderr)
        return 1
    if seeds:
        picked, changed = _picks(tuned(runs), args.repick_from, rounds)
        reuse_from = args.reuse_from or args.picked_from
        picked, changed, pending = shown_until_run(picked, changed, out, seeds, reuse_from, reuse)
        seeds_report(out, methods, seeds, picked, args.preset, rounds, base,
                     reuse_from=reuse_from, reuse=reuse, picked_from=args.picked_from,
                     repick_from=args.repick_from, changed=changed,
                     pending=pending)  # fmt: skip
    if args.picked_from is not None:
        return 0  # a lever study: its tuning report is DIR's
    # The tuning report covers every method tuned here, whichever subset this command named
    # (a seeds sweep over some methods must not drop the others' rows).
    tuned_here = [m for m in grid if m in methods or any((out / "runs").glob(f"{m}__*"))]
    runs, curves = collect(tuning_dir, tuned_here)
    table, targets = frontier_table(runs, curves, tuned_here)
    out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out / "frontier-runs.csv", index=False)
    table.to_csv(out / "frontier.csv", index=False)
    command = f"python -m bench.accuracy_frontier --preset {args.preset} --rounds {rounds}"
    header = (f"# Bandwidth-accuracy frontier: {args.preset}, {rounds} rounds\n\n"
              f"Command: `{command}`  \nBase options: `{' '.join(base)}`")  # fmt: skip
    md = markdown(table, targets, header)
    (out / "frontier.md").write_text(md)
    per_method = runs.groupby("method").size()
    tuning = ("each method tuned over 3 configurations" if (per_method >= 3).all()
              else "partial sweep: configurations per method in frontier.md")  # fmt: skip
    plot(table, curves, targets, out / "frontier.png", f"{args.preset}: {rounds} rounds, {tuning}")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
