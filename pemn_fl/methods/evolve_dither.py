"""Evolving prototype, 1-bit dithered votes down: the cheap-downlink variant of ``evolve``.

Same client step and server as ``evolve``; only the rule that turns the round's vote
fraction ``f`` into levels differs: ``level = 1[u < f]`` with ``u`` uniform, drawn from
``(seed, round, layer)``. The update ``N * level`` is unbiased (its mean is ``N * f``, the
exact weighted mean of the clients' masked noise) and costs about ``H(mean f)`` bits per
weight instead of the entropy of the counts: with 5%-dense client masks, ~0.3 bit, not
~2. The price is variance, which the following rounds average out.
"""

from __future__ import annotations

import numpy as np

from pemn_fl.methods import evolve
from pemn_fl.methods.base import Method
from pemn_fl.prototype import derived_seed

NAME = "evolve_dither"


def dither_rule(
    fraction: list[np.ndarray], k: int, seed: int, server_round: int
) -> tuple[list[np.ndarray], int, int]:
    """``level = 1[u < fraction]``, ``u ~ U[0, 1)`` seeded per round and layer; ``denom = 1``."""
    levels = []
    for i, f in enumerate(fraction):
        u = np.random.default_rng(derived_seed(seed, f"dither/{server_round}/{i}")).random(f.size)
        levels.append((u < f).astype(np.int16))
    return levels, 1, 1


def client_step(msg, context, settings):  # noqa: ANN001, ANN201 - same step, own state keys
    return evolve.client_step(msg, context, settings, name=NAME)


METHOD = Method(
    name=NAME,
    label="Evolving prototype, 1-bit dithered votes",
    client_step=client_step,
    server=evolve.server_for(NAME, dither_rule),
    num_params=evolve.num_params,
    marker="-P",
    description="evolve with a seeded stochastic rounding of the vote fraction: 1 bit down",
)
