"""Every hand-made mutant still applies: its old text occurs exactly once in its file.

A mutant whose text the code no longer contains is not a mutant at all; ``bench.mutation``
would report it as killed or fail to apply it, and the kill rate would be measured on fewer
bugs than it says. Moving code (the frames refactor) silently did that to two mutants."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.mutation import KNOWN
from bench.semantic_mutants import SEMANTIC

ROOT = Path(__file__).resolve().parents[1]
EDITS = ([(f"known:{k.name}", k.path, old) for k in KNOWN for old, _ in k.edits]
         + [(f"semantic:{m.name}", m.path, m.old) for m in SEMANTIC])  # fmt: skip


@pytest.mark.parametrize(("name", "path", "old"), EDITS, ids=[e[0] for e in EDITS])
def test_the_mutant_text_occurs_once(name: str, path: str, old: str) -> None:
    assert (ROOT / path).read_text().count(old) == 1, f"{name}: not once in {path}"


def test_a_mutant_is_traced_to_its_module_or_its_packages_init() -> None:
    """mutmut names a mutant by module path; a package's own code lives in __init__.py."""
    from bench.mutation import _source_of

    root = Path(__file__).resolve().parents[1]
    topk = _source_of("pemn_fl.methods.topk.x_step__mutmut_3", root)
    assert topk == root / "pemn_fl/methods/topk.py"
    package = _source_of("pemn_fl.methods.x__plugin__mutmut_8", root)
    assert package == root / "pemn_fl/methods/__init__.py"
    with pytest.raises(FileNotFoundError):
        _source_of("nowhere.x_f__mutmut_1", root)
