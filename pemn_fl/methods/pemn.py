"""PEMN-FL over a frozen prototype: bit-packed masks down and up, score voting in between.

Client step: decode the global mask (a delta against the version the node holds, or
packed), start edge-popup scores whose top-k is exactly that mask, train, reply with the new
mask as a delta against the global it received (``frames/frozen.py``). Server:
``MaskVoting`` tallies the votes and keeps the per-layer top-k (``frames/mask_voting.py``).
"""

from __future__ import annotations

from pemn_fl.methods.frames.mask_voting import method

NAME = "pemn"
METHOD = method(
    NAME, label="PEMN-FL (masks)", marker="-o", order=10,
    description="frozen seeded prototype; clients learn top-k masks; server score voting",
    grid=({"lr": 0.1}, {"lr": 0.3}, {"lr": 1.0}),
)  # fmt: skip
