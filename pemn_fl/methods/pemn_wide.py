"""PEMN-FL with a wider masked model than the dense baseline: the capacity lever.

A mask costs at most 1 bit per edge where FedAvg pays 32, so a masked network can be
several times wider than the dense one and still send far fewer bytes; the extra width
buys back the capacity a frozen random network lacks (PEMN-FL's accuracy ceiling). Same
protocol as ``pemn``, on a model ``WIDEN`` times wider than ``--width``; the bytes decide.
"""

from __future__ import annotations

import dataclasses

from pemn_fl.config import RunSettings
from pemn_fl.methods import pemn
from pemn_fl.methods.base import Method

WIDEN = 2.0


def widened(settings: RunSettings) -> RunSettings:
    return dataclasses.replace(settings, width=settings.width * WIDEN)


METHOD = Method(
    name="pemn_wide", label="PEMN-FL, 2x wider masks",
    client_step=lambda msg, ctx, s: pemn.client_step(msg, ctx, widened(s), name="pemn_wide"),
    server=lambda s, sampler: pemn.server(widened(s), sampler, name="pemn_wide"),
    num_params=lambda s: pemn.num_params(widened(s)),
    marker="-D",
    attack=pemn.METHOD.attack,
    options=pemn.METHOD.options,
    description="pemn on a model 2x wider than --width (capacity for bytes)",
)  # fmt: skip
