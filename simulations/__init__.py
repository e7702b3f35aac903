"""Runnable experiments: ``python -m simulations.run``, ``.plot``, ``.centralized``."""
