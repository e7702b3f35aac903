"""Evolving prototype, dithered votes down: the cheap-downlink variant of ``evolve``.

Same client step and server as ``evolve``; only the rule that turns the round's vote
fraction ``f`` into levels differs: subtractive-free dithered rounding to a grid of ``Q``
steps (``--dither-levels``), ``level = floor(Q * f + u)`` over ``denom = Q``, with ``u``
uniform in [0, 1) drawn from ``(seed, round, layer)`` so every replay gives the same levels.
The update ``N * level / Q`` is unbiased (its mean is ``N * f``, the exact weighted mean of
the clients' masked noise) and costs about the entropy of the levels: with ``Q = 1`` a
sparse bit, ~``H(mean f)`` (~0.3 bit per weight for 5%-dense client masks) instead of the
~1-2 bits of the exact counts. ``Q`` trades rate for variance; ``Q = K`` is nearly the
exact count.
"""

from __future__ import annotations

import numpy as np

from pemn_fl.config import RunSettings
from pemn_fl.levels_codec import MAX_LEVEL
from pemn_fl.methods import evolve
from pemn_fl.options import Option
from pemn_fl.prototype import derived_seed

NAME = "evolve_dither"
DITHER_LEVELS = Option("dither-levels", 2, "grid steps of the dithered vote (1 = one bit)",
                       low=1, high=MAX_LEVEL)  # fmt: skip


def dithered(fraction: list[np.ndarray], q: int, seed: int, server_round: int) -> list[np.ndarray]:
    """``floor(q * fraction + u)``, ``u ~ U[0, 1)`` seeded per round and layer."""
    levels = []
    for i, f in enumerate(fraction):
        u = np.random.default_rng(derived_seed(seed, f"dither/{server_round}/{i}")).random(f.size)
        levels.append(np.minimum(np.floor(q * f + u), q).astype(np.int16))
    return levels


def dither_rule(
    fraction: list[np.ndarray], k: int, settings: RunSettings, server_round: int, state: dict
) -> evolve.Levels:
    q = int(settings[DITHER_LEVELS])
    return evolve.Levels(dithered(fraction, q, settings.seed, server_round), q, q)


SCHEME = evolve.Scheme(rule=dither_rule, basis=evolve.noise)


METHOD = evolve.method(NAME, SCHEME, label="Evolving prototype, dithered votes", marker="-P",
                       description="evolve with a seeded dithered rounding of the vote "
                       "fraction: ~H(levels) down", options=(DITHER_LEVELS,))  # fmt: skip
