"""A method's options are declared once, next to the method (issue 18 §1): the command line,
the run config, the checks and the docs table all come from the declarations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pemn_fl.methods import get, options, settings_from, users
from pemn_fl.methods.frames import evolving as E
from pemn_fl.options import Option, OptionError, merge

ROOT = Path(__file__).resolve().parents[1]


def test_an_option_checks_its_type_and_range() -> None:
    rate = Option("rate", 0.5, "a rate", low=0, high=1, high_open=True)
    assert rate.coerce("0.25") == 0.25 and rate.coerce(0) == 0.0
    for bad, words in ((1, r"rate=1.0: must be in \[0, 1\)"), ("x", "rate='x': expected a float"),
                       (float("nan"), "rate=nan: must be a finite"),
                       (True, "rate=True: expected a float")):  # fmt: skip
        with pytest.raises(OptionError, match=words):
            rate.coerce(bad)
    levels = Option("levels", 4, "levels", choices=(2, 4, 8))
    assert levels.coerce("8") == 8
    with pytest.raises(OptionError, match="use one of 2, 4, 8"):
        levels.coerce(3)
    with pytest.raises(OptionError, match="expected a int"):
        levels.coerce(2.5)
    flag = Option("on", True, "a switch")
    assert flag.coerce("false") is False and flag.coerce("yes") is True
    with pytest.raises(ValueError, match="lower-case words"):
        Option("Bad_Name", 1, "x")
    with pytest.raises(OptionError):  # a declaration whose default is invalid is refused
        Option("rate", 2.0, "x", high=1)


def test_one_name_means_one_declaration() -> None:
    a = Option("rate", 0.5, "a rate")
    assert list(merge([(a,), (a,)])) == ["rate"]  # a family's option shared by its members
    with pytest.raises(ValueError, match="declared twice, differently"):
        merge([(a,), (Option("rate", 0.1, "another rate"),)])


def test_every_registered_method_declares_what_it_reads() -> None:
    from pemn_fl.methods import qsgd

    assert E.NOISE_SCALE in get("evolve_dither").options
    assert set(users()["noise-scale"]) == {"evolve", "evolve_dither", "evolve_lattice",
                                           "evolve_momentum"}  # fmt: skip
    assert users()["bits"] == ["qsgd"]
    settings = settings_from({"methods": "qsgd", "bits": 4})
    assert settings[qsgd.BITS] == 4 and settings.to_run_config()["bits"] == 4
    assert settings_from({"methods": "qsgd"})[qsgd.BITS] == 8  # the declared default
    # Every declared option is in every run's config (what config.json records).
    assert set(options()) <= set(settings.to_run_config())


def test_the_docs_and_the_app_config_are_the_declarations() -> None:
    """docs/options.md and pyproject.toml's [tool.flwr.app.config] are written from the
    declarations: after a change, ``python -m pemn_fl options --write``."""
    from pemn_fl import reference

    assert reference.drift() == [], "out of date: run python -m pemn_fl options --write"


def test_the_options_command_writes_and_checks_the_generated_files(tmp_path: Path) -> None:
    """``drift`` names a drifted file, ``write`` mends it, and ``--check`` passes on this
    checkout."""
    from pemn_fl import reference
    from pemn_fl.__main__ import main

    for path in (reference.DOC, reference.PYPROJECT):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text((ROOT / path).read_text())
    for package in reference.COMMAND_PACKAGES:  # the commands are found in the checkout
        (tmp_path / package).symlink_to(ROOT / package)
    (tmp_path / reference.DOC).write_text("stale\n")
    assert reference.drift(tmp_path) == [str(reference.DOC)]
    assert reference.write(tmp_path) == [str(reference.DOC)]
    assert reference.drift(tmp_path) == []
    assert main(["options", "--check"]) == 0


def test_every_flag_of_every_command_is_documented() -> None:
    """Every ``python -m`` command (every module of pemn_fl, simulations and bench with a
    ``__main__`` block) builds its command line in ``build_parser()``, and every flag and
    argument of it has a help text, which docs/options.md shows (the test above)."""
    from pemn_fl import reference

    found = set(reference.commands())
    assert {"pemn_fl", "simulations.run", "simulations.deploy", "simulations.plot",
            "simulations.timeline", "bench.accuracy_frontier", "bench.mutation"} <= found
    assert reference.undocumented() == []
    page = (ROOT / "docs" / "options.md").read_text()
    for module in found:
        for command, parser in reference.parsers(module):
            for action in reference.flags(parser):
                name = action.option_strings[0] if action.option_strings else action.dest
                assert f"`{name}`" in page, f"{command} {name}"
    for flag in ("--quiet", "--rounds", "--bytes", "--no-rescale", "--nodes", "--secure"):
        assert f"`{flag}`" in page, flag


def test_a_method_option_may_not_take_a_shared_setting_s_name() -> None:
    from pemn_fl.config import SHARED

    assert not {o.name for o in SHARED} & set(options())


def test_no_import_cycle_between_settings_and_methods() -> None:
    """The settings module imports no method: importing it alone loads no method module."""
    code = ("import sys, pemn_fl.config; "
            "print(sorted(m for m in sys.modules if m.startswith('pemn_fl.methods')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
