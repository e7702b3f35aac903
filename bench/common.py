"""What the benches share, said once: the flags that mean the same in every bench (the
rounds, methods and SuperNodes of its runs, the CSV it writes) and how a one-table bench
writes and prints its table.

Each helper adds one flag with the help text every bench shows for it, so the flags table of
docs/options.md reads the same wherever the flag recurs; a bench's own flags stay with it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def bench_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The command line of ``python -m <module>``, its docstring as the help's text, as
    written."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_rounds(p: argparse.ArgumentParser, default: int, of: str = "every run") -> None:
    p.add_argument("--rounds", type=int, default=default, help=f"training rounds of {of}")


def add_methods(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--methods", default=default, help="comma list of methods")


def add_nodes(p: argparse.ArgumentParser, default: int, of: str = "every deployment") -> None:
    p.add_argument("--nodes", type=int, default=default, help=f"SuperNodes of {of}")


def add_csv_out(p: argparse.ArgumentParser, default: Path) -> None:
    p.add_argument("--out", type=Path, default=default, help="the CSV to write")


def save_csv(table: pd.DataFrame, out: Path) -> None:
    """``table`` as the CSV ``out`` (its folder made if need be), without the index."""
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)


def write_table(table: pd.DataFrame, out: Path, width: int = 250) -> None:
    """A one-table bench's result: the CSV ``out``, and the table printed, 3 significant
    digits, ``width`` characters wide."""
    save_csv(table, out)
    with pd.option_context("display.width", width, "display.precision", 3):
        print(table.to_string(index=False))
