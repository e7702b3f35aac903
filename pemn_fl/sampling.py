"""The shared client sample: which partitions train in which round, for every method alike.

Node ids are random per run, so the sample is drawn over *partition ids* from a seed and
mapped to this run's node ids: every method, and every rerun, sees the same clients.

Two samplers, an experiment setting like any other (``--sampler``; every method of a run
sees the same sample, so a comparison stays fair):

* ``uniform`` (the default): each round a fresh, seeded draw of ``fraction`` of the
  partitions;
* ``sticky`` (GlueFL's sticky sampling, He et al., MLSys 2023): a *sticky group* of
  ``sticky_group`` partitions; each round ``sticky_change`` of the sampled clients are drawn
  from outside the group and the rest from inside it; after the round the newcomers join the
  group and as many members that were not sampled leave it. Recently used clients are
  sampled again sooner, so a sampled client has usually missed fewer rounds. (With every
  client eventually sampled, the missed rounds summed over a run are the same under any
  sampler: sticky sampling moves catch-up between clients, it cannot remove it, unless
  updates of several rounds can be merged, which none of this project's methods allow;
  ``results/levers/`` measures it.)
"""

from __future__ import annotations

import numpy as np

from pemn_fl.prototype import derived_seed

SAMPLERS = ("uniform", "sticky")


class RoundSampler:
    """Seeded choice of partitions per round, mapped to this run's (random) node ids."""

    def __init__(self, node_of_partition: dict[int, int], fraction: float, seed: int,
                 sampler: str = "uniform", sticky_group: int = 0,
                 sticky_change: int = 0) -> None:  # fmt: skip
        self.node_of_partition = dict(sorted(node_of_partition.items()))
        self.partition_of = {node: p for p, node in self.node_of_partition.items()}
        self.fraction = fraction
        self.seed = seed
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler {sampler!r}: one of {', '.join(SAMPLERS)}")
        self.sampler = sampler
        n = len(self.node_of_partition)
        self.size = max(1, int(round(fraction * n)))
        # Sticky: defaults scaled from GlueFL's setting (group 4x the sample, a fifth of the
        # sample new each round) to fit a small federation: the group 1.2x the sample.
        self.change = sticky_change or max(1, int(round(0.2 * self.size)))
        self.group_size = sticky_group or min(n - self.change, int(round(1.2 * self.size)))
        self._sticky: list[list[int]] = []  # round r - 1 -> the partitions sampled in r

    def __call__(self, server_round: int) -> list[int]:
        everyone = self.size >= len(self.node_of_partition)
        if self.sampler == "sticky" and server_round >= 1 and not everyone:
            chosen = self._sticky_round(server_round)
        else:
            partitions = np.array(list(self.node_of_partition), dtype=np.int64)
            rng = np.random.default_rng(derived_seed(self.seed, f"sample/{server_round}"))
            chosen = np.sort(rng.choice(partitions, size=self.size, replace=False)).tolist()
        return [self.node_of_partition[int(p)] for p in chosen]

    def _sticky_round(self, server_round: int) -> list[int]:
        """Round ``server_round``'s sticky sample (rounds are drawn in order and kept, so
        the sample of any round is a pure function of the seed)."""
        partitions = list(self.node_of_partition)
        if not self._sticky:
            rng = np.random.default_rng(derived_seed(self.seed, "sticky/group"))
            self._group = sorted(rng.choice(partitions, size=self.group_size,
                                            replace=False).tolist())  # fmt: skip
        while len(self._sticky) < server_round:
            r = len(self._sticky) + 1
            rng = np.random.default_rng(derived_seed(self.seed, f"sticky/{r}"))
            inside = self._group
            outside = sorted(set(partitions) - set(inside))
            new = min(self.change, len(outside), self.size)
            old = sorted(rng.choice(inside, size=min(self.size - new, len(inside)),
                                    replace=False).tolist())  # fmt: skip
            fresh = sorted(rng.choice(outside, size=new, replace=False).tolist()) if new else []
            stay = [p for p in inside if p not in old]
            leave = set(rng.choice(stay, size=min(len(fresh), len(stay)),
                                   replace=False).tolist()) if stay else set()  # fmt: skip
            self._group = sorted([p for p in inside if p not in leave] + fresh)
            self._sticky.append(sorted(old + fresh))
        return self._sticky[server_round - 1]

    def label(self, node: int) -> str:
        """How logs name a node: its partition (stable across runs), then its random id."""
        pid = self.partition_of.get(node)
        return f"node {node}" if pid is None else f"partition {pid} (node {node})"

    def order_key(self, node: int) -> int:
        """Sort key putting replies in partition order (reproducible float sums)."""
        return self.partition_of.get(node, node)
