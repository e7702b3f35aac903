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
from pemn_fl.methods.frames.evolving import noise
from pemn_fl.methods.frames.evolving_round import DITHER_LEVELS, Scheme, dither_rule, method
from pemn_fl.options import Option

NAME = "evolve_momentum"
WEIGHT_MOMENTUM = Option("weight-momentum", 0.9, "server momentum beta on the replicated "
                         "weights", low=0, high=1, high_open=True)  # fmt: skip


def weight_momentum(settings: RunSettings) -> float:
    """The server momentum beta (a named function, so a checkpoint can pickle the scheme)."""
    return float(settings[WEIGHT_MOMENTUM])


SCHEME = Scheme(rule=dither_rule, basis=noise, momentum=weight_momentum)
METHOD = method(NAME, SCHEME, label="Evolving prototype, dithered votes + momentum",
                marker="-h", description="evolve_dither with a server velocity every party "
                "keeps (beta = --weight-momentum); no extra bytes",
                options=(DITHER_LEVELS, WEIGHT_MOMENTUM), order=60,
                # Momentum multiplies the step by ~1/(1 - beta): smaller noise with larger beta.
                grid=({"noise-scale": 0.5, "weight-momentum": 0.7},
                      {"noise-scale": 0.3, "weight-momentum": 0.9},
                      {"noise-scale": 1.0, "weight-momentum": 0.5}))  # fmt: skip
