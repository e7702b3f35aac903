"""Which runs a seeds frontier reports: ``DIR/fresh/<method>__<config>/seed-<s>/``.

A frontier's ``fresh/`` may hold more than one configuration of a method: a configuration
re-picked at a longer horizon (``bench.neighbours``, ``bench.accuracy_frontier --repick-from``)
runs beside the short tuning's pick, whose runs stay on disk as the record of what was
reported before. The report names the configuration it used per method (``configs`` in
``frontier-seeds.json``); every reader of ``fresh/`` (catch-up, levers, the time study) takes
those runs only, so no table sums two configurations of one method.
"""

from __future__ import annotations

import json
from pathlib import Path

from pemn_fl.seeds import seed_dirs


def reported_configs(frontier: Path) -> dict[str, str] | None:
    """Method -> the configuration name the frontier's report used, or None where the report
    does not say (one written before it recorded them, or no report yet)."""
    path = frontier / "frontier-seeds.json"
    if not path.is_file():
        return None
    configs = json.loads(path.read_text()).get("configs")
    return dict(configs) if isinstance(configs, dict) else None


def method_dirs(frontier: Path) -> dict[str, Path]:
    """Method -> its reported configuration's folder under ``frontier/fresh``.

    Without a record of the reported configurations, each method must have exactly one
    folder; two are an error (which one a table means cannot be told)."""
    fresh = frontier / "fresh"
    found: dict[str, list[Path]] = {}
    for path in sorted(fresh.iterdir()) if fresh.is_dir() else []:
        if path.is_dir() and "__" in path.name:
            found.setdefault(path.name.split("__")[0], []).append(path)
    configs = reported_configs(frontier)
    out = {}
    for method, paths in found.items():
        if configs is not None and method in configs:
            chosen = [p for p in paths if p.name == f"{method}__{configs[method]}"]
            if chosen:
                out[method] = chosen[0]
            continue  # reported from elsewhere (a lever study's --reuse): not this folder's
        if len(paths) > 1:
            raise ValueError(
                f"{fresh} holds {len(paths)} configurations of {method} "
                f"({', '.join(p.name for p in paths)}) and no frontier-seeds.json says which "
                "one is reported: rebuild it with python -m bench.accuracy_frontier ... "
                "--report-only")  # fmt: skip
        out[method] = paths[0]
    return out


def reported_runs(frontier: Path) -> dict[str, dict[int, Path]]:
    """Method -> seed -> the finished runs of its reported configuration (``seed-<s>/`` with a
    ``summary.json``: one cut short, ``.partial`` or half copied, is not finished)."""
    return {method: seed_dirs(folder, marker="summary.json")
            for method, folder in method_dirs(frontier).items()}
