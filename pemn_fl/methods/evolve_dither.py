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

from pemn_fl.methods.frames.evolving import noise
from pemn_fl.methods.frames.evolving_round import DITHER_LEVELS, Scheme, dither_rule, method

NAME = "evolve_dither"
SCHEME = Scheme(rule=dither_rule, basis=noise)
METHOD = method(NAME, SCHEME, label="Evolving prototype, dithered votes", marker="-P",
                description="evolve with a seeded dithered rounding of the vote fraction: "
                "~H(levels) down", options=(DITHER_LEVELS,), order=40,
                grid=({"noise-scale": 1.0, "dither-levels": 1},
                      {"noise-scale": 2.0, "dither-levels": 1},
                      {"noise-scale": 1.0, "dither-levels": 2}))  # fmt: skip
