"""The method registry: every method the simulator can run, one module each.

Adding a method = one module in this package exporting ``METHOD`` (see ``base.Method``; its
``order`` places it in tables and plots) + its tests. The registry finds the module itself
(every module of the package but ``base``; the ``frames`` package is the machinery methods
share, not a method). Everything else (``--methods``, the Flower apps, the round log, tables
and plots, ``python -m pemn_fl options``) reads this registry.

A method can also live outside this package: ``--methods mypkg.mymethod`` (any dotted
module path importable by the simulator and its Ray workers, e.g. via ``PYTHONPATH``)
imports that module's ``METHOD``. Such a plug-in runs in the simulator, whose ClientApp is
built knowing the run's methods; a deployed ClientApp (``flwr run``) serves the built-in
ones only, so put a method in this package to deploy it.
"""

from __future__ import annotations

import functools
import pkgutil
from collections.abc import Iterable, Mapping
from importlib import import_module

from pemn_fl.config import RunSettings, SettingsError
from pemn_fl.methods.base import ClientStep, Method, ServerSide
from pemn_fl.options import Option, merge

__all__ = ["ClientStep", "Method", "ServerSide", "get", "is_plugin", "names", "options",
           "registry", "settings_from", "unread", "users"]  # fmt: skip

NOT_METHODS = frozenset({"base"})  # modules of this package that hold no method


@functools.cache
def _discovered() -> dict[str, Method]:
    """Every method module of this package, imported once, in display order (``Method.order``,
    then name)."""
    found = {}
    for module in pkgutil.iter_modules(__path__):
        if module.ispkg or module.name in NOT_METHODS or module.name.startswith("_"):
            continue
        method = getattr(import_module(f"{__name__}.{module.name}"), "METHOD", None)
        if not isinstance(method, Method):
            raise RuntimeError(f"module {__name__}.{module.name} has no METHOD of type Method")
        if method.name != module.name:
            raise RuntimeError(f"module {__name__}.{module.name} registers {method.name!r}")
        found[method.name] = method
    return dict(sorted(found.items(), key=lambda item: (item[1].order, item[0])))


def names() -> tuple[str, ...]:
    """Registered method names, in display order."""
    return tuple(_discovered())


def registry() -> dict[str, Method]:
    """Every registered method by name, in display order."""
    return dict(_discovered())


def is_plugin(spec: str) -> bool:
    """A method given as a dotted module path rather than a built-in name."""
    return "." in spec


def get(name: str) -> Method:
    """The method ``name`` (built-in, or a plug-in module path); a clear error otherwise."""
    built_in = _discovered()
    if name in built_in:
        return built_in[name]
    if is_plugin(name):
        return _plugin(name)
    raise KeyError(f"unknown method {name!r}: use one of {', '.join(built_in)}")


def _plugin(spec: str) -> Method:
    try:
        module = import_module(spec)
    except ImportError as exc:
        raise KeyError(f"method {spec!r}: cannot import module {spec} ({exc}); put its "
                       "directory on PYTHONPATH") from None  # fmt: skip
    method = getattr(module, "METHOD", None)
    if not isinstance(method, Method):
        raise KeyError(f"method {spec!r}: module {spec} has no METHOD of type "
                       "pemn_fl.methods.Method")  # fmt: skip
    if method.name in names():
        raise KeyError(f"method {spec!r}: its name {method.name!r} is a built-in method's")
    return method


def _specs(methods: str) -> list[str]:
    """A ``methods`` value as a list of specs, ``all`` expanded to every registered one."""
    if methods.strip() == "all":
        return list(names())
    return [m.strip() for m in methods.split(",") if m.strip()]


def options(specs: Iterable[str] = ()) -> dict[str, Option]:
    """Every option a run may set: those of every registered method, and of the plug-ins
    among ``specs``, by name (one declaration per name)."""
    plugins = [spec for spec in specs if is_plugin(spec) and spec not in names()]
    return merge(get(spec).options for spec in [*names(), *plugins])


def users(specs: Iterable[str] = ()) -> dict[str, list[str]]:
    """Option name -> the methods that read it (for help texts and the docs table)."""
    plugins = [spec for spec in specs if is_plugin(spec) and spec not in names()]
    out: dict[str, list[str]] = {}
    for spec in [*names(), *plugins]:
        method = get(spec)
        for option in method.options:
            out.setdefault(option.name, []).append(method.name)
    return out


def unread(settings: RunSettings) -> dict[str, list[str]]:
    """Options set to other than their default that no method of the run reads: option name
    -> the methods (registered ones and the run's plug-ins) that would read it.

    A method reads exactly the options it declares (``Method.options``), so such a value
    changes nothing: ``--methods fedavg --density 0.5`` runs plain FedAvg. The commands that
    take settings from a user (``simulations.run``, ``simulations.deploy``) refuse it rather
    than run something other than what was asked; settings read back from a run's own
    config.json are not checked (a finished run stays readable)."""
    specs = settings.method_list
    declared = options(specs)
    chosen = {get(spec).name for spec in specs}
    readers = users(specs)
    return {name: readers.get(name, []) for name, option in declared.items()
            if settings[option] != option.default
            and not chosen & set(readers.get(name, []))}  # fmt: skip


def settings_from(config: Mapping[str, object]) -> RunSettings:
    """Settings from a Flower run config (or the command line's equivalent): the shared
    settings, and every method's options checked against its declaration (defaults filled
    in, so config.json says every value a run used). ``SettingsError`` names what is wrong.
    """
    return _settings(tuple(sorted(config.items(), key=lambda item: item[0])))


@functools.lru_cache(maxsize=32)
def _settings(items: tuple[tuple[str, object], ...]) -> RunSettings:
    """``settings_from``, cached: a ClientApp builds its settings from the same run config
    for every message."""
    config = dict(items)
    methods = str(config.get("methods", RunSettings.methods))
    specs = _specs(methods)
    bad = [m for m in specs if m not in names() and not is_plugin(m)]
    if not specs or bad:
        raise SettingsError(f"methods={methods!r}: use 'all' or a comma list of "
                            f"{', '.join(names())} (or plug-in module paths such as "
                            "mypkg.mymethod)")  # fmt: skip
    for spec in specs:
        try:
            get(spec)
        except KeyError as exc:
            raise SettingsError(f"methods={methods!r}: {exc.args[0]}") from None
    declared = options(specs)
    settings = RunSettings.from_run_config({**config, "methods": ",".join(specs)}, declared)
    for option in declared.values():
        if option.check is not None:
            try:
                option.check(settings[option], settings)
            except ValueError as exc:
                raise SettingsError(str(exc)) from None
    if settings.byzantine > 0:
        unarmed = [m for m in specs if not get(m).attack]
        if unarmed:
            armed = [n for n in names() if get(n).attack]
            raise SettingsError(
                f"byzantine={settings.byzantine!r}: no attack is defined for "
                f"{', '.join(unarmed)}; Byzantine clients are defined for {', '.join(armed)}"
            )
    return settings
