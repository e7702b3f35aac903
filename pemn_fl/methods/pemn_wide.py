"""PEMN-FL with a wider masked model than the dense baseline: the capacity lever.

A mask costs at most 1 bit per edge where FedAvg pays 32, so a masked network can be
several times wider than the dense one and still send far fewer bytes; the extra width
buys back the capacity a frozen random network lacks (PEMN-FL's accuracy ceiling). Same
protocol as ``pemn``, on a model ``WIDEN`` times wider than ``--width``; the bytes decide.
"""

from __future__ import annotations

import dataclasses

from flwr.app import Context, Message

from pemn_fl.config import RunSettings
from pemn_fl.methods import pemn
from pemn_fl.methods.base import Method, ServerSide
from pemn_fl.sampling import RoundSampler

NAME = "pemn_wide"
WIDEN = 2.0


def widened(settings: RunSettings) -> RunSettings:
    return dataclasses.replace(settings, width=settings.width * WIDEN)


def client_step(msg: Message, context: Context, settings: RunSettings) -> Message:
    return pemn.client_step(msg, context, widened(settings), name=NAME)


def server(settings: RunSettings, sampler: RoundSampler) -> ServerSide:
    return pemn.server(widened(settings), sampler, name=NAME)


METHOD = Method(
    name=NAME,
    label=f"PEMN-FL, {WIDEN:g}x wider masks",
    client_step=client_step,
    server=server,
    num_params=lambda settings: pemn.num_params(widened(settings)),
    marker="-D",
    description=f"pemn on a model {WIDEN:g}x wider than --width (capacity for bytes)",
)
