"""Checkpoints for ``--resume``: a killed run continues from its last finished round.

A run's state lives in two places, and both are saved as each round ends:

* **server** (``<out>/checkpoint/server.pkl``, replaced atomically after every round's row is
  on disk): which method and round finished, the global arrays ``Strategy.start`` carries
  into the next round, the strategy's attributes (mask history, vote state, replicated
  weights, what each node holds), and the partition -> node map of the run that wrote it;
* **clients** (``<out>/checkpoint/clients/p<partition>/<method index>-<round>.state``): a
  node's whole ``Context.state`` (stateful scores, the global mask or weights it holds, its
  error-feedback residual, fault-injection counters), written by the ClientApp after each
  training step. A resumed node loads the newest file from before the round it is asked to
  train, so files from the round that was cut short are never used.

Every random draw in pemn-fl is seeded by (seed, round, partition), so continuing from these
gives the same rounds as a run that was never stopped. Node ids are random per run: state
keyed by node id is translated through the partitions (objects with a ``remap_nodes``
method). Static attributes rebuilt from the settings (the sampler, the test set) are not
saved. pickle is used for the server state because it is local, written and read by the
same code on one machine; never load a checkpoint from someone else (pickle runs code).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as RecordDictProto
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

SERVER_FILE = "server.pkl"
CLIENT_DIR = "clients"
KEEP_CLIENT_FILES = 2  # the newest may belong to a round that was cut short


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, from another run, unreadable)."""


@dataclass
class ServerCheckpoint:
    """Where a run stood after its last finished round."""

    method: str
    method_index: int
    round: int  # the last finished round of ``method`` (0 = only the initial evaluation)
    arrays: dict[str, Any]  # the global ArrayRecord, as numpy arrays by name
    strategy: dict[str, Any]  # the strategy's attributes, less the static ones
    node_of_partition: dict[int, int]
    settings: dict[str, object] = field(default_factory=dict)  # the run config that wrote it


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a kill mid-write leaves the previous checkpoint whole


def strategy_state(strategy: object, static: list[object]) -> dict[str, Any]:
    """The strategy's attributes, without those that are (by identity) in ``static``."""
    return {k: v for k, v in vars(strategy).items() if not any(v is s for s in static)}


def save_server(directory: Path, checkpoint: ServerCheckpoint) -> None:
    _atomic_write(directory / SERVER_FILE, pickle.dumps(checkpoint, protocol=5))


def load_server(directory: Path) -> ServerCheckpoint:
    path = directory / SERVER_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint (the run stopped before its first "
                              "round ended, or an older version wrote it); start it again")
    try:
        checkpoint = pickle.loads(path.read_bytes())  # noqa: S301 - our own local file
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
    if not isinstance(checkpoint, ServerCheckpoint):
        raise CheckpointError(f"{path}: not a pemn-fl checkpoint")
    return checkpoint


def arrays_of(record: ArrayRecord) -> dict[str, Any]:
    return {name: array.numpy() for name, array in record.items()}


def record_of(arrays: dict[str, Any]) -> ArrayRecord:
    return ArrayRecord({name: Array(a) for name, a in arrays.items()})


def remap_nodes(obj: object, new_node_of_old: dict[int, int], depth: int = 3) -> None:
    """Translate node-keyed state (objects with ``remap_nodes``) to this run's node ids."""
    if depth < 0:
        return
    if hasattr(obj, "remap_nodes") and not isinstance(obj, type):
        obj.remap_nodes(new_node_of_old)  # type: ignore[attr-defined]
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        for value in vars(obj).values():
            remap_nodes(value, new_node_of_old, depth - 1)


def restore_strategy(strategy: object, checkpoint: ServerCheckpoint,
                     node_of_partition: dict[int, int]) -> None:  # fmt: skip
    """Put the saved attributes into a freshly built strategy and translate node ids."""
    vars(strategy).update(checkpoint.strategy)
    old = checkpoint.node_of_partition
    new_node_of_old = {old[p]: node_of_partition[p] for p in old if p in node_of_partition}
    remap_nodes(strategy, new_node_of_old)


def translate_keys(table: dict[int, Any], new_node_of_old: dict[int, int]) -> dict[int, Any]:
    """``table`` with its node-id keys translated (ids of nodes no longer present dropped)."""
    return {new_node_of_old[k]: v for k, v in table.items() if k in new_node_of_old}


# -- clients ---------------------------------------------------------------------------
_CLIENT_FILE = re.compile(r"^(\d+)-(\d+)\.state$")


def _client_files(directory: Path, pid: int) -> list[tuple[tuple[int, int], Path]]:
    folder = directory / CLIENT_DIR / f"p{pid}"
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        m = _CLIENT_FILE.match(path.name)
        if m:
            found.append(((int(m.group(1)), int(m.group(2))), path))
    return sorted(found)


def save_client(directory: Path, pid: int, key: tuple[int, int], state: RecordDict) -> None:
    """Save a node's ``Context.state`` after (method index, round) ``key``."""
    data = recorddict_to_proto(state).SerializeToString()
    _atomic_write(directory / CLIENT_DIR / f"p{pid}" / f"{key[0]}-{key[1]}.state", data)
    for _, old in _client_files(directory, pid)[:-KEEP_CLIENT_FILES]:
        old.unlink(missing_ok=True)


def load_client(directory: Path, pid: int, before: tuple[int, int]) -> RecordDict | None:
    """The newest saved state of partition ``pid`` from before (method index, round)."""
    usable = [path for key, path in _client_files(directory, pid) if key < before]
    if not usable:
        return None
    proto = RecordDictProto()
    proto.ParseFromString(usable[-1].read_bytes())
    return recorddict_from_proto(proto)


class ResumedStrategy(Strategy):
    """``strategy`` continued after round ``offset``: ``Strategy.start`` counts its rounds
    from 1 again, the wrapped strategy sees the run's true round numbers (its seeds, its
    sampler and its mask versions depend on them)."""

    def __init__(self, strategy: Strategy, offset: int) -> None:
        self.inner, self.offset = strategy, offset

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:  # fmt: skip
        return self.inner.configure_train(server_round + self.offset, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:  # fmt: skip
        return self.inner.aggregate_train(server_round + self.offset, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:  # fmt: skip
        return self.inner.configure_evaluate(server_round + self.offset, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:  # fmt: skip
        return self.inner.aggregate_evaluate(server_round + self.offset, replies)

    def summary(self) -> None:
        self.inner.summary()


def finished_rows(csv_path: Path, methods: list[str],
                  saved: ServerCheckpoint) -> list[dict[str, object]]:  # fmt: skip
    """The rows of ``rounds.csv`` the checkpoint covers (later ones belong to a round that
    was cut short or is re-run), in file order."""
    import pandas as pd

    if not csv_path.is_file():
        raise CheckpointError(f"{csv_path}: missing; it holds the finished rounds to keep")
    frame = pd.read_csv(csv_path)
    index = frame["method"].map({m: i for i, m in enumerate(methods)})
    done = (index < saved.method_index) | (
        (index == saved.method_index) & (frame["round"] <= saved.round)
    )
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        for row in frame[done].to_dict("records")
    ]
