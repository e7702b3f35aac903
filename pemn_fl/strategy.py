"""Server strategies: PEMN-FL score voting, and Flower's FedAvg on the same client sample.

``MaskVoting`` is a ``flwr.serverapp.strategy.Strategy``: ``start()`` drives its rounds like
any built-in one. Its global model is the mask, kept as an ``ArrayRecord`` of per-layer
uint8 arrays on the server (handy for evaluation); what travels is only the codec payload.

Downlink: the server remembers which mask version each node last acknowledged (a reply
proves receipt) and sends a delta against it when that is smaller than the packed mask.
Every node implicitly holds version 0 (derived from the seed).

``SampledFedAvg`` is Flower's ``FedAvg`` with one change: it trains on the node sample the
shared ``RoundSampler`` draws, so both methods see the same clients in every round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Strategy

from pemn_fl import protocol as P
from pemn_fl.codec import MaskPayloadError, decode_mask, encode_mask
from pemn_fl.prototype import derived_seed
from pemn_fl.voting import global_mask, tally, update_state

log = logging.getLogger("pemn_fl.server")

HISTORY = 8  # mask versions kept for downlink deltas (a few KB each)


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


def mask_to_record(mask: P.Mask) -> ArrayRecord:
    return ArrayRecord([m.astype(np.uint8) for m in mask])


def record_to_mask(record: ArrayRecord) -> P.Mask:
    return [a.astype(bool) for a in record.to_numpy_ndarrays()]


class MaskVoting(Strategy):
    """PEMN-FL: bit-packed masks down and up, weighted score voting in between."""

    def __init__(
        self,
        *,
        sampler: Callable[[int], list[int]],
        fingerprint: str,
        layer_sizes: tuple[int, ...],
        initial_mask: P.Mask,
        keep: float,
        seed: int,
        momentum: float = 0.0,
        weighting: str = "examples",
    ) -> None:
        self.sampler = sampler
        self.fingerprint = fingerprint
        self.layer_sizes = layer_sizes
        self.keep, self.seed, self.momentum, self.weighting = keep, seed, momentum, weighting
        self.version = 0
        self.history: dict[int, P.Mask] = {0: [m.copy() for m in initial_mask]}
        self.holds: dict[int, int] = {}  # node id -> mask version it holds
        self.state: list[np.ndarray] | None = None
        self.rejected = 0  # replies rejected in the last round (error or bad payload)

    @property
    def current(self) -> P.Mask:
        return self.history[self.version]

    # -- training ------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        payloads: dict[int | None, bytes] = {}  # one encoding per reference version
        messages = []
        for node in self.sampler(server_round):
            ref = self.holds.get(node, 0)
            ref = ref if ref in self.history else None
            if ref not in payloads:
                payloads[ref] = encode_mask(
                    self.current,
                    fingerprint=self.fingerprint,
                    reference=None if ref is None else self.history[ref],
                    reference_id=ref,
                )
            content = RecordDict(
                {
                    P.CONFIG_KEY: ConfigRecord(
                        {
                            P.ROUND: server_round,
                            P.MASK_ID: self.version,
                            P.MASK: payloads[ref],
                        }
                    )
                }
            )
            messages.append(Message(content=content, dst_node_id=node, message_type="train.pemn"))
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        masks, weights, losses = [], [], []
        self.rejected = 0
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                self.rejected += 1
                log.warning("round %s: node %s failed: %s", server_round, node, reply.error.reason)
                continue
            try:
                update = reply.content[P.UPDATE_KEY][P.MASK]
                metrics = reply.content[P.METRICS_KEY]
                num_examples = float(metrics["num-examples"])
                if not isinstance(update, bytes) or not num_examples >= 0:
                    raise MaskPayloadError("reply lacks a mask payload or num-examples")
                mask = decode_mask(
                    update,
                    fingerprint=self.fingerprint,
                    layer_sizes=self.layer_sizes,
                    references={self.version: self.current},
                )
            except (MaskPayloadError, KeyError, TypeError, ValueError) as exc:
                self.rejected += 1
                log.warning("round %s: rejected reply of node %s: %s", server_round, node, exc)
                continue
            self.holds[node] = self.version
            masks.append(mask)
            weights.append(num_examples if self.weighting == "examples" else 1.0)
            losses.append(float(metrics.get("train-loss", float("nan"))))
        if not masks or sum(weights) <= 0:
            log.warning("round %s: no valid mask update; global mask unchanged", server_round)
            return None, None
        self.state = update_state(self.state, tally(masks, weights), self.momentum)
        previous = self.current
        new = global_mask(self.state, previous, self.keep, self.seed, server_round)
        self.version += 1
        self.history[self.version] = new
        self.history.pop(self.version - HISTORY, None)
        w = np.asarray(weights) / sum(weights)
        flips = sum(int((a != b).sum()) for a, b in zip(new, previous, strict=True))
        metrics = MetricRecord({"train-loss": float(np.dot(w, losses)), "global-flips": flips})
        return mask_to_record(new), metrics

    # -- evaluation is server-side (evaluate_fn), not federated ---------------------------
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return []

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return None

    def summary(self) -> None:
        log.info(
            "MaskVoting: keep=%s momentum=%s weighting=%s fingerprint=%s",
            self.keep, self.momentum, self.weighting, self.fingerprint,
        )  # fmt: skip


class SampledFedAvg(FedAvg):
    """Flower's FedAvg, training on the shared sampler's nodes (same clients as PEMN-FL)."""

    def __init__(self, sampler: RoundSampler, **kwargs: object) -> None:
        super().__init__(fraction_evaluate=0.0, **kwargs)
        self.sampler = sampler
        self.rejected = 0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return [
            Message(content=record, dst_node_id=node, message_type="train.fedavg")
            for node in self.sampler(server_round)
        ]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        # Same order every run (by partition, not by random node id or arrival), so the
        # floating-point average is reproducible.
        replies = sorted(replies, key=lambda r: self.sampler.partition_of.get(
            r.metadata.src_node_id, r.metadata.src_node_id))  # fmt: skip
        self.rejected = sum(1 for r in replies if r.has_error())
        return super().aggregate_train(server_round, replies)
