"""Every setting is declared once, as an ``Option``, and everything else derives from it.

The settings every method shares are ``RunSettings``' fields, each declared by its ``Option``
(``pemn_fl/config.py``). A method module declares each hyperparameter it reads as an
``Option`` too (its name, default, valid range or choices, help) and lists them in its
``Method(options=...)``; a family declares its shared ones once in its frame
(``frames/evolving.OPTIONS``). From those declarations come the ``--<name>`` flags of
``simulations.run`` and ``simulations.deploy`` (``add_to_parser``), validation
(``Option.coerce`` and ``Option.check``), config.json (``RunSettings.to_run_config``), and
what ``python -m pemn_fl options --write`` writes: the run config keys of
``[tool.flwr.app.config]`` in pyproject.toml and the tables of docs/options.md (``markdown``;
a test fails when either drifts). A plug-in method brings its own.

Names are flat and kebab-case, as Flower's run config and the command line use them
(``--noise-scale 2``, ``noise-scale=2``): shorter to type than nested keys, and the flat
names of every committed run's config.json stay valid. Two declarations of one name must be
the same declaration (a family's option shared by its members), so a name means one thing.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Value = int | float | str | bool


class OptionError(ValueError):
    """A bad option value; the message names the option, the value and what is valid."""


@dataclass(frozen=True)
class Option:
    """One hyperparameter of a method (or family of methods).

    ``low``/``high`` bound a number (``low_open``/``high_open``: the bound itself excluded);
    ``choices`` list the valid values; ``check(value, settings)`` is for what depends on
    other settings (a width that must fit the model size limit): it raises ``ValueError``."""

    name: str
    default: Value
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Value, ...] = ()
    check: Callable[[Value, object], None] | None = None
    # The command line: the flag's name where it is not the option's (``--rounds`` sets
    # num-server-rounds); ``command_line=False`` for a setting the runner fills in itself
    # (min-nodes from --clients, checkpoint-dir); the value's placeholder in --help.
    flag: str = ""
    command_line: bool = True
    metavar: str = ""
    # The value of ``[tool.flwr.app.config]`` (``flwr run .``) where it is not ``default``.
    app_default: Value | None = None

    def __post_init__(self) -> None:
        if not self.name.replace("-", "").isalnum() or self.name != self.name.lower():
            raise ValueError(f"option name {self.name!r}: lower-case words joined by '-'")
        self.coerce(self.default)  # a declaration whose default is invalid is a bug

    @property
    def attr(self) -> str:
        """The argparse destination (``noise-scale`` -> ``noise_scale``)."""
        return self.name.replace("-", "_")

    @property
    def type(self) -> type:
        return type(self.default)

    @property
    def flags(self) -> tuple[str, ...]:
        """Its flags on the command line (a bool: ``--<flag>`` and ``--no-<flag>``)."""
        flag = self.flag or self.name
        return (f"--{flag}", f"--no-{flag}") if self.type is bool else (f"--{flag}",)

    def coerce(self, value: object) -> Value:
        """``value`` (from the command line, a run config or JSON) as this option's type,
        checked against its range or choices; ``OptionError`` naming what is valid."""
        kind = self.type
        try:
            if kind is bool:
                if isinstance(value, str):
                    if value.lower() not in ("true", "1", "yes", "false", "0", "no"):
                        raise ValueError(value)
                    out: Value = value.lower() in ("true", "1", "yes")
                else:
                    out = bool(value)
            elif kind is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError(value)
                if isinstance(value, bool):
                    raise ValueError(value)
                out = int(value)  # type: ignore[call-overload]
            elif kind is float:
                if isinstance(value, bool):
                    raise ValueError(value)
                out = float(value)  # type: ignore[arg-type]
            else:
                out = str(value)
        except (TypeError, ValueError):
            raise OptionError(f"{self.name}={value!r}: expected a {kind.__name__}") from None
        if self.choices and out not in self.choices:
            raise OptionError(f"{self.name}={out!r}: use one of {self.range}")
        if isinstance(out, int | float) and not isinstance(out, bool):
            if not math.isfinite(out):
                raise OptionError(f"{self.name}={out!r}: must be a finite number")
            if self.low is not None and (out < self.low or (self.low_open and out == self.low)):
                raise OptionError(f"{self.name}={out!r}: must be in {self.range}")
            if self.high is not None and (out > self.high
                                          or (self.high_open and out == self.high)):  # fmt: skip
                raise OptionError(f"{self.name}={out!r}: must be in {self.range}")
        return out

    @property
    def range(self) -> str:
        """The valid values, as the help and the docs table say them."""
        if self.choices:
            return ", ".join(str(c) for c in self.choices)
        if self.type is bool:
            return "true, false"
        if self.low is None and self.high is None:
            return "any"
        low = "-inf" if self.low is None else _number(self.low)
        high = "inf" if self.high is None else _number(self.high)
        return f"{'(' if self.low_open or self.low is None else '['}{low}, {high}" \
               f"{')' if self.high_open or self.high is None else ']'}"


def _number(value: float) -> str:
    """A bound as the help says it: whole numbers in full (a 32-bit seed's 4294967295),
    others as ``%g``."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def merge(groups: Iterable[Sequence[Option]]) -> dict[str, Option]:
    """Options by name, in first-seen order; one name, one declaration."""
    out: dict[str, Option] = {}
    for group in groups:
        for option in group:
            seen = out.get(option.name)
            if seen is not None and seen != option:
                raise ValueError(f"option {option.name!r} is declared twice, differently")
            out[option.name] = option
    return out


def add_to_parser(parser: argparse.ArgumentParser, options: Iterable[Option],
                  users: Mapping[str, list[str]] | None = None, *,
                  title: str = "method options (each method declares its own)",
                  extra: Mapping[str, str] | None = None) -> None:  # fmt: skip
    """``--<flag>`` for every option the command line sets (a bool: ``--<flag>`` /
    ``--no-<flag>``), in a group ``title``; its value lands in ``Option.attr``. ``users``:
    the methods that read each option; ``extra``: text the help adds, by option name (what
    only the caller knows, such as the registered methods)."""
    group = parser.add_argument_group(title)
    for option in options:
        if not option.command_line:
            continue
        who = f" [{', '.join(users[option.name])}]" if users and users.get(option.name) else ""
        more = f" ({extra[option.name]})" if extra and option.name in extra else ""
        common: dict[str, Any] = {"dest": option.attr, "default": option.default,
                                  "help": f"{option.help}{more}{who}; valid: {option.range}"}
        if option.type is bool:
            group.add_argument(option.flags[0], action=argparse.BooleanOptionalAction,
                               **common)  # fmt: skip
            continue
        # Choices are checked with every other value (``Option.coerce``: one error line
        # naming what is valid), not by argparse; the placeholder still lists them.
        choices = "{" + ",".join(map(str, option.choices)) + "}" if option.choices else ""
        common["metavar"] = option.metavar or choices or option.flag.upper() or None
        group.add_argument(option.flags[0], type=option.type, **common)


def from_args(args: argparse.Namespace, options: Iterable[Option]) -> dict[str, object]:
    """The values of ``options`` parsed by ``add_to_parser``, by option name."""
    return {o.name: getattr(args, o.attr) for o in options if o.command_line}


def markdown(options: Iterable[Option], users: Mapping[str, list[str]] | None = None) -> str:
    """A table of ``options`` for docs/options.md (``users``: a column of the methods that
    read each one)."""
    users_column = users is not None
    lines = ["| option | default | valid | " + ("methods | " if users_column else "") + "what |",
             "|---|---|---|---|" + ("---|" if users_column else "")]  # fmt: skip
    for option in options:
        default = str(option.default).lower() if option.type is bool else f"{option.default}"
        flags = " / ".join(f"`{flag}`" for flag in option.flags) if option.command_line \
            else f"`{option.name}` (run config only)"
        who = f"{', '.join((users or {}).get(option.name, []))} | " if users_column else ""
        lines.append(f"| {flags} | {_cell(default)} | {_cell(option.range)} | {who}"
                     f"{_cell(option.help)} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """``text`` as one markdown table cell (a ``|`` would end the cell)."""
    return text.replace("|", "\\|") if text else " "


def toml_value(value: object) -> str:
    """A setting's value as TOML, as pyproject.toml and ``flwr run --run-config`` read it
    (strings quoted, so a comma list stays one value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))
