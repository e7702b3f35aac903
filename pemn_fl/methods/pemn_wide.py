"""PEMN-FL with a wider masked model than the dense baseline: the capacity lever.

A mask costs at most 1 bit per edge where FedAvg pays 32, so a masked network can be
several times wider than the dense one and still send far fewer bytes; the extra width
buys back the capacity a frozen random network lacks (PEMN-FL's accuracy ceiling). Same
protocol as ``pemn`` (``frames/frozen.py``, ``frames/mask_voting.py``), on a model ``WIDEN``
times wider than ``--width``, with its own state keys; the bytes decide.
"""

from __future__ import annotations

from pemn_fl.methods.frames.mask_voting import method

WIDEN = 2.0
METHOD = method(
    "pemn_wide", widen=WIDEN, label="PEMN-FL, 2x wider masks", marker="-D", order=70,
    description="pemn on a model 2x wider than --width (capacity for bytes)",
    grid=({"lr": 0.1}, {"lr": 0.3}, {"lr": 1.0}),
)  # fmt: skip
