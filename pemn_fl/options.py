"""A method's own options: declared once, next to the method, and everything else derives.

A method module declares each hyperparameter it reads as an ``Option`` (its name, default,
valid range or choices, help) and lists them in its ``Method(options=...)``; a family
declares its shared ones once in its base module (``evolve.OPTIONS``). From those
declarations come the ``--<name>`` flags of ``simulations.run`` (``add_to_parser``), the run
config keys of ``[tool.flwr.app.config]`` (a test holds pyproject.toml to them), validation
(``Option.coerce``), config.json (``RunSettings.to_run_config``) and the options table in
docs/options.md (``markdown``, held to the docs by a test). A plug-in method brings its own.

Names are flat and kebab-case, as Flower's run config and the command line use them
(``--noise-scale 2``, ``noise-scale=2``): shorter to type than nested keys, and the flat
names of every committed run's config.json stay valid. Two declarations of one name must be
the same declaration (a family's option shared by its members), so a name means one thing.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

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
        if self.low is None and self.high is None:
            return "any"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.low_open or self.low is None else '['}{low}, {high}" \
               f"{')' if self.high_open or self.high is None else ']'}"


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
                  users: dict[str, list[str]] | None = None) -> None:  # fmt: skip
    """``--<name>`` for every option (a bool: ``--<name>`` / ``--no-<name>``)."""
    group = parser.add_argument_group("method options (each method declares its own)")
    for option in options:
        who = f" [{', '.join(users[option.name])}]" if users and users.get(option.name) else ""
        text = f"{option.help}{who}; valid: {option.range}"
        if option.type is bool:
            group.add_argument(f"--{option.name}", dest=option.attr, default=option.default,
                               action=argparse.BooleanOptionalAction, help=text)  # fmt: skip
        else:
            group.add_argument(f"--{option.name}", dest=option.attr, default=option.default,
                               type=option.type, help=text)  # fmt: skip


def markdown(options: Iterable[Option], users: dict[str, list[str]]) -> str:
    """The options table of docs/options.md."""
    lines = ["| option | default | valid | methods | what |", "|---|---|---|---|---|"]
    for option in options:
        default = str(option.default).lower() if option.type is bool else f"{option.default}"
        lines.append(f"| `--{option.name}` | {default} | {option.range} | "
                     f"{', '.join(users.get(option.name, []))} | {option.help} |")  # fmt: skip
    return "\n".join(lines) + "\n"
