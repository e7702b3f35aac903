"""The classroom notebook: its reviewed source and the .ipynb agree, and every cell runs.

Executed with nbclient in a fresh kernel (the way CI runs it, the way a teacher's Jupyter
runs it): a cell that raises fails this test.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.slow  # a real kernel / a real flwr run: the slow suite

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "classroom.ipynb"
SOURCE = ROOT / "notebooks" / "classroom.py"


def test_the_notebook_matches_its_source() -> None:
    jupytext = pytest.importorskip("jupytext")
    from_source = jupytext.read(SOURCE)
    committed = nbformat.read(NOTEBOOK, as_version=4)
    pairs = list(zip(from_source.cells, committed.cells, strict=True))
    stale = [i for i, (a, b) in enumerate(pairs)
             if (a.cell_type, a.source) != (b.cell_type, b.source)]  # fmt: skip
    assert not stale, f"cells {stale} differ: run jupytext --sync notebooks/classroom.py"
    assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code")


def test_every_cell_runs(tmp_path: Path) -> None:
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    # The describe table, the run's summary line, the export's size and the reload's accuracy.
    for words in ("fingerprint", "wall time", "bytes, against", "test accuracy"):
        assert words in outputs, words
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]  # fmt: skip
    assert len(images) == 2  # the default run's figure and the what-if figure
    assert (tmp_path / "runs" / "model.pemn").stat().st_size > 0
