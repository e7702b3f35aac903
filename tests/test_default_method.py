"""``bench.default_method``: the rule that picks the default method, on frontiers made by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import default_method as D


def _view(seeds: list[int], rows: dict[str, tuple[int, list[float | None]]]) -> dict:
    """One target rule's report: per method (seeds reached, x fewer than FedAvg per seed)."""
    methods = {"fedavg": {"reached_target": len(seeds), "seeds": len(seeds)}}
    for name, (reached, ratios) in rows.items():
        methods[name] = {"reached_target": reached, "seeds": len(seeds),
                         "fewer_bytes_than_fedavg_to_target": dict(zip(map(str, seeds), ratios,
                                                                       strict=True))}  # fmt: skip
    return {"seeds": seeds, "methods": methods}


def _frontier(tmp_path: Path, name: str, best: dict, window: dict, seeds: list[int]) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    report = {"wire": _view(seeds, best), "wire_window": _view(seeds, window)}
    (folder / "frontier-seeds.json").write_text(json.dumps(report))
    return folder


def test_the_most_cells_win_and_a_tie_goes_to_the_larger_worst_case(tmp_path: Path,
                                                                   capsys) -> None:  # noqa: ANN001
    a = _frontier(tmp_path, "a", seeds=[1, 2],
                  best={"evolve": (2, [10.0, 30.0]), "evolve_x": (2, [20.0, 21.0]),
                        "evolve_y": (1, [50.0, None])},
                  window={"evolve": (2, [12.0, 31.0]), "evolve_x": (2, [22.0, 23.0]),
                          "evolve_y": (2, [50.0, 60.0])})  # fmt: skip
    b = _frontier(tmp_path, "b", seeds=[1, 2],
                  best={"evolve": (1, [15.0, None]), "evolve_x": (1, [25.0, None])},
                  window={"evolve": (2, [15.0, 16.0]), "evolve_x": (2, [25.0, 26.0])})  # fmt: skip
    tallies = D.tally({"a": D.load(a), "b": D.load(b)}, ["evolve", "evolve_x", "evolve_y"])
    # evolve and evolve_x reach 7 of 8 cells each; evolve_x's worst case (20x) beats
    # evolve's (10x). evolve_y reaches 3 of 8: it did not run on frontier b.
    assert [(t.method, t.reached, t.cells) for t in tallies] == [
        ("evolve_x", 7, 8), ("evolve", 7, 8), ("evolve_y", 3, 8)]
    assert tallies[0].smallest_ratio == 20.0 and tallies[1].smallest_ratio == 10.0
    assert "b: best round not reported" in tallies[2].per_frontier[1]
    assert D.main([str(a), str(b), "--out", str(tmp_path / "rule.md")]) == 0
    text = (tmp_path / "rule.md").read_text()
    assert "**Pick: `evolve_x`.**" in text and "| evolve_y | 3/8 | 50.0x |" in text
    assert text in capsys.readouterr().out


def test_a_folder_without_a_seeds_frontier_is_one_clear_error(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert D.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "frontier-seeds.json" in err and err.count("\n") == 1


@pytest.mark.parametrize("given,expected", [("", ["evolve", "evolve_x"]),
                                            ("evolve_x", ["evolve_x"])])
def test_the_candidates_are_every_evolving_method_unless_named(tmp_path: Path, given: str,
                                                               expected: list[str],
                                                               capsys) -> None:  # noqa: ANN001
    a = _frontier(tmp_path, "a", seeds=[1], best={"evolve": (1, [9.0]), "evolve_x": (0, [None]),
                                                  "qsgd": (1, [30.0])},
                  window={"evolve": (1, [9.0]), "evolve_x": (1, [8.0]), "qsgd": (1, [30.0])})
    D.main([str(a), *(["--candidates", given] if given else [])])
    rows = [line.split(" | ")[0][2:] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| evolve") or line.startswith("| qsgd")]  # fmt: skip
    assert rows == expected
