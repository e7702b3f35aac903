"""Size limits of the library and the runners (issue 26): no function over 60 lines and no
module over 450 lines in ``pemn_fl/`` and ``simulations/``, unless ``EXCEPTIONS`` names it
and says why. A function's lines run from its ``def`` (or first decorator) to its last line,
docstring and comments included; a nested function counts within its parent and on its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pemn_fl", "simulations")
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 450

# "module.py" or "module.py:function" (a method as "Class.method") -> why it may be longer.
EXCEPTIONS: dict[str, str] = {}


def _functions(tree: ast.AST, prefix: str = "") -> list[tuple[str, ast.AST]]:
    """Every function and method of ``tree``, by qualified name (``Class.method``)."""
    found = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append((prefix + node.name, node))
            found += _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            found += _functions(node, f"{prefix}{node.name}.")
    return found


def _lines(node: ast.AST) -> int:
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    return node.end_lineno - first + 1  # type: ignore[attr-defined]


def oversized() -> dict[str, int]:
    """Every module and function over its limit: ``{"path[:function]": lines}``."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            where = str(path.relative_to(ROOT))
            text = path.read_text()
            if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
                found[where] = lines
            for name, node in _functions(ast.parse(text)):
                if (lines := _lines(node)) > MAX_FUNCTION_LINES:
                    found[f"{where}:{name}"] = lines
    return found


def test_no_function_over_60_lines_and_no_module_over_450() -> None:
    over = {k: v for k, v in oversized().items() if k not in EXCEPTIONS}
    assert over == {}, "split these (or name them in EXCEPTIONS, with why): " + ", ".join(
        f"{k} ({v} lines)" for k, v in sorted(over.items()))


def test_every_exception_is_still_needed() -> None:
    """An exception that fits the limits now is stale: take it out."""
    assert sorted(set(EXCEPTIONS) - set(oversized())) == []
