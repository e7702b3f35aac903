"""Evolving prototype with server momentum: dithered votes down, a velocity every party keeps.

``evolve_dither``'s update ``U_r = N_r * level / Q`` follows fresh random directions every
round, so one round's step is a noisy projection of the clients' descent direction. Here
every party also keeps a velocity ``V`` (FedAvgM's server momentum, Hsu et al. 2019) and
applies ``V = beta * V + U_r``, ``W += V`` (``--weight-momentum`` = beta): consistent
directions add up across rounds, noise averages out. Nothing more travels: ``V`` is a
function of the updates every party already applies; it only joins ``W`` in the replicated
state (the digest, and the snapshot a node far behind receives, which doubles).
"""

from __future__ import annotations

from pemn_fl.config import RunSettings
from pemn_fl.methods import evolve, evolve_dither
from pemn_fl.options import Option

NAME = "evolve_momentum"
WEIGHT_MOMENTUM = Option("weight-momentum", 0.9, "server momentum beta on the replicated "
                         "weights", low=0, high=1, high_open=True)  # fmt: skip



def weight_momentum(settings: RunSettings) -> float:
    """The server momentum beta (a named function, so a checkpoint can pickle the scheme)."""
    return float(settings[WEIGHT_MOMENTUM])


SCHEME = evolve.Scheme(rule=evolve_dither.dither_rule, basis=evolve.noise,
                       momentum=weight_momentum)  # fmt: skip
METHOD = evolve.method(NAME, SCHEME, label="Evolving prototype, dithered votes + momentum",
                       marker="-h", description="evolve_dither with a server velocity every "
                       "party keeps (beta = --weight-momentum); no extra bytes",
                       options=(evolve_dither.DITHER_LEVELS, WEIGHT_MOMENTUM))  # fmt: skip
