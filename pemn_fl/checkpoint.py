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
from typing import TYPE_CHECKING, Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as RecordDictProto
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from pemn_fl import framing

if TYPE_CHECKING:
    from pemn_fl.config import RunSettings

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
    # Sealed with a CRC (``framing.seal``): a flipped bit inside an array would unpickle
    # without complaint and a resumed run would go on from silently altered state.
    _atomic_write(directory / SERVER_FILE, framing.seal(pickle.dumps(checkpoint, protocol=5)))


def load_server(directory: Path) -> ServerCheckpoint:
    path = directory / SERVER_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint (the run stopped before its first "
                              "round ended, or an older version wrote it); start it again")
    data = path.read_bytes()
    if not framing.sealed(memoryview(data)):
        raise CheckpointError(f"{path}: damaged checkpoint (CRC mismatch, or written before "
                              "checkpoints were sealed); start the run again")  # fmt: skip
    try:
        checkpoint = pickle.loads(data[: -framing.CRC_BYTES])  # noqa: S301 - our own file
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
    data = framing.seal(recorddict_to_proto(state).SerializeToString())  # as save_server
    _atomic_write(directory / CLIENT_DIR / f"p{pid}" / f"{key[0]}-{key[1]}.state", data)
    for _, old in _client_files(directory, pid)[:-KEEP_CLIENT_FILES]:
        old.unlink(missing_ok=True)


def _read_client_file(path: Path) -> RecordDict:
    proto = RecordDictProto()
    try:
        data = path.read_bytes()
        if not framing.sealed(memoryview(data)):  # an empty or flipped file parses fine
            raise ValueError("CRC mismatch")
        proto.ParseFromString(data[: -framing.CRC_BYTES])
        return recorddict_from_proto(proto)
    except Exception as exc:  # noqa: BLE001 - any parse failure: the file is damaged
        raise CheckpointError(f"{path}: damaged client checkpoint ({type(exc).__name__}); "
                              "resuming would start that client over and the run would "
                              "drift from an uninterrupted one: start the run again") from None


def load_client(directory: Path, pid: int, before: tuple[int, int]) -> RecordDict | None:
    """The newest saved state of partition ``pid`` from before (method index, round).

    A damaged file is a ``CheckpointError``, never a silent fresh start: a client that
    started over would train on other state than the run it continues."""
    usable = [path for key, path in _client_files(directory, pid) if key < before]
    return _read_client_file(usable[-1]) if usable else None


def check_clients(directory: Path) -> None:
    """Every client state file of a checkpoint parses, checked before a resume starts: a
    damaged one is one clear error in the runner, not a failure inside a worker."""
    folder = directory / CLIENT_DIR
    for part in sorted(folder.iterdir()) if folder.is_dir() else []:
        pid = part.name[1:]
        if part.is_dir() and pid.isdigit():
            for _, path in _client_files(directory, int(pid)):
                _read_client_file(path)


# How a sampled client's round ended (``clients.csv``), and whether its state was saved: the
# ClientApp saves after the training step, so ``replied`` and ``late`` (a simulated late
# reply: it trained) always have a file; ``error`` (it raised) and ``none`` (no reply) may not.
SAVED_STATUSES = ("replied", "late")


def finished_keys(saved: ServerCheckpoint, rounds: int) -> list[tuple[int, int]]:
    """The (method index, round) of every training round the checkpoint covers, in order."""
    return [(i, r) for i in range(saved.method_index + 1)
            for r in range(1, (rounds if i < saved.method_index else saved.round) + 1)]


def check_client_states(directory: Path, saved: ServerCheckpoint, names: list[str],
                        settings: RunSettings, clients_csv: Path,
                        partitions: Iterable[int] | None = None) -> None:  # fmt: skip
    """Every node's newest saved state is the one from the last round it trained in, up to
    the round the checkpoint covers; otherwise a ``CheckpointError`` naming the partition.

    A resumed node takes the newest file from before the round it is asked to train
    (``load_client``). If that file is missing (deleted, or the node's whole folder), the
    node silently starts over from an older state or from nothing, fails every later round
    ("cannot catch up") and the run drifts from an uninterrupted one. Which partitions
    trained in which round is a pure function of the seed, the sampled fraction and the
    partitions (``RoundSampler``), and ``clients.csv`` says how each sampled client's round
    ended (``SAVED_STATUSES`` always saved); the two must agree. A partition never sampled,
    or sampled only in rounds it failed, legitimately has no file. ``names``: the method
    names in ``methods`` order; ``settings``: the run's (its sampler, fraction, seed and
    rounds); ``partitions``: those whose files are in ``directory`` (a deployment's node
    keeps only its own; default every partition of the run).
    """
    rounds = settings.num_server_rounds
    keys = finished_keys(saved, rounds)
    if not keys:
        return  # nothing trained yet: no client state to have
    status = _client_statuses(clients_csv)
    sampled = _seeded_samples(saved, settings)
    for i, r in keys:
        listed = sorted(p for (m, rr, p) in status if m == names[i] and rr == r)
        if listed != sampled[r]:
            raise CheckpointError(f"{clients_csv}: round {r} of {names[i]} lists partitions "
                                  f"{listed} but the run's seeded sample is {sampled[r]} "
                                  "(a damaged file, or one of another run); start the run "
                                  "again")  # fmt: skip
    position = (saved.method_index, saved.round)
    for pid in sorted(saved.node_of_partition if partitions is None else partitions):
        trained = [(i, r) for i, r in keys if pid in sampled[r]]
        certain = [k for k in trained if status[(names[k[0]], k[1], pid)] in SAVED_STATUSES]
        files = [(key, path) for key, path in _client_files(directory, pid) if key <= position]
        newest, path = files[-1] if files else (None, None)
        _check_newest(directory, pid, names, newest, path, trained, certain)


def _client_statuses(clients_csv: Path) -> dict[tuple[str, int, int], str]:
    """How each sampled client's round ended, by (method, round, partition), from
    ``clients.csv`` (a missing or damaged file is a ``CheckpointError``)."""
    from pemn_fl import clientlog

    if not clients_csv.is_file():
        raise CheckpointError(f"{clients_csv}: missing; it says which sampled clients trained "
                              "in the finished rounds (and holds their rows); start the run "
                              "again")  # fmt: skip
    try:
        frame = clientlog.read(clients_csv, torn_ok=True)
    except clientlog.ClientsFileError as exc:
        raise CheckpointError(f"{exc}; start the run again") from None
    return {(str(m), int(r), int(p)): str(s) for m, r, p, s in
            zip(frame["method"], frame["round"], frame["partition"], frame["status"],
                strict=True)}  # fmt: skip


def _seeded_samples(saved: ServerCheckpoint, settings: RunSettings) -> dict[int, list[int]]:
    """The partitions the run's own sampler picks in each round, built as the ServerApp builds
    it (a sticky one draws its rounds in order, so they are asked in order)."""
    from pemn_fl.sampling import RoundSampler

    sampler = RoundSampler(saved.node_of_partition, settings.fraction, settings.seed,
                           settings.sampler, settings.sticky_group, settings.sticky_change)
    return {r: sorted(sampler.partition_of[n] for n in sampler(r))
            for r in range(1, settings.num_server_rounds + 1)}  # fmt: skip


def _check_newest(directory: Path, pid: int, names: list[str], newest: tuple[int, int] | None,
                  path: Path | None, trained: list[tuple[int, int]],
                  certain: list[tuple[int, int]]) -> None:  # fmt: skip
    """Partition ``pid``'s newest saved state (its key and ``path``, or None) is from the last
    round it ``trained`` in, and no state ``certain`` to have been saved is missing."""
    if newest is not None and newest[1] == 0:  # a plug-in whose messages lack the round
        raise CheckpointError(
            f"{path}: partition {pid}'s state is filed under round 0, because "
            f"{_name(names, newest)}'s training messages carry no server-round; a resume "
            "cannot give this node its own state back (docs/methods.md, contract 1): "
            "start the run again"
        )
    if newest is not None and newest not in trained:
        raise CheckpointError(
            f"{path}: a state of partition {pid} after round {newest[1]} of "
            f"{_name(names, newest)}, a round it did not train in (a file of another "
            "run?); resuming would hand that node foreign state: start the run again"
        )
    if certain and (newest is None or newest < certain[-1]):
        last = certain[-1]
        held = ("no saved state at all" if newest is None else
                f"only its state after round {newest[1]} of {_name(names, newest)}")
        raise CheckpointError(
            f"partition {pid}: last trained in round {last[1]} of {_name(names, last)} "
            f"but {directory / CLIENT_DIR / f'p{pid}'} holds {held} (the newer file is "
            "missing); resumed, it would train from older state and the run would drift "
            "from an uninterrupted one: start the run again"
        )  # fmt: skip


def _name(names: list[str], key: tuple[int, int]) -> str:
    return names[key[0]] if 0 <= key[0] < len(names) else f"method #{key[0]}"


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


def finished_rows(csv_path: Path, methods: list[str], saved: ServerCheckpoint,
                  rounds: int, columns: list[str]) -> list[dict[str, object]]:  # fmt: skip
    """The rows of ``rounds.csv`` the checkpoint covers, in file order, checked.

    Later rows belong to a round that was cut short or is re-run and are dropped, and so is
    a torn last line (a kill mid-write). Every covered row must be there, whole, with the
    header ``columns`` and a number in every numeric field (integers stay integers);
    anything else is a ``CheckpointError`` naming the line, never a guess.
    """
    import csv

    if not csv_path.is_file():
        raise CheckpointError(f"{csv_path}: missing; it holds the finished rounds to keep")
    try:
        lines = csv_path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{csv_path}: unreadable ({type(exc).__name__})") from None
    table = list(csv.reader(lines))
    if not table or table[0] != columns:
        raise CheckpointError(f"{csv_path}: not the rounds.csv of this run (its header is not "
                              "this version's columns); start the run again")  # fmt: skip
    index = {m: i for i, m in enumerate(methods)}
    rows, body = [], table[1:]
    for number, fields in enumerate(body, start=2):
        try:
            row = _parse_row(fields, columns)
        except ValueError as exc:
            if number == len(body) + 1:
                break  # a torn last line: that round is re-run anyway
            raise CheckpointError(f"{csv_path}, line {number}: {exc}; start the run "
                                  "again") from None  # fmt: skip
        i = index.get(str(row["method"]))
        if i is None:
            raise CheckpointError(f"{csv_path}, line {number}: method {row['method']!r} is "
                                  "not one of this run's")  # fmt: skip
        if i < saved.method_index or (i == saved.method_index and row["round"] <= saved.round):
            problem = _value_problem(row)
            if problem:
                raise CheckpointError(f"{csv_path}, line {number}: {problem}; the resumed "
                                      "run would carry it into its summary: start the run "
                                      "again")  # fmt: skip
            rows.append({**row, "_line": number})
    expected = [(m, r) for m, i in index.items() if i <= saved.method_index
                for r in range(0, (rounds if i < saved.method_index else saved.round) + 1)]
    found = [(row["method"], row["round"]) for row in rows]
    if sorted(found) != sorted(expected):
        missing = sorted(set(expected) - set(found))[:3]
        raise CheckpointError(f"{csv_path}: does not hold exactly the finished rounds the "
                              f"checkpoint covers (missing or repeated, e.g. {missing}); "
                              "start the run again")  # fmt: skip
    for row, want in zip(rows, expected, strict=True):  # each method's rounds 0, 1, 2, ...
        if (row["method"], row["round"]) != want:
            raise CheckpointError(f"{csv_path}, line {row['_line']}: round {row['round']} of "
                                  f"{row['method']} where round {want[1]} of {want[0]} "
                                  "belongs (rounds out of order); start the run again")
    return [{k: v for k, v in row.items() if k != "_line"} for row in rows]


def _value_problem(row: dict[str, object]) -> str | None:
    """What is impossible in a row a run wrote: an accuracy outside [0, 1] (``nan``
    included: a run always evaluates) or a negative round or count of bytes or clients.
    (A loss may be ``inf`` or ``nan``: a diverged run's is, and is recorded as such.)"""
    accuracy = row.get("accuracy")
    if isinstance(accuracy, float) and not 0.0 <= accuracy <= 1.0:
        return f"accuracy={accuracy!r} is not in [0, 1]"
    for name in INTEGER_COLUMNS:
        value = row.get(name)
        if isinstance(value, int) and value < 0:
            return f"{name}={value} is negative"
    return None


# Columns whose values are counts (integers); every other column but ``method`` is a float.
INTEGER_COLUMNS = frozenset({
    "round", "clients_sampled", "clients_replied", "clients_rejected", "clients_failed",
    "uplink_payload_bytes", "downlink_payload_bytes", "uplink_bytes", "downlink_bytes",
    "uplink_wire_bytes", "downlink_wire_bytes", "cumulative_bytes", "server_flops",
    "clients_counted",
})  # fmt: skip


def _parse_row(fields: list[str], columns: list[str]) -> dict[str, object]:
    if len(fields) != len(columns):
        raise ValueError(f"{len(fields)} fields where the header has {len(columns)}")
    row: dict[str, object] = {}
    for name, text in zip(columns, fields, strict=True):
        if name == "method":
            row[name] = text
        elif name in INTEGER_COLUMNS:
            if not text.strip().lstrip("-").isdigit():
                raise ValueError(f"{name}={text!r} is not an integer")
            row[name] = int(text)
        else:  # empty = NaN (bits/param of a round without messages)
            try:
                row[name] = float(text) if text else float("nan")
            except ValueError:
                raise ValueError(f"{name}={text!r} is not a number") from None
    return row
