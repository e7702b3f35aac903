"""The message conventions every built-in method shares: record names, and the reply.

A training message is ``train.<method>`` with ``ConfigRecord "config"`` holding
``server-round`` (fault injection draws by it) and whatever the method sends down. A reply
carries the method's update in ``ConfigRecord "update"`` and two numbers the server needs:
``num-examples`` (it weights the client's vote or update) and ``train-loss`` (reported).

Where those two numbers travel is a byte question. By default (Flower's convention, and the
format of every committed run) in their own ``MetricRecord "metrics"``. With
``compact-replies`` they go inside the update record: in Flower 1.42 every record is a
content-addressed object that a SuperNode pushes with its own HTTP request (~1 KB of
headers, see ``pemn_fl.transport``), so a compact reply is one request less, the same
payload. FedAvg (Flower's own strategies, which demand a ``MetricRecord``) keeps the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

CONFIG, UPDATE, METRICS, SNAPSHOT = "config", "update", "metrics", "snapshot"
NUM_EXAMPLES, TRAIN_LOSS = "num-examples", "train-loss"
ROUND = "server-round"  # in every training message's config (faults draw by it)


def reply(msg: Message, update: Mapping[str, Any], *, num_examples: int, train_loss: float,
          compact: bool) -> Message:  # fmt: skip
    """A client's reply to ``msg``: its ``update`` fields and metrics (``compact``: in one
    record)."""
    metrics = {NUM_EXAMPLES: int(num_examples), TRAIN_LOSS: float(train_loss)}
    if compact:
        content = RecordDict({UPDATE: ConfigRecord({**update, **metrics})})
    else:
        content = RecordDict({UPDATE: ConfigRecord(dict(update)),
                              METRICS: MetricRecord(metrics)})  # fmt: skip
    return Message(content=content, reply_to=msg)


def metrics_of(reply: Message) -> Mapping[str, Any]:
    """A reply's metrics, wherever they travel (``KeyError`` if nowhere: the reply is
    refused like any malformed payload)."""
    content = reply.content
    return content[METRICS] if METRICS in content else content[UPDATE]
