"""The shared client sample: which partitions train in which round, for every method alike.

Node ids are random per run, so the sample is drawn over *partition ids* from a seed and
mapped to this run's node ids: every method, and every rerun, sees the same clients.
"""

from __future__ import annotations

import numpy as np

from pemn_fl.prototype import derived_seed


class RoundSampler:
    """Seeded choice of partitions per round, mapped to this run's (random) node ids."""

    def __init__(self, node_of_partition: dict[int, int], fraction: float, seed: int) -> None:
        self.node_of_partition = dict(sorted(node_of_partition.items()))
        self.partition_of = {node: p for p, node in self.node_of_partition.items()}
        self.fraction = fraction
        self.seed = seed

    def __call__(self, server_round: int) -> list[int]:
        partitions = np.array(list(self.node_of_partition), dtype=np.int64)
        size = max(1, int(round(self.fraction * len(partitions))))
        rng = np.random.default_rng(derived_seed(self.seed, f"sample/{server_round}"))
        chosen = np.sort(rng.choice(partitions, size=size, replace=False))
        return [self.node_of_partition[int(p)] for p in chosen]

    def label(self, node: int) -> str:
        """How logs name a node: its partition (stable across runs), then its random id."""
        pid = self.partition_of.get(node)
        return f"node {node}" if pid is None else f"partition {pid} (node {node})"

    def order_key(self, node: int) -> int:
        """Sort key putting replies in partition order (reproducible float sums)."""
        return self.partition_of.get(node, node)
