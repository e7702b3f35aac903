"""The options reference, written from the declarations: docs/options.md and the run config of
``[tool.flwr.app.config]`` in pyproject.toml.

Every setting is declared once (``RunSettings``' fields and each method's options, both
``pemn_fl.options.Option``), and every ``python -m`` command builds its command line in a
``build_parser()``. ``python -m pemn_fl options --write`` writes both files from those;
``--check`` (and a test) says which one drifted. So a flag, a default or a method added in
the code reaches the docs and the Flower app by one command, and an undocumented flag
cannot pass the tests.

The commands are found, not listed: every module of ``pemn_fl``, ``simulations`` and
``bench`` in this checkout with an ``if __name__ == "__main__":`` block (a tool for the
project's own files, so it reads the checkout it lives in; the Flower app bundle needs none
of it).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Iterator
from importlib import import_module
from pathlib import Path

from pemn_fl.config import SHARED
from pemn_fl.methods import options as method_options
from pemn_fl.methods import users as method_users
from pemn_fl.options import Option, markdown, toml_value

ROOT = Path(__file__).resolve().parents[1]
DOC = Path("docs") / "options.md"
PYPROJECT = Path("pyproject.toml")
APP_CONFIG = "[tool.flwr.app.config]"
COMMAND_PACKAGES = ("pemn_fl", "simulations", "bench")
MAIN_BLOCK = re.compile(r'^if __name__ == "__main__":', re.M)
# add_to_parser's groups: their flags are the tables' rows, not repeated per command.
SETTING_GROUPS = ("run settings (every method)", "method options (each method declares its own)")


# -- the commands and their flags ----------------------------------------------------------
def commands(root: Path = ROOT) -> list[str]:
    """Every ``python -m`` command of the checkout at ``root``, as its module name."""
    found = []
    for package in COMMAND_PACKAGES:
        for path in sorted((root / package).glob("*.py")):
            if MAIN_BLOCK.search(path.read_text()):
                found.append(package if path.stem == "__main__" else f"{package}.{path.stem}")
    return found


def parser_of(module: str) -> argparse.ArgumentParser:
    """The command line of ``python -m module`` (its ``build_parser()``; a package's is in
    its ``__main__``)."""
    name = module if "." in module else f"{module}.__main__"
    return import_module(name).build_parser()


def parsers(module: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``(command, parser)`` for ``module`` and, after it, each of its subcommands."""
    parser = parser_of(module)
    yield f"python -m {module}", parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word, sub in action.choices.items():
                yield f"python -m {module} {word}", sub


def flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The command's own flags and arguments: not ``--help``, not a subcommand choice, and
    not a run setting or method option (their tables say those)."""
    settings = {id(a) for g in parser._action_groups if g.title in SETTING_GROUPS
                for a in g._group_actions}  # fmt: skip
    skip = argparse._HelpAction | argparse._SubParsersAction
    return [a for a in parser._actions if id(a) not in settings and not isinstance(a, skip)]


def shows_settings(parser: argparse.ArgumentParser) -> bool:
    return any(g.title in SETTING_GROUPS and g._group_actions for g in parser._action_groups)


def help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """``action``'s help as ``--help`` prints it (``%(default)s`` expanded), on one line."""
    if not action.help:
        return ""
    text = argparse.HelpFormatter(parser.prog)._expand_help(action)
    return " ".join(text.split())


def _default(action: argparse.Action, root: Path) -> str:
    """The default as the page says it: a path in the checkout relative to it, so the page
    is the same in every checkout."""
    if isinstance(action.default, Path) and action.default.is_relative_to(root):
        return str(action.default.relative_to(root))
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        return "off" if action.default is False else "on"
    if action.default is None or action.default == argparse.SUPPRESS or action.required:
        return " "
    if isinstance(action.default, list | tuple):
        return ",".join(map(str, action.default)) or " "
    return str(action.default) or '""'


def _name(action: argparse.Action) -> str:
    if action.option_strings:
        return " / ".join(f"`{s}`" for s in action.option_strings)
    return f"`{action.metavar or action.dest}` (argument)"


def flags_table(parser: argparse.ArgumentParser, root: Path) -> str:
    lines = ["| flag | default | what |", "|---|---|---|"]
    for action in flags(parser):
        what = help_of(parser, action).replace("|", "\\|") or " "
        lines.append(f"| {_name(action)} | {_default(action, root)} | {what} |")
    return "\n".join(lines) + "\n"


def undocumented(root: Path = ROOT) -> list[str]:
    """Every flag (or argument) of every command that has no help text to document it."""
    return [f"{command} {action.option_strings[0] if action.option_strings else action.dest}"
            for module in commands(root) for command, parser in parsers(module)
            for action in flags(parser) if not help_of(parser, action)]  # fmt: skip


# -- docs/options.md -----------------------------------------------------------------------
INTRO = """# Options

Every option is declared once in the code and this page is written from the declarations by
`python -m pemn_fl options --write` (which also writes the run config of
`[tool.flwr.app.config]` in pyproject.toml); a test fails when either drifts, and when a flag of
any command has no help text. Edit the declaration, then run the command.

- [Run settings](#run-settings): what every method shares (`RunSettings`,
  [`pemn_fl/config.py`](../pemn_fl/config.py));
- [Method options](#method-options): each method's own, declared next to its code;
- [Command flags](#command-flags): every command's other flags and arguments.

A setting or option is a flag of `python -m simulations.run` and `python -m simulations.deploy`
and a key of the Flower run config (`flwr run . --run-config "keep=0.3"` means
`--keep 0.3`); config.json records every value a run used.
"""

SETTINGS_TEXT = """## Run settings

The data, model, rounds, faults, bytes, time model and seed every method shares; each is a
field of `RunSettings`, declared by its `Option`. Two are filled in by the runner and are run
config keys only.

"""

METHODS_TEXT = """## Method options

Each method declares its own options next to its code (`pemn_fl.options.Option`, listed in
its `Method(options=...)`); a family declares its shared ones once in its frame. An option set
to other than its default that no method of the run reads changes nothing:
`simulations.run` and `simulations.deploy` say so in one `note:` line before the run starts
(`--methods fedavg --density 0.5` runs plain FedAvg).

"""

COMMANDS_TEXT = """## Command flags

Each command's flags and arguments other than the settings and options above (a command that
takes those says so).

"""


def options_doc(specs: Iterable[str] = (), root: Path = ROOT) -> str:
    """docs/options.md: the settings, the methods' options (and the plug-ins' among
    ``specs``) and every command's own flags."""
    specs = list(specs)
    out = [INTRO, "\n", SETTINGS_TEXT, markdown(SHARED), "\n", METHODS_TEXT,
           markdown(method_options(specs).values(), method_users(specs)), "\n", COMMANDS_TEXT]
    for module in commands(root):
        for command, parser in parsers(module):
            if not flags(parser) and not shows_settings(parser):
                continue  # a command of subcommands alone: each has its section
            out.append(f"### `{command}`\n\n")
            if shows_settings(parser):
                out.append("Also every run setting and method option above.\n\n")
            if flags(parser):
                out.append(flags_table(parser, root))
            out.append("\n")
    return "".join(out).rstrip("\n") + "\n"


# -- pyproject.toml's run config -----------------------------------------------------------
def app_config(options: Iterable[Option]) -> str:
    """The ``[tool.flwr.app.config]`` table: every setting and option at its default (its
    ``app_default`` where the Flower app differs)."""
    lines = [APP_CONFIG,
             "# Every run setting and method option at its default, written from the declarations",
             "# by `python -m pemn_fl options --write` (docs/options.md says what each one is);",
             "# a test fails when this drifts. Same names as the flags of `simulations.run`."]
    for option in options:
        value = option.default if option.app_default is None else option.app_default
        lines.append(f"{option.name} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def with_app_config(pyproject: str, table: str) -> str:
    """``pyproject`` with its ``[tool.flwr.app.config]`` table (its last) replaced."""
    start = pyproject.index(APP_CONFIG)
    if re.search(r"^\[", pyproject[start + len(APP_CONFIG):], re.M):
        raise ValueError(f"pyproject.toml: {APP_CONFIG} must be its last table")
    return pyproject[:start] + table


# -- the files -------------------------------------------------------------------------------
def expected(root: Path = ROOT) -> dict[Path, str]:
    """What each generated file must hold, by its path under ``root``."""
    pyproject = (root / PYPROJECT).read_text()
    table = app_config([*SHARED, *method_options().values()])
    return {DOC: options_doc(root=root), PYPROJECT: with_app_config(pyproject, table)}


def drift(root: Path = ROOT) -> list[str]:
    """The generated files that differ from the declarations (empty: none)."""
    return [str(path) for path, text in expected(root).items()
            if (root / path).read_text() != text]  # fmt: skip


def write(root: Path = ROOT) -> list[str]:
    """Write every generated file that changed; return their paths."""
    changed = []
    for path, text in expected(root).items():
        if (root / path).read_text() != text:
            (root / path).write_text(text)
            changed.append(str(path))
    return changed
