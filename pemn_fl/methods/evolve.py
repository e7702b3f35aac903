"""Evolving prototype, exact vote counts down: the model is the seed plus every round's votes.

See ``pemn_fl/methods/frames/evolving.py`` for the idea and ``frames/evolving_round.py`` for
the round (messages, catch-up, the server). This module's rule is ``counts``: ``level =
round(K * fraction)``, ``denom = K`` (K valid replies): the exact vote count under uniform
weighting, the example-weighted fraction rounded to K steps otherwise (what is sent is what
everyone applies, so weights agree). ``evolve_dither`` and ``evolve_lattice`` swap in other
rules.
"""

from __future__ import annotations

import numpy as np

from pemn_fl.config import RunSettings
from pemn_fl.methods.frames.evolving import noise
from pemn_fl.methods.frames.evolving_round import Levels, Scheme, method

NAME = "evolve"


def counts_rule(
    fraction: list[np.ndarray], k: int, settings: RunSettings, server_round: int, state: dict
) -> Levels:
    """``level = round(k * fraction)`` over ``denom = k``: the exact vote count."""
    return Levels([np.rint(f * k).astype(np.int16) for f in fraction], k, k)


SCHEME = Scheme(rule=counts_rule, basis=noise)
METHOD = method(NAME, SCHEME, label="Evolving prototype, vote counts", marker="-v",
                description="weights = seed + every round's votes over shared noise; exact "
                "counts down", order=30,
                grid=({"noise-scale": 0.5}, {"noise-scale": 1.0}, {"noise-scale": 2.0}))
