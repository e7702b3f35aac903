"""Evolving prototype on a lattice: ternary votes, error-fed (sigma-delta) integer steps down.

``evolve_dither`` makes the downlink cheap by rounding the vote *randomly*, and pays in
variance. This variant rounds it *deterministically with error feedback*, which needs a
basis that does not change between rounds:

* the directions are fixed, ``+noise_scale * he_std`` for every weight (a lattice around
  the seeded prototype ``W_0``), so a client's mask must say which way to move: it is
  ternary, ``sign(s) * top-density(|s|)`` (``train_noise_mask(signed=True)``);
* the server adds each round's weighted mean vote ``f`` (in [-1, 1]) to a float
  accumulator ``A`` that only it holds, and sends the integer step ``round(A - S)``
  (``S`` = the steps already sent), so ``|A - S| <= 1/2`` always: nothing a vote asked
  for is lost, it is only delayed until it adds up to a whole step;
* everyone applies ``W += step * noise_scale * he_std``: the model is still the seed plus
  every round's integer levels, bit-identical everywhere.

Most steps are 0 and the rest +-1, so the downlink costs about the entropy of a sparse
ternary symbol; the uplink ~``H(density) + density`` bits.

Because the basis never changes, k rounds' steps add up to one integer vector, and
error-fed steps largely cancel in pairs (+1 then 0, or +1 then -1): ``--merged-catch-up``
sends a node that missed rounds their sum, one payload that codes in far fewer bits than k
(the replicated state becomes the summed steps ``S``, with ``W = W_0 + basis * S``).
"""

from __future__ import annotations

import numpy as np

from pemn_fl.config import RunSettings
from pemn_fl.methods.frames import evolving as E
from pemn_fl.methods.frames import replica as R
from pemn_fl.methods.frames.evolving_round import Levels, Scheme, method

NAME = "evolve_lattice"
MAX_STEP = 2  # |A - S| <= 1/2 and |f| <= 1, so a step is at most 1 in magnitude; 2 is slack


def lattice(settings: RunSettings, server_round: int) -> E.Weights:
    """The fixed directions: ``+noise_scale * he_std`` per weight, the same every round
    (scaled by ``lr-schedule``)."""
    scale = settings.scheduled(settings[E.NOISE_SCALE], server_round)
    return E.lattice_steps(list(E.network(settings).shapes), scale)


def sigma_delta_rule(
    fraction: list[np.ndarray], k: int, settings: RunSettings, server_round: int, state: dict
) -> Levels:
    """``A += f``; ``step = round(A - S)``; ``S += step``. Steps travel offset by ``MAX_STEP``."""
    acc = state.setdefault("accumulated", [np.zeros(f.size) for f in fraction])
    sent = state.setdefault("sent", [np.zeros(f.size, dtype=np.int64) for f in fraction])
    levels = []
    for a, s_, f in zip(acc, sent, fraction, strict=True):
        a += f
        step = np.clip(np.rint(a - s_), -MAX_STEP, MAX_STEP).astype(np.int64)
        s_ += step
        levels.append((step + MAX_STEP).astype(np.int16))
    return Levels(levels, 1, 2 * MAX_STEP, MAX_STEP)


SCHEME = Scheme(rule=sigma_delta_rule, basis=lattice, signed=True, fixed_basis=True)
METHOD = method(NAME, SCHEME, label="Evolving lattice, error-fed ternary votes", marker="-X",
                description="fixed +-step lattice; ternary client masks; sigma-delta integer "
                "steps down", order=50, options=(R.MERGED_CATCH_UP,),
                grid=({"noise-scale": 0.5}, {"noise-scale": 1.0}, {"noise-scale": 2.0}))
