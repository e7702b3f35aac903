"""The method registry: every method the simulator can run, one module each.

Adding a method = one module exporting ``METHOD`` (see ``base.Method``) + one line in
``_MODULES`` + its tests. Everything else (``--methods``, the Flower apps, the round log,
tables and plots) reads this registry.

A method can also live outside this package: ``--methods mypkg.mymethod`` (any dotted
module path importable by the simulator and its Ray workers, e.g. via ``PYTHONPATH``)
imports that module's ``METHOD``. Such a plug-in runs in the simulator, whose ClientApp is
built knowing the run's methods; a deployed ClientApp (``flwr run``) serves the built-in
ones only, so list a method in ``_MODULES`` to deploy it.
"""

from __future__ import annotations

from importlib import import_module

from pemn_fl.methods.base import ClientStep, Method, ServerSide

__all__ = ["ClientStep", "Method", "ServerSide", "get", "is_plugin", "names", "registry"]

# Order = order of tables and plots. Imported lazily: method modules import the settings,
# and the settings validate method names against this list.
_MODULES = (
    "pemn", "fedavg", "evolve", "evolve_dither", "evolve_lattice", "evolve_momentum",
    "pemn_wide", "fedpm", "fedpm_bayes", "signsgd", "qsgd", "topk",
)  # fmt: skip


def names() -> tuple[str, ...]:
    """Registered method names, in display order."""
    return _MODULES


def registry() -> dict[str, Method]:
    """Every registered method by name (modules import on first use)."""
    return {name: get(name) for name in _MODULES}


def is_plugin(spec: str) -> bool:
    """A method given as a dotted module path rather than a built-in name."""
    return "." in spec


def get(name: str) -> Method:
    """The method ``name`` (built-in, or a plug-in module path); a clear error otherwise."""
    if is_plugin(name) and name not in _MODULES:
        return _plugin(name)
    if name not in _MODULES:
        raise KeyError(f"unknown method {name!r}: use one of {', '.join(_MODULES)}")
    method = import_module(f"pemn_fl.methods.{name}").METHOD
    if method.name != name:
        raise RuntimeError(f"module pemn_fl.methods.{name} registers {method.name!r}")
    return method


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
    if method.name in _MODULES:
        raise KeyError(f"method {spec!r}: its name {method.name!r} is a built-in method's")
    return method
