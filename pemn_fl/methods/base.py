"""The method interface: what one communication-efficient FL method provides to the meter.

A method is one module (``pemn_fl/methods/<name>.py``) exporting ``METHOD``, a ``Method``:
its client step (what a node does with a ``train.<name>`` message), a factory for its
server ``Strategy`` (a ``flwr.serverapp.strategy.Strategy``, driven by ``Strategy.start``
like any built-in one), how many parameters its payload describes (the denominator of
bits/param), its label for tables and plots, its options, its place in the tables and its
tuning grid. ``methods/__init__.py`` finds the modules itself; the runner, the Flower apps,
config validation and the report read that registry and never name a method (the report
names one: the baseline, ``pemn_fl.report.BASELINE``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from torch import nn

from pemn_fl.codec import MaskPayloadError
from pemn_fl.config import RunSettings
from pemn_fl.options import Option, Value
from pemn_fl.sampling import RoundSampler

log = logging.getLogger("pemn_fl.server")
T = TypeVar("T")

ClientStep = Callable[[Message, Context, RunSettings], Message]


@dataclass
class ServerSide:
    """What the ServerApp needs to run and evaluate one method.

    ``strategy.rejected`` must hold the number of replies rejected in the last round
    (error replies and bad payloads), so the round log can report it. ``install`` puts the
    strategy's global ``ArrayRecord`` into ``model`` for server-side evaluation.
    """

    strategy: Strategy
    model: nn.Module
    initial: ArrayRecord
    install: Callable[[ArrayRecord], object]


@dataclass(frozen=True)
class Method:
    """One method: a registry entry. ``name`` must be a Python identifier (Flower's rule
    for the action in a message type: the message type is ``train.<name>``).

    Convention: a training message carries ``ConfigRecord "config"`` with ``"server-round"``
    (fault injection seeds its draws by it)."""

    name: str
    label: str
    client_step: ClientStep
    server: Callable[[RunSettings, RoundSampler], ServerSide]
    num_params: Callable[[RunSettings], int]
    marker: str = "-^"
    description: str = ""
    # The final global arrays in their most compact equivalent form for ``model.pemn``
    # (``install`` must evaluate both identically); ``None``: the arrays themselves.
    compact: Callable[[RunSettings, ArrayRecord], ArrayRecord] | None = None
    # What a Byzantine client of this method sends (``--byzantine``, ``faults.is_byzantine``),
    # in words; empty: the method defines no attack and refuses ``--byzantine``.
    attack: str = ""
    # The hyperparameters it reads (``settings[OPTION]``), a family's shared ones included:
    # its flags, run-config keys, checks and docs all come from here (``pemn_fl.options``).
    options: tuple[Option, ...] = ()
    # Its place in tables, plots and ``--methods all`` (smaller first; ties by name): the
    # registry finds the module itself, so the order is said here, not in a list.
    order: int = 1000
    # The configurations the accuracy study tunes it over (``bench.accuracy_frontier``), each
    # a few of its options' values; the first is the one a partial sweep runs first. Empty:
    # the method is not part of the study.
    grid: tuple[Mapping[str, Value], ...] = ()

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"method name {self.name!r} must be a Python identifier")

    @property
    def message_type(self) -> str:
        return f"train.{self.name}"


class ServerEvaluation:
    """Mixin for strategies evaluated on the server only (``evaluate_fn``): no federated
    evaluation round, so no evaluation traffic is sent or counted."""

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return []

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return None


def partition_of(context: Context) -> tuple[int, int]:
    """This node's (partition id, number of partitions) from its node config."""
    return int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])


def num_examples_of(metrics: MetricRecord, limit: int) -> float:
    """A reply's ``num-examples``, validated: an integer in ``[0, limit]``.

    It weights the client's vote or update, so an absurd value (inf, NaN, 2**63, more
    examples than the whole training set) would let one reply dominate or overflow the
    tally; the reply is rejected instead (``ValueError``, caught with the payload errors).
    """
    value = float(metrics["num-examples"])
    if not (value == value and 0 <= value <= limit and value == int(value)):
        raise ValueError(f"num-examples {value!r} is not an integer in [0, {limit}]")
    return value


def node_label(sampler: object, node: int) -> str:
    """How logs name a node: its partition when ``sampler`` knows it (``RoundSampler.label``)."""
    label = getattr(sampler, "label", None)
    return label(node) if label is not None else f"node {node}"


def screen(
    replies: Iterable[Message], sampler: RoundSampler, server_round: int,
    check: Callable[[Message], T],
) -> tuple[list[tuple[int, T]], int]:  # fmt: skip
    """Replies in partition order (reproducible sums), each parsed by ``check``.

    An error reply (a crashed client, a dead node) or one whose ``check`` raises a payload
    error (``MaskPayloadError``, ``KeyError``, ``TypeError``, ``ValueError``) is logged and
    counted, never used: one bad reply never stops the round. Returns ``([(node, parsed)],
    number refused)``.
    """
    kept, refused = [], 0
    for reply in sorted(replies, key=lambda r: sampler.order_key(r.metadata.src_node_id)):
        node = reply.metadata.src_node_id
        if reply.has_error():
            refused += 1
            log.warning("round %s: %s failed: %s", server_round,
                        node_label(sampler, node), reply.error.reason)  # fmt: skip
            continue
        try:
            kept.append((node, check(reply)))
        except (MaskPayloadError, KeyError, TypeError, ValueError) as exc:
            refused += 1
            log.warning("round %s: rejected reply of %s: %s", server_round,
                        node_label(sampler, node), exc)  # fmt: skip
    return kept, refused
