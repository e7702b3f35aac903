"""The method registry: every method the simulator can run, one module each.

Adding a method = one module exporting ``METHOD`` (see ``base.Method``) + one line in
``_MODULES`` + its tests. Everything else (``--methods``, the Flower apps, the round log,
tables and plots) reads this registry.
"""

from __future__ import annotations

from importlib import import_module

from pemn_fl.methods.base import ClientStep, Method, ServerSide

__all__ = ["ClientStep", "Method", "ServerSide", "get", "names", "registry"]

# Order = order of tables and plots. Imported lazily: method modules import the settings,
# and the settings validate method names against this list.
_MODULES = (
    "pemn", "fedavg", "evolve", "evolve_dither", "evolve_lattice", "pemn_wide", "fedpm",
    "fedpm_bayes", "signsgd", "qsgd", "topk",
)  # fmt: skip


def names() -> tuple[str, ...]:
    """Registered method names, in display order."""
    return _MODULES


def registry() -> dict[str, Method]:
    """Every registered method by name (modules import on first use)."""
    return {name: get(name) for name in _MODULES}


def get(name: str) -> Method:
    """The registered method ``name``; a clear error for an unknown one."""
    if name not in _MODULES:
        raise KeyError(f"unknown method {name!r}: use one of {', '.join(_MODULES)}")
    method = import_module(f"pemn_fl.methods.{name}").METHOD
    if method.name != name:
        raise RuntimeError(f"module pemn_fl.methods.{name} registers {method.name!r}")
    return method
